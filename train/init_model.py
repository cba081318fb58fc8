"""Write the starting checkpoint for training a model from scratch (a preset's shapes, fresh weights).

    python -m train.init_model --preset synthworld --vae runs/vae --out runs/base.safetensors
    python -m train.init_model --preset synthworld --vae runs/vae --out runs/aa1.safetensors --variant aa1

Training normally starts from SD1.5 + AnimateDiff or Moore-AnimateAnyone weights (`model.base`). A
small model trained on a world of its own (SynthWorld) has no such weights: this writes a pack
checkpoint of the preset's shapes with every network at its own initialisation (diffusers',
transformers' and the AA2 modules' — zero gates stay zero; motion modules start as the identity, as
AnimateDiff's do) and the trained VAE baked in, which
`python -m train.train --set model.base=...` then trains like any other base.

Variants are the paper's ablations (§4.4) as architectures, so each trains through the same code:
  aa2             every part (the default)
  aa1             Animate Anyone 1: no environment input, no object guider, skeleton-only pose
                  guider, reference attention in every block (Table 3's baseline)
  no_depth        skeleton-only pose modulation (Table 4, "w/o depth-wise pose modulation")
  no_objects      no object guider / spatial blending (objects are then only in the environment)
  no_blending     the object guider's features merged into the noise latents (added to conv_in's
                  output) instead of spatially blended (Table 4, "w/o spatial blending")
The environment formulation (Figure 7) is a data setting, not an architecture:
`--set data.environment_mask=precise|box` in train.train.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from aa2.config import PRESETS, AA2Config
from aa2.errors import AA2Error, AA2InputError

VARIANTS = ("aa2", "aa1", "no_depth", "no_objects", "no_blending")


def variant_config(config: AA2Config, variant: str) -> AA2Config:
    """`config` with the parts of an ablation `variant` (see the module docstring) taken away."""
    if variant == "aa2":
        return config
    if variant == "aa1":
        return config.replace(use_environment=False, use_object_guider=False, fusion="full",
                              pose=dataclasses.replace(config.pose, use_depth=False))
    if variant == "no_depth":
        return config.replace(pose=dataclasses.replace(config.pose, use_depth=False))
    if variant == "no_objects":
        return config.replace(use_object_guider=False)
    if variant == "no_blending":
        return config.replace(object_injection="conv_in")
    raise AA2InputError(f"--variant is one of {', '.join(VARIANTS)}; got {variant!r}")


def zero_motion_outputs(model) -> int:
    """Zero every motion module's output projection; returns how many.

    AnimateDiff starts its temporal layers this way ("zero_initialize"): a fresh motion module then
    passes features through unchanged, so the image stage trains exactly the network the motion
    stage starts from, and a model with only its image stage trained still renders clips frame by
    frame. diffusers' `MotionAdapter` leaves these layers at a random initialisation.
    """
    import torch

    count = 0
    for name, module in model.named_modules():
        if "motion_modules" in name and name.endswith("proj_out") and isinstance(module, torch.nn.Linear):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
            count += 1
    return count


def read_vae(path: Path):
    """The VAE of a train.vae folder, a VAE file, or a pack checkpoint (whose stored shape keeps its latent scale)."""
    from aa2.weights.checkpoint import is_aa2_checkpoint, read_checkpoint
    from aa2.weights.diffusers_folder import read_vae_folder
    from aa2.weights.ldm import read_vae_file

    if path.is_dir():
        return read_vae_folder(path)
    if is_aa2_checkpoint(path):
        config, parts = read_checkpoint(path)
        return parts.vae, config.vae
    return read_vae_file(path)


def reference_from_denoising(denoising: dict, reference: dict) -> dict:
    """The ReferenceNet starting as a copy of the DenoisingNet's spatial UNet, as Animate Anyone starts
    both from the same SD1.5 weights: the reference tokens the DenoisingNet's self-attention reads are
    then in its own feature space from the first step. Started apart, the two nets' features are
    unrelated, and a small model learns to draw the character without looking at the reference.
    `conv_in` takes the latent channels only (the DenoisingNet's also reads the environment and mask)."""
    copied = {}
    for key, tensor in reference.items():
        source = denoising[key]
        if source.shape != tensor.shape:  # conv_in: 4 latent channels of the DenoisingNet's wider input
            source = source[:, : tensor.shape[1]]
        copied[key] = source.clone()
    return copied


def init_model(preset: str, out: str | Path, *, vae: str | Path | None = None, variant: str = "aa2",
               seed: int = 0, reference_init: str = "copy") -> Path:
    """Write the fresh checkpoint; returns its path. Refuses to overwrite an existing file."""
    from aa2.models.aa2_model import assemble
    from aa2.weights.checkpoint import save_checkpoint
    from aa2.weights.tiny import random_parts

    out = Path(out)
    if out.exists():
        raise AA2InputError(f"{out} exists: choose a new --out (a checkpoint is never overwritten)")
    if preset not in PRESETS:
        raise AA2InputError(f"--preset is one of {', '.join(PRESETS)}; got {preset!r}")
    config = variant_config(PRESETS[preset](), variant)
    vae_state = None
    if vae is not None:
        path = Path(vae)
        if not path.exists():
            raise AA2InputError(f"--vae {path} does not exist (train one with python -m train.vae)")
        vae_state, shape = read_vae(path)
        config = config.replace(vae=shape)
    parts = random_parts(config, seed, perturb=False)
    if reference_init == "copy":
        parts.reference_unet = reference_from_denoising(parts.denoising_unet, parts.reference_unet)
    if vae_state is not None:  # float32 like the rest: a half-precision VAE (from an fp16 pack checkpoint)
        # would make every training step encode in float16, which CPUs run about ten times slower
        parts.vae = {name: tensor.float() if tensor.is_floating_point() else tensor
                     for name, tensor in vae_state.items()}
        parts.sources["vae"] = str(vae)
    parts.sources = {name: (source if name == "vae" and vae else f"fresh initialisation (seed {seed})")
                     for name, source in parts.sources.items()}
    model = assemble(config, parts)
    zero_motion_outputs(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(model, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.init_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="synthworld", choices=sorted(PRESETS), help="network shapes (aa2.config)")
    parser.add_argument("--vae", help="a trained VAE to bake in: python -m train.vae's folder, a VAE file, or a pack checkpoint "
                             "whose VAE to take")
    parser.add_argument("--out", required=True, help="new .safetensors file")
    parser.add_argument("--variant", default="aa2", choices=VARIANTS, help="ablation variant (module docstring)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-init", default="copy", choices=("copy", "fresh"),
                        help="copy: the ReferenceNet starts as the DenoisingNet's copy, as in the paper (default); "
                        "fresh: its own initialisation (the shipped SynthWorld weights of 2026-12-05 started so)")
    args = parser.parse_args(argv)
    try:
        path = init_model(args.preset, args.out, vae=args.vae, variant=args.variant, seed=args.seed,
                          reference_init=args.reference_init)
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
