"""Record Moore-AnimateAnyone's own forward pass as a golden fixture (a maintainer tool; CI never runs it).

The fixture lets `tests/test_moore_parity.py` prove, without Moore's code, that a Moore-AnimateAnyone
folder (`denoising_unet.pth`, `reference_unet.pth`, `pose_guider.pth`, `motion_module.pth`) loaded by
`aa2.weights.sources.load_model` computes what Moore-AnimateAnyone computes on the same inputs.

Run it from the repository root with a checkout of Moore-AnimateAnyone (commit a914ef3 was used):

    git clone https://github.com/MooreThreads/Moore-AnimateAnyone /path/to/Moore-AnimateAnyone
    .venv/bin/python -m tools.moore_golden /path/to/Moore-AnimateAnyone [--out tests/fixtures/moore_golden]

What it does:

1. Writes the tiny weights with `make_tiny_weights` and loads their Moore folder *strictly* into Moore's
   own classes (`UNet2DConditionModel` for the ReferenceNet, `UNet3DConditionModel` built with the
   checkout's `configs/inference/inference_v2.yaml`, `PoseGuider`): our writer emits Moore's format.
2. Freezes that folder's key names and shapes in `manifest.json`, and fills them with `golden_weights`,
   values made from integers only (exact on every CPU, unlike `randn`), so CI can rebuild the four
   files (25 MB at the tiny widths, too large to commit) bit for bit; a SHA-256 digest guards that.
3. Runs Moore's ReferenceNet writer and DenoisingNet reader (`ReferenceAttentionControl`,
   `fusion_blocks="full"`) exactly as `Pose2VideoPipeline.__call__` does for one denoising call:
   pose guider on 0..1 pose images, ReferenceNet at timestep 0 with the CLIP embedding as context,
   pose features added after `conv_in`. Once without guidance (batch 1), once with guidance
   (batch `[uncond, cond]`, zero CLIP context for uncond; their reader gives the uncond half plain
   self-attention). Moore's pipeline casts the reference bank to float16 (`update(writer)`'s default);
   in its shipped float16 setup that cast changes nothing, so the bank is kept in the run's dtype here.
4. Computes in float64 (weights and inputs are float32 values, upcast exactly), so the golden carries
   no float32 rounding of one particular CPU and the test can compare at 1e-9.

Moore's code was written for diffusers 0.24. A few names it imports have since moved; `_alias_moved_names`
adds them back under the old names (aliases only: no function or class is changed), in this process only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")
WEIGHT_SEED = 20240529  # the Moore commit's date: any fixed number
INPUT_SEED = 7
FRAMES, LATENT_SIZE, TIMESTEP = 4, 8, 501
StateDict = dict[str, torch.Tensor]


# ------------------------------------------------------------------ weights (also used by the test)


def weight_manifest(folder: Path) -> dict[str, dict[str, list[int]]]:
    """`{file: {key: shape}}` of a Moore folder, keys sorted."""
    manifest = {}
    for name in FILES:
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        manifest[name] = {key: list(state[key].shape) for key in sorted(state)}
    return manifest


def golden_weights(manifest: dict[str, dict[str, list[int]]], seed: int = WEIGHT_SEED,
                   files: tuple[str, ...] = FILES) -> dict[str, StateDict]:
    """Deterministic float32 tensors for every key of `manifest`, identical on every machine.

    Each value is `k / 128 * 2**e` with an integer `k` in [-128, 128) drawn by `torch.randint`
    (the Mersenne Twister, no transcendental functions) and a power-of-two scale, so every float is
    exact. Matrices get a scale near `sqrt(3 / fan_in)` (unit-variance activations), norm scales
    `1 + small`, biases small. AnimateDiff keeps one positional table per attention, two per block,
    equal: those are random too (a loader that recomputed them would fail), shared within a block.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape: list[int], exponent: int) -> torch.Tensor:
        k = torch.randint(-128, 128, shape, generator=generator, dtype=torch.int64)
        return k.to(torch.float32) * 2.0 ** (exponent - 7)

    weights: dict[str, StateDict] = {}
    for name in files:
        state: StateDict = {}
        tables: dict[str, torch.Tensor] = {}
        for key, shape in manifest[name].items():
            if key.endswith(".pos_encoder.pe"):
                block = key.split(".attention_blocks.")[0]
                if block not in tables:
                    tables[block] = uniform(shape, 0)
                state[key] = tables[block].clone()
            elif len(shape) >= 2:
                fan_in = math.prod(shape[1:])
                state[key] = uniform(shape, round(math.log2(math.sqrt(3.0 / fan_in))))
            elif key.endswith(".weight"):  # the only 1-D weights are norm scales
                state[key] = 1.0 + uniform(shape, -3)
            else:
                state[key] = uniform(shape, -3)
        weights[name] = state
    return weights


