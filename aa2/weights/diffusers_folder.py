"""A diffusers folder (`unet/`, `vae/`, `image_encoder/`), read strictly offline.

Each subfolder's `config.json` and weights are read by hand instead of through `from_pretrained`:
nothing can reach the network, every misfit names its file, and the config is checked against
what the pack builds (SD1.5's block layout, 8 heads, no extra embeddings), because settings such as
head counts or an LCM time-conditioning input change the output without changing any key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel

from ..config import ImageEncoderShape, UNetShape, VAEShape
from ..errors import AA2WeightsError
from .clip_vision import WEIGHT_NAMES as _IMAGE_ENCODER_WEIGHTS
from .clip_vision import read_clip_vision_folder
from .files import StateDict, read_state_dict
from .ldm import infer_diffusers_vae_shape, modern_vae_attention_names, unet_from_state, vae_from_state
from .shapes import infer_unet_shape

PARTS = ("unet", "vae", "image_encoder")
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                      "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
_SHARD_INDEX = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json")

# Settings that change a UNet's computation without changing its keys or shapes (or add keys),
# with the value SD1.5 has. A config.json that leaves one out means the default, which is SD1.5's.
_UNET_SETTINGS: dict[str, Any] = {
    "use_linear_projection": False, "class_embed_type": None, "addition_embed_type": None,
    "num_class_embeds": None, "time_cond_proj_dim": None, "encoder_hid_dim": None,
    "transformer_layers_per_block": 1, "dual_cross_attention": False, "only_cross_attention": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional", "flip_sin_to_cos": True, "freq_shift": 0,
    "center_input_sample": False, "act_fn": "silu", "conv_in_kernel": 3, "conv_out_kernel": 3,
}
_VAE_SETTINGS: dict[str, Any] = {"act_fn": "silu", "use_quant_conv": True, "use_post_quant_conv": True,
                                 "mid_block_add_attention": True}


@dataclass
class DiffusersFolder:
    """The parts found, as state dicts in diffusers / transformers key names, with their shapes."""

    unet: StateDict | None = None
    unet_shape: UNetShape | None = None
    in_channels: int | None = None
    vae: StateDict | None = None
    vae_shape: VAEShape | None = None
    image_encoder: StateDict | None = None
    image_encoder_shape: ImageEncoderShape | None = None
    sources: dict[str, str] = field(default_factory=dict)


def read_diffusers_folder(folder: str | Path, parts: tuple[str, ...] = PARTS,
                          cross_attention_dim: int | None = None) -> DiffusersFolder:
    """Read the named subfolders. Every missing one is reported at once, before anything heavy.

    `cross_attention_dim` (default: the UNet's, else 768) is what the image encoder must project to.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AA2WeightsError(f"diffusers folder not found: {folder}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {PARTS}")
    problems = [problem for part in parts if (problem := _missing(folder / part, part))]
    if problems:
        raise AA2WeightsError(
            f"{folder} is not a complete diffusers folder for this pack:\n  " + "\n  ".join(problems)
            + f"\nIt should hold {', '.join(p + '/' for p in parts)} each with config.json and weights, "
            "as saved by diffusers' save_pretrained."
        )
    result = DiffusersFolder()
    if "unet" in parts:
        result.unet, result.unet_shape, result.in_channels = read_unet_folder(folder / "unet")
        result.sources["unet"] = str(folder / "unet")
    if "vae" in parts:
        result.vae, result.vae_shape = read_vae_folder(folder / "vae")
        result.sources["vae"] = str(folder / "vae")
    if "image_encoder" in parts:
        width = cross_attention_dim or (result.unet_shape.cross_attention_dim if result.unet_shape else 768)
        result.image_encoder, result.image_encoder_shape = read_clip_vision_folder(folder / "image_encoder", width)
        result.sources["image_encoder"] = str(folder / "image_encoder")
    return result


def read_unet_folder(folder: str | Path) -> tuple[StateDict, UNetShape, int]:
    """`unet/` -> (state dict, shape, conv_in channels); the config must describe an SD1.5 UNet."""
    folder = Path(folder)
    config, state, source = _read_part(folder, "unet")
    shape, in_channels = infer_unet_shape(state, source)
    _check_config(folder / "config.json", config, shape.diffusers_config(in_channels), _UNET_SETTINGS)
    return state, shape, in_channels


def read_vae_folder(folder: str | Path) -> tuple[StateDict, VAEShape]:
    """`vae/` -> (state dict, shape); the scaling factor and group count come from config.json."""
    folder = Path(folder)
    config, state, source = _read_part(folder, "vae")
    state = modern_vae_attention_names(state)
    shape = infer_diffusers_vae_shape(state, source)
    if "scaling_factor" in config:
        shape = dataclasses.replace(shape, scaling_factor=float(config["scaling_factor"]))
    if "norm_num_groups" in config:  # group counts leave no trace in tensor shapes: only the config knows
        shape = dataclasses.replace(shape, norm_num_groups=int(config["norm_num_groups"]))
    _check_config(folder / "config.json", config, shape.diffusers_config(), _VAE_SETTINGS)
    return state, shape


def load_unet_folder(folder: str | Path) -> UNet2DConditionModel:
    state, shape, in_channels = read_unet_folder(folder)
    return unet_from_state(state, shape, in_channels, str(folder))


def load_vae_folder(folder: str | Path) -> AutoencoderKL:
    state, shape = read_vae_folder(folder)
    return vae_from_state(state, shape, str(folder))


def _missing(folder: Path, part: str) -> str | None:
    """What is missing from one subfolder, in words; None if it looks complete."""
    if not folder.is_dir():
        return f"{part}/ is missing"
    names = _IMAGE_ENCODER_WEIGHTS if part == "image_encoder" else _DIFFUSERS_WEIGHTS + _SHARD_INDEX
    lacks = [] if (folder / "config.json").is_file() else [f"{part}/config.json"]
    if not any((folder / name).is_file() for name in names):
        lacks.append(f"{part}/{names[0]} (or {', '.join(names[1:3])})")
    return f"missing {' and '.join(lacks)}" if lacks else None


def _read_part(folder: Path, part: str) -> tuple[dict[str, Any], StateDict, str]:
    problem = _missing(folder, part)
    if problem:
        raise AA2WeightsError(f"{folder.parent}: {problem}.")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise AA2WeightsError(f"{folder / 'config.json'} cannot be read as JSON ({error}).") from error
    for index in _SHARD_INDEX:
        if (folder / index).is_file():
            return config, _read_shards(folder / index), str(folder / index)
    weights = next(folder / name for name in _DIFFUSERS_WEIGHTS if (folder / name).is_file())
    return config, read_state_dict(weights), str(weights)


def _read_shards(index: Path) -> StateDict:
    """A sharded save: `*.index.json` maps every key to one of several files beside it."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as error:
        raise AA2WeightsError(f"{index} is not a valid shard index ({error}).") from error
    state: StateDict = {}
    for name in sorted(set(weight_map.values())):
        state.update(read_state_dict(index.parent / name))
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise AA2WeightsError(f"{index} lists {len(absent)} tensors its shards do not hold, e.g. {absent[:3]}.")
    return state


def _check_config(path: Path, config: dict[str, Any], built: dict[str, Any], settings: dict[str, Any]) -> None:
    """Refuse a config.json whose settings differ from the model the pack will build for these weights."""
    expected = {k: v for k, v in built.items() if k not in ("sample_size", "scaling_factor")}
    expected.update(settings)
    wrong = []
    for key, want in expected.items():
        if key not in config:
            continue
        have = config[key]
        if key == "attention_head_dim" and isinstance(have, list) and len(set(have)) == 1:
            have = have[0]  # diffusers accepts one head count per block; SD1.5 repeats 8
        if key == "transformer_layers_per_block" and isinstance(have, list) and set(have) == {1}:
            have = 1
        if _plain(have) != _plain(want):
            wrong.append(f"{key}={have!r} (the pack builds {want!r})")
    if wrong:
        raise AA2WeightsError(
            f"{path} describes a model the pack does not build: " + "; ".join(wrong[:5])
            + ". Use SD1.5-family weights (the pack builds an SD1.5 UNet and VAE)."
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
