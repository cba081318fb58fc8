"""Tiny random weights in every real file format, laid out like ComfyUI's `models/` folder.

`python -m aa2 make-tiny-weights DIR` writes them. They have SD1.5's structure with small widths
(`aa2.config.tiny()`), so the loaders, the CLI, the nodes and the demo exercise exactly the code
that reads real downloads — without a download. They animate nothing: the weights are random.

Every parameter is random, including the ones a fresh model starts at zero (the environment
channels of `conv_in`, the blending gates, the pose modulation's temporal conv): a zero weight
would hide a part that failed to load, so a round trip through these files proves every tensor.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from torch import nn

from ..config import AA2Config, MotionShape, tiny
from ..models.aa2_model import AA2Model, ModelParts, assemble
from ..models.object_guider import ObjectGuider
from ..models.pose_modulation import PoseGuider, PoseModulation
from ..models.spatial_blend import SpatialBlend
from .animatediff import write_motion_module
from .checkpoint import save_checkpoint
from .clip_vision import write_clip_vision_file
from .ldm import write_sd15_checkpoint, write_vae_file
from .moore import write_moore_folder

NAME = "aa2-tiny"


def random_parts(config: AA2Config | None = None, seed: int = 0, *, perturb: bool = True) -> ModelParts:
    """Random state dicts for every part of `config` (default: `tiny()`), reproducible by `seed`.

    `perturb=True` (tests) makes every parameter random and non-zero (module docstring);
    `perturb=False` keeps each module's own initialisation — zero gates and all — the starting
    point for training from scratch (`train.init_model`).
    """
    config = config or tiny()
    torch.manual_seed(seed)
    _randomised = _perturbed if perturb else _initialised
    first = config.unet.block_out_channels[0]
    unet = _randomised(UNet2DConditionModel(**config.unet.diffusers_config(config.denoising_in_channels)))
    extras = nn.ModuleDict({"pose_modulation": PoseModulation(config.pose, first)})
    if config.use_object_guider:
        blend = config.object_injection == "blend"
        extras["object_guider"] = ObjectGuider(config.unet, finest_only=not blend)
        if blend:
            extras["spatial_blend"] = SpatialBlend(config.unet, config.unet.layers_per_block)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder.transformers_config()))
    return ModelParts(
        denoising_unet=unet.state_dict(),
        motion=_randomised(MotionAdapter(**config.motion.adapter_config(config.unet))).state_dict(),
        reference_unet=_randomised(UNet2DConditionModel(**config.unet.diffusers_config())).state_dict(),
        vae=_randomised(AutoencoderKL(**config.vae.diffusers_config())).state_dict(),
        image_encoder=_randomised(encoder).state_dict(),
        aa2_extras=_randomised(extras).state_dict(),
        sources={name: f"random weights (seed {seed})" for name in ("denoising_unet", "motion", "reference_unet",
                                                                      "vae", "image_encoder", "aa2_extras")},
    )


def random_model(config: AA2Config | None = None, seed: int = 0) -> AA2Model:
    """An `AA2Model` of random weights (default: the tiny shapes), built through `assemble`."""
    config = config or tiny()
    return assemble(config, random_parts(config, seed))


def make_tiny_weights(root: str | Path, seed: int = 0) -> list[Path]:
    """Write tiny random weights under `root` in ComfyUI's folder names; return the files written.

    root/checkpoints/       SD1.5 single files in the LDM layout (.safetensors and .ckpt)
    root/vae/               a standalone VAE (LDM layout)
    root/diffusers/         a diffusers folder (unet/, vae/, image_encoder/)
    root/clip_vision/       a CLIP vision file with projection
    root/animatediff_models/ AnimateDiff v2 (.ckpt, mid block) and v3 (.safetensors, none)
    root/animateanyone2/    the pack's checkpoint, and Moore-AnimateAnyone / MIMO folders
    """
    root = Path(root)
    config = tiny()
    parts = random_parts(config, seed)
    unet_4 = dict(parts.denoising_unet)
    unet_4["conv_in.weight"] = unet_4["conv_in.weight"][:, :4].clone()  # plain SD1.5 takes 4 channels
    written = [
        write_sd15_checkpoint(root / "checkpoints" / f"{NAME}-sd15.safetensors", unet_4, parts.vae),
        write_sd15_checkpoint(root / "checkpoints" / f"{NAME}-sd15.ckpt", unet_4, parts.vae),
        write_vae_file(root / "vae" / f"{NAME}-vae.safetensors", parts.vae),
        write_clip_vision_file(root / "clip_vision" / f"{NAME}-clip-vision.safetensors", parts.image_encoder),
        write_motion_module(root / "animatediff_models" / f"{NAME}-mm-v2.ckpt", parts.motion),
        write_motion_module(root / "animatediff_models" / f"{NAME}-mm-v3.safetensors", _v3_motion(config, seed)),
    ]
    written += _write_diffusers_folder(root / "diffusers" / f"{NAME}-sd15", config, unet_4, parts)

    model = assemble(config, parts)
    written.append(save_checkpoint(model, root / "animateanyone2" / f"{NAME}.safetensors"))
    # Animate Anyone 1 weights: 4-channel conv_in and reference attention in every block.
    moore = assemble(config.replace(fusion="full", use_environment=False), replace(
        parts, denoising_unet=unet_4, aa2_extras={}, pose_guider=_pose_guider(config)))
    written += _folder_files(write_moore_folder(root / "animateanyone2" / f"{NAME}-moore", moore))
    mimo = assemble(config.replace(fusion="full", use_environment=True), replace(
        parts, aa2_extras={}, pose_guider=_pose_guider(config)))
    written += _folder_files(write_moore_folder(root / "animateanyone2" / f"{NAME}-mimo", mimo))
    return written


def _initialised(module: nn.Module) -> nn.Module:
    return module.eval()


def _perturbed(module: nn.Module) -> nn.Module:
    """Every parameter random and non-zero (see the module docstring), small enough to stay finite."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return module.eval()


def _pose_guider(config: AA2Config) -> dict[str, torch.Tensor]:
    guider = PoseGuider(config.pose.conditioning_channels, config.pose.block_out_channels, config.unet.block_out_channels[0])
    return _perturbed(guider).state_dict()


def _v3_motion(config: AA2Config, seed: int) -> dict[str, torch.Tensor]:
    """AnimateDiff v3's shape: no mid-block motion module."""
    torch.manual_seed(seed + 1)
    shape = MotionShape(use_mid_block=False)
    return _perturbed(MotionAdapter(**shape.adapter_config(config.unet))).state_dict()


def _write_diffusers_folder(folder: Path, config: AA2Config, unet_4: dict, parts: ModelParts) -> list[Path]:
    """A diffusers folder as `save_pretrained` writes it (config.json + safetensors per part)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNet2DConditionModel(**config.unet.diffusers_config())
    unet.load_state_dict(unet_4)
    vae = AutoencoderKL(**config.vae.diffusers_config())
    vae.load_state_dict(parts.vae)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder.transformers_config()))
    encoder.load_state_dict(parts.image_encoder)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    encoder.save_pretrained(folder / "image_encoder")
    return _folder_files(folder)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())