def weights_digest(weights: dict[str, StateDict], files: tuple[str, ...] = FILES) -> str:
    """SHA-256 over file names, keys, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name in files:
        for key in sorted(weights[name]):
            tensor = weights[name][key].contiguous()
            digest.update(f"{name}:{key}:{list(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def write_folder(folder: Path, weights: dict[str, StateDict]) -> Path:
    """The four files as Moore-AnimateAnyone saves them: `torch.save` of a plain `{key: tensor}` dict."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        torch.save(weights[name], folder / name)
    return folder


# ------------------------------------------------------------------ Moore's side


def _alias_moved_names() -> list[str]:
    """Old diffusers (0.24) import paths that Moore's `src/models` uses, mapped to where they live now."""
    import diffusers.models.attention as attention
    import diffusers.models.embeddings as embeddings
    import diffusers.models.normalization as normalization

    aliases = []
    if not hasattr(embeddings, "PositionNet"):
        embeddings.PositionNet = embeddings.GLIGENTextBoundingboxProjection
        aliases.append("diffusers.models.embeddings.PositionNet = GLIGENTextBoundingboxProjection")
    if not hasattr(embeddings, "CaptionProjection"):
        embeddings.CaptionProjection = embeddings.PixArtAlphaTextProjection
        aliases.append("diffusers.models.embeddings.CaptionProjection = PixArtAlphaTextProjection")
    if not hasattr(attention, "AdaLayerNorm"):
        attention.AdaLayerNorm = normalization.AdaLayerNorm
        aliases.append("diffusers.models.attention.AdaLayerNorm = normalization.AdaLayerNorm")
    if "diffusers.models.dual_transformer_2d" not in sys.modules:
        try:
            import diffusers.models.dual_transformer_2d  # noqa: F401  (old diffusers)
        except ImportError:
            import diffusers.models.transformers.dual_transformer_2d as dual

            sys.modules["diffusers.models.dual_transformer_2d"] = dual
            aliases.append("diffusers.models.dual_transformer_2d = diffusers.models.transformers.dual_transformer_2d")
    return aliases


def _import_moore(checkout: Path):
    if not (checkout / "src" / "models" / "mutual_self_attention.py").is_file():
        sys.exit(f"{checkout} is not a Moore-AnimateAnyone checkout (no src/models/mutual_self_attention.py)")
    aliases = _alias_moved_names()
    sys.path.insert(0, str(checkout))  # their code imports itself as `src.models...`
    from src.models.mutual_self_attention import ReferenceAttentionControl
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel

    return UNet2DConditionModel, UNet3DConditionModel, PoseGuider, ReferenceAttentionControl, aliases


def _load(module: torch.nn.Module, state: StateDict, what: str) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        sys.exit(f"{what}: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def moore_denoising_unet(unet_3d, unet_config: dict, checkout: Path):
    """Moore's `UNet3DConditionModel` for a 2D UNet config, as its `from_pretrained_2d` builds it from
    SD1.5's, with the motion-module options of its inference config."""
    import yaml

    inference = yaml.safe_load((checkout / "configs" / "inference" / "inference_v2.yaml").read_text())
    return unet_3d(
        **{**unet_config,
           "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
           "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
           "mid_block_type": "UNetMidBlock3DCrossAttn"},
        **inference["unet_additional_kwargs"],
    )


def build_moore_models(moore, checkout: Path, weights: dict[str, StateDict]):
    """Moore's three networks at the tiny widths, every key loaded (their scripts load with strict=False)."""
    from aa2.config import tiny

    unet_2d, unet_3d, pose_guider_class, _, _ = moore
    config = tiny()
    unet_config = config.unet.diffusers_config()
    reference_unet = unet_2d(**unet_config)
    denoising_unet = moore_denoising_unet(unet_3d, unet_config, checkout)
    # scripts/pose2vid.py builds PoseGuider(320, block_out_channels=(16, 32, 96, 256)); tiny widths here
    pose_guider = pose_guider_class(unet_config["block_out_channels"][0],
                                    block_out_channels=config.pose.block_out_channels)
    _load(reference_unet, weights["reference_unet.pth"], "reference_unet.pth")
    _load(denoising_unet, {**weights["denoising_unet.pth"], **weights["motion_module.pth"]},
          "denoising_unet.pth + motion_module.pth")
    _load(pose_guider, weights["pose_guider.pth"], "pose_guider.pth")
    return reference_unet.eval(), denoising_unet.eval(), pose_guider.eval()


def golden_inputs(seed: int = INPUT_SEED) -> dict[str, torch.Tensor]:
    """One 4-frame clip at 64x64 (8x8 latents), as float32, stored with the outputs."""
    g = torch.Generator().manual_seed(seed)
    return {
        "noise": torch.randn(1, 4, FRAMES, LATENT_SIZE, LATENT_SIZE, generator=g),
        "reference_latents": torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, generator=g),
        "clip_embeds": torch.randn(1, 1, 32, generator=g),  # image_embeds.unsqueeze(1), the tiny CLIP width
        "pose_images": torch.rand(1, 3, FRAMES, LATENT_SIZE * 8, LATENT_SIZE * 8, generator=g),  # 0..1
        "timestep": torch.tensor([TIMESTEP]),
    }


