"""From the files a user has to a complete `AA2Model`: which file gives which part.

A *base* gives most of the network and decides the config:

* the pack's own `.safetensors` checkpoint — everything, with its config in the metadata;
* a Moore-AnimateAnyone / MIMO folder — both UNets, the pose guider, usually the motion module;
* an SD1.5 single file (LDM layout, `.safetensors` / `.ckpt`) — the UNet, which also starts the
  ReferenceNet (as Animate Anyone trains it), and the VAE;
* a diffusers folder — `unet/`, and `vae/`, `image_encoder/` where present.

What the base lacks comes from the other slots (an AnimateDiff motion module, a CLIP vision file
or folder, a VAE file or folder), which also override what the base has. Everything missing is
reported in one message that says which file would supply it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import AA2Config, FusionMode
from ..errors import AA2WeightsError, worded
from ..models.aa2_model import REQUIRED_PARTS, AA2Model, ModelParts, assemble
from .animatediff import read_motion_module
from .checkpoint import is_aa2_checkpoint, read_checkpoint
from .clip_vision import read_clip_vision
from .diffusers_folder import PARTS as DIFFUSERS_PARTS
from .diffusers_folder import read_diffusers_folder, read_vae_folder
from .files import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, read_state_dict
from .ldm import describe_weights, read_sd15_checkpoint, read_vae_file
from .moore import FILES as MOORE_FILES
from .moore import looks_like_moore_folder, read_moore_folder


def _supplier(part: str) -> str:
    """Which file gives `part`, and where the user puts it (a ComfyUI folder, or a command-line option)."""
    what = {
        "denoising_unet": "an SD1.5 checkpoint, a diffusers folder, a Moore-AnimateAnyone folder or a pack checkpoint",
        "motion": "an AnimateDiff SD1.5 motion module (e.g. mm_sd_v15_v2.ckpt)",
        "reference_unet": "the base model",
        "vae": "a VAE (e.g. vae-ft-mse-840000-ema-pruned.safetensors)",
        "image_encoder": "a CLIP ViT-L/14 vision file with projection (e.g. the image_encoder of "
        "sd-image-variations-diffusers)",
    }[part]
    where = {
        "motion": ("models/animatediff_models", "--motion-module"),
        "vae": ("models/vae", "--vae"),
        "image_encoder": ("models/clip_vision", "--image-encoder"),
    }.get(part)
    if where is None:
        return what
    return what + worded(comfyui=f" in {where[0]}", cli=f", passed with {where[1]}")


@dataclass(frozen=True)
class ModelSources:
    """The files to build a model from; every path but `base` is optional."""

    base: Path
    motion_module: Path | None = None
    image_encoder: Path | None = None
    vae: Path | None = None
    fusion: FusionMode | None = None  # override the base's reference-attention mode
    # Build the AA2 parts a Moore-AnimateAnyone / MIMO base has no weights for (object guider +
    # spatial blending, depth branch), freshly initialised: what training from those weights needs.
    # Other bases are unaffected: an SD1.5 base always gets every part, a pack checkpoint has its own.
    new_parts: bool = False

    @classmethod
    def from_path(cls, path: str | Path) -> "ModelSources":
        return cls(base=Path(path))

    def replace(self, **changes) -> "ModelSources":
        paths = ("base", "motion_module", "image_encoder", "vae")
        return dataclasses.replace(self, **{k: Path(v) if k in paths and v is not None else v
                                            for k, v in changes.items()})


def base_kind(path: str | Path) -> str:
    """`"aa2"`, `"moore"`, `"diffusers"` or `"sd15"`; an error that says what was found otherwise."""
    path = Path(path)
    if not path.exists():
        raise AA2WeightsError(f"not found: {path}")
    if path.is_dir():
        if looks_like_moore_folder(path):  # an incomplete one too: its reader names what is missing
            return "moore"
        if (path / "unet").is_dir():
            return "diffusers"
        raise AA2WeightsError(
            f"{path} is a folder, but neither a Moore-AnimateAnyone folder ({', '.join(MOORE_FILES)}) nor a "
            "diffusers folder (unet/, vae/, image_encoder/)."
        )
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise AA2WeightsError(f"{path} is not a weight file (.safetensors, .ckpt, .pt, .pth or .bin)")
    return "aa2" if is_aa2_checkpoint(path) else "sd15"


def read_sources(sources: ModelSources) -> tuple[AA2Config, ModelParts]:
    """The config and the state dicts the files give, before any module is built."""
    kind = base_kind(sources.base)
    options = {"new_parts": sources.new_parts} if kind == "moore" else {}
    config, parts = _READERS[kind](sources.base, **options)
    unet = config.unet
    if sources.motion_module is not None:
        motion_shape, parts.motion = read_motion_module(sources.motion_module, unet)
        config = config.replace(motion=motion_shape)
        parts.sources["motion"] = str(sources.motion_module)
    if sources.image_encoder is not None:
        parts.image_encoder, shape = read_clip_vision(sources.image_encoder, unet.cross_attention_dim)
        config = config.replace(image_encoder=shape)
        parts.sources["image_encoder"] = str(sources.image_encoder)
    if sources.vae is not None:
        path = Path(sources.vae)
        parts.vae, shape = read_vae_folder(path) if path.is_dir() else read_vae_file(path)
        config = config.replace(vae=shape)
        parts.sources["vae"] = str(path)
    if sources.fusion is not None:
        config = config.replace(fusion=sources.fusion)
    missing = [name for name in REQUIRED_PARTS if getattr(parts, name) is None]
    if missing:
        raise AA2WeightsError(
            f"{sources.base} ({_KIND_NAMES[kind]}) does not hold every part of the model. Still needed:\n  "
            + "\n  ".join(f"{name.replace('_', ' ')}: {_supplier(name)}" for name in missing)
        )
    return config, parts


def load_model(sources: ModelSources) -> AA2Model:
    """Read every file, then build and load the model strictly (eval mode, no gradients)."""
    config, parts = read_sources(sources)
    return assemble(config, parts)


def describe(path: str | Path) -> str:
    """One paragraph on what `path` is and what it can be used for (for `python -m aa2 info`); an
    `AA2WeightsError` saying what it is not, if it is no base model."""
    path = Path(path)
    kind = base_kind(path)
    if kind == "sd15":
        state = read_state_dict(path)
        try:
            read_sd15_checkpoint(path)
        except AA2WeightsError as error:
            return f"{path}: {describe_weights(state)}. Not usable as a base model: {error}"
        return (f"{path}: an SD1.5 single-file checkpoint. As a base it gives the DenoisingNet, the ReferenceNet "
                "and the VAE; add a motion module and a CLIP vision file.")
    config, parts = _READERS[kind](path)
    have = [name for name in REQUIRED_PARTS if getattr(parts, name) is not None]
    lacks = [name for name in REQUIRED_PARTS if name not in have]
    scheduler = config.scheduler
    lines = [
        f"{path}: {_KIND_NAMES[kind]}",
        f"  UNet widths {config.unet.block_out_channels}, reference attention: {config.fusion}, "
        f"environment input: {config.use_environment}",
        f"  schedule: {scheduler.prediction_type}, zero-terminal SNR {scheduler.rescale_betas_zero_snr}, "
        f"{scheduler.timestep_spacing} timesteps, {scheduler.beta_schedule} betas",
        f"  Animate Anyone 2 parts: object guider {_objects(config)}, "
        f"depth branch {_yes(config.pose.use_depth)}",
        f"  holds: {', '.join(have)}",
    ]
    if lacks:
        lines.append(f"  needs besides: {', '.join(lacks)}")
    return "\n".join(lines)


def _yes(built: bool) -> str:
    return "built" if built else "left out (these weights never trained it)"


def _objects(config: AA2Config) -> str:
    if config.object_injection == "blend" or not config.use_object_guider:
        return f"+ spatial blending {_yes(config.use_object_guider)}"
    return "built, merged at conv_in (no spatial blending: the ablation variant)"


# ------------------------------------------------------------------------------------ readers


def _read_aa2(path: Path) -> tuple[AA2Config, ModelParts]:
    return read_checkpoint(path)


def _read_sd15(path: Path) -> tuple[AA2Config, ModelParts]:
    checkpoint = read_sd15_checkpoint(path)
    if checkpoint.in_channels != 4:
        raise AA2WeightsError(
            f"{path} has a {checkpoint.in_channels}-channel UNet input (an inpainting or other special model); "
            "the DenoisingNet starts from a plain 4-channel SD1.5 UNet."
        )
    config = AA2Config(unet=checkpoint.unet_shape)
    if checkpoint.vae_shape is not None:
        config = config.replace(vae=checkpoint.vae_shape)
    parts = ModelParts(
        denoising_unet=checkpoint.unet,
        reference_unet=_copy(checkpoint.unet),
        vae=checkpoint.vae,
        sources={name: str(path) for name in ("denoising_unet", "reference_unet", "vae")},
    )
    return config, parts


def _read_diffusers(path: Path) -> tuple[AA2Config, ModelParts]:
    present = tuple(part for part in DIFFUSERS_PARTS if (path / part).is_dir())
    folder = read_diffusers_folder(path, present)
    if folder.in_channels != 4:
        raise AA2WeightsError(f"{path}/unet has a {folder.in_channels}-channel input; expected plain SD1.5 (4).")
    config = AA2Config(unet=folder.unet_shape)
    if folder.vae_shape is not None:
        config = config.replace(vae=folder.vae_shape)
    if folder.image_encoder_shape is not None:
        config = config.replace(image_encoder=folder.image_encoder_shape)
    parts = ModelParts(
        denoising_unet=folder.unet,
        reference_unet=_copy(folder.unet),
        vae=folder.vae,
        image_encoder=folder.image_encoder,
        sources={"denoising_unet": folder.sources["unet"], "reference_unet": folder.sources["unet"], **folder.sources},
    )
    return config, parts


def _copy(state: dict) -> dict:
    """The ReferenceNet starts as the base UNet; its own tensors, so training one never moves the other."""
    return {key: tensor.clone() for key, tensor in state.items()}


_READERS = {"aa2": _read_aa2, "sd15": _read_sd15, "diffusers": _read_diffusers, "moore": read_moore_folder}
_KIND_NAMES = {
    "aa2": "an Animate Anyone 2 pack checkpoint",
    "sd15": "an SD1.5 single-file checkpoint",
    "diffusers": "a diffusers folder",
    "moore": "a Moore-AnimateAnyone folder",
}