def run_moore(moore, models, inputs: dict[str, torch.Tensor], guidance: bool, dtype: torch.dtype) -> dict:
    """One denoising call of `Pose2VideoPipeline.__call__` (its step i == 0, one context window)."""
    control = moore[3]
    reference_unet, denoising_unet, pose_guider = models
    x = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    t = x["timestep"][0]  # the pipeline's `t`: a 0-d int64 from scheduler.timesteps
    context = x["clip_embeds"]
    repeat = 2 if guidance else 1
    if guidance:
        context = torch.cat([torch.zeros_like(context), context])
    writer = control(reference_unet, do_classifier_free_guidance=guidance, mode="write", batch_size=1,
                     fusion_blocks="full")
    reader = control(denoising_unet, do_classifier_free_guidance=guidance, mode="read", batch_size=1,
                     fusion_blocks="full")
    with torch.no_grad():
        pose_features = pose_guider(x["pose_images"])
        reference_unet(x["reference_latents"].repeat(repeat, 1, 1, 1), torch.zeros_like(t),
                       encoder_hidden_states=context, return_dict=False)
        reader.update(writer, dtype=dtype)
        _check_pairing(reference_unet, denoising_unet)
        bank = {f"{path}.attn1": module.bank[0].clone() for path, module in _blocks(reference_unet).items()}
        denoised = denoising_unet(x["noise"].repeat(repeat, 1, 1, 1, 1), t, encoder_hidden_states=context,
                                  pose_cond_fea=pose_features.repeat(repeat, 1, 1, 1, 1), return_dict=False)[0]
    reader.clear()
    writer.clear()
    return {"pose_features": pose_features, "bank": bank, "denoised": denoised}


def _blocks(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Spatial transformer blocks by path (the motion modules' blocks are another class and never bank)."""
    return {path: m for path, m in unet.named_modules() if hasattr(m, "bank") and ".attentions." in path}


def _check_pairing(reference_unet: torch.nn.Module, denoising_unet: torch.nn.Module) -> None:
    """Moore pairs writer and reader blocks by a stable sort on width; ours pairs by module path. Same here?"""
    writers, readers = _blocks(reference_unet), _blocks(denoising_unet)
    if set(writers) != set(readers):
        sys.exit(f"reader and writer block paths differ: {sorted(set(writers) ^ set(readers))[:4]}")
    for path, reader in readers.items():
        if not all(torch.equal(r, w) for r, w in zip(reader.bank, writers[path].bank)):
            sys.exit(f"Moore's reader at {path} got another layer's bank: pairing by path would not match it")


def _moore_commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("moore", type=Path, help="path to a Moore-AnimateAnyone checkout")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/moore_golden"))
    args = parser.parse_args(argv)

    import diffusers
    from safetensors.torch import save_file

    from aa2.weights.tiny import make_tiny_weights

    moore = _import_moore(args.moore.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_weights(tmp)
        tiny_folder = Path(tmp) / "animateanyone2" / "aa2-tiny-moore"
        manifest = weight_manifest(tiny_folder)
        tiny = {name: torch.load(tiny_folder / name, map_location="cpu", weights_only=True) for name in FILES}
        build_moore_models(moore, args.moore, tiny)  # step 1: our writer's files load into their classes
    weights = golden_weights(manifest)
    models = build_moore_models(moore, args.moore, weights)
    for model in models:
        model.double()
    inputs = golden_inputs()
    plain = run_moore(moore, models, inputs, guidance=False, dtype=torch.float64)
    guided = run_moore(moore, models, inputs, guidance=True, dtype=torch.float64)

    tensors = {f"input.{k}": v.contiguous() for k, v in inputs.items()}
    tensors["moore.pose_features"] = plain["pose_features"]
    tensors["moore.denoised"] = plain["denoised"]
    tensors["moore.denoised_guided"] = guided["denoised"]
    tensors.update({f"moore.bank.{path}": v for path, v in plain["bank"].items()})
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, args.out / "golden.safetensors")
    about = {
        "what": "Moore-AnimateAnyone's forward pass on tiny weights; see tools/moore_golden.py",
        "moore_commit": _moore_commit(args.moore),
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "diffusers_aliases": moore[4],
        "weight_seed": WEIGHT_SEED,
        "weights_sha256": weights_digest(weights),
        "timestep": TIMESTEP,
        "dtype": "float64 (float32 weights and inputs, upcast)",
    }
    (args.out / "manifest.json").write_text(json.dumps({"about": about, "files": manifest}, indent=1) + "\n")
    print(json.dumps(about, indent=1))
    print(f"denoised |max| {plain['denoised'].abs().max():.3f}, guided |max| {guided['denoised'].abs().max():.3f}; "
          f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
