"""AnimateDiff motion modules (ComfyUI's models/animatediff_models) as diffusers `MotionAdapter`s.

Released files keep AnimateDiff's original layout:
`down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight`.
`mm_sd_v15.ckpt` (v1) has 24 positional entries and no mid-block module; `mm_sd_v15_v2.ckpt` (v2)
32 and a mid-block module; `v3_sd15_mm.ckpt` (v3) 32 and none. AnimateLCM and most fine-tunes copy
one of these. The shape is read off the tensors, never off the file name: mid block present or
not, `pe` length, per-level widths and layer counts. Head count and norm groups cannot be read from
shapes; every AnimateDiff release uses 8 and 32, the `MotionShape` defaults.

Renaming uses diffusers' own `convert_animatediff_checkpoint_to_diffusers`. That converter
*drops* the positional tables (`pos_encoder.pe`) and lets diffusers recompute them; here the file's
table is kept instead (it is a persistent buffer of `MotionAdapter`), because it is what the weights
were trained with and it is the only record of `max_seq_length`. AnimateDiff stores one table per
attention (two per transformer block, equal); diffusers has one per block, so the two must agree.

diffusers ships no diffusers -> AnimateDiff converter; `motion_module_to_original` is our own, used
to write fixtures in the real layout and proved by round trip through diffusers' reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import MotionAdapter
from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
from torch import nn

from ..config import MotionShape, UNetShape
from ..errors import AA2WeightsError
from .files import PICKLE_SUFFIXES, StateDict, load_strict, read_state_dict, write_pickle, write_safetensors
from .ldm import describe_weights

WHAT = "AnimateDiff motion module"
_ORIGINAL_MARK = ".temporal_transformer."
_DIFFUSERS_PE = re.compile(r"^(.*\.motion_modules\.\d+\.transformer_blocks\.\d+)\.pos_embed\.pe$")
_ORIGINAL_PE = re.compile(
    r"^(.*\.motion_modules\.\d+)\.temporal_transformer\.(transformer_blocks\.\d+)"
    r"\.attention_blocks\.(\d+)\.pos_encoder\.pe$"
)
_SDXL_CHANNELS = (320, 640, 1280)
# diffusers name -> AnimateDiff name, inside one transformer block (inverse of diffusers' renames)
_TO_ORIGINAL = {"norm1": "norms.0", "norm2": "norms.1", "norm3": "ff_norm", "attn1": "attention_blocks.0",
                "attn2": "attention_blocks.1"}
_BLOCK_PART = re.compile(r"^(transformer_blocks\.\d+)\.(norm1|norm2|norm3|attn1|attn2)\.(.*)$")


# ---------------------------------------------------------------- reading


def read_motion_module(path: str | Path, unet: UNetShape | None = None) -> tuple[MotionShape, StateDict]:
    """`(MotionShape, MotionAdapter state dict)` of an AnimateDiff file (original or diffusers layout).

    With `unet`, the file's per-level widths and layer counts must match that UNet's; without it,
    `motion_block_channels(state)` says which UNet the file is for.
    """
    return convert_motion_module(read_state_dict(path), str(path), unet)


def convert_motion_module(
    state: Mapping[str, torch.Tensor], source: str, unet: UNetShape | None = None
) -> tuple[MotionShape, StateDict]:
    """The state-dict half of `read_motion_module`, for files already in memory."""
    state = _strip_prefix(dict(state), "module.")
    _refuse_other_files(state, source)
    if any(_ORIGINAL_MARK in key for key in state):
        converted = _original_to_diffusers(state, source)
    else:  # a diffusers `MotionAdapter` save (diffusion_pytorch_model.safetensors) is already in our names
        converted = dict(state)
    shape, channels = infer_motion_shape(converted, source)
    if unet is not None:
        _check_unet(converted, channels, unet, source)
    return shape, converted


def infer_motion_shape(state: StateDict, source: str) -> tuple[MotionShape, tuple[int, ...]]:
    """`(MotionShape, per-level widths)` of a MotionAdapter state dict, from its key names and shapes."""
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"down_blocks\.(\d+)\.motion_modules\.", k))})
    if not levels:
        raise AA2WeightsError(f"{source} has no down-block motion modules; it looks like {_describe(state)}.")
    channels = motion_block_channels(state, source)
    if channels == _SDXL_CHANNELS:
        raise AA2WeightsError(
            f"{source} is an SDXL AnimateDiff motion module (3 levels of 320/640/1280 channels, like "
            "mm_sdxl_v10_beta.ckpt). Animate Anyone 2 here is built on SD1.5: use an SD1.5 motion module "
            "such as mm_sd_v15_v2.ckpt or v3_sd15_mm.ckpt."
        )
    tables = {k: v for k, v in state.items() if _DIFFUSERS_PE.match(k)}
    if not tables:
        raise AA2WeightsError(
            f"{source} has motion modules but no positional tables (pos_encoder.pe); it is incomplete."
        )
    lengths = sorted({int(v.shape[1]) for v in tables.values()})
    if len(lengths) != 1:
        raise AA2WeightsError(
            f"{source}: its motion modules disagree on the positional length ({lengths}); the file is inconsistent."
        )
    first = "down_blocks.0.motion_modules.0.transformer_blocks."
    transformer_layers = len({k.split(".")[5] for k in state if k.startswith(first)})
    shape = MotionShape(
        max_seq_length=lengths[0],
        use_mid_block=any(k.startswith("mid_block.motion_modules.") for k in state),
        transformer_layers=transformer_layers,
    )
    return shape, channels


def motion_block_channels(state: StateDict, source: str = "motion module") -> tuple[int, ...]:
    """The UNet widths a MotionAdapter state dict is for: one per down level, read off `to_q`."""
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"down_blocks\.(\d+)\.motion_modules\.", k))})
    widths = []
    for level in levels:
        key = f"down_blocks.{level}.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
        if key not in state:
            raise AA2WeightsError(f"{source} lacks {key}; the motion module is incomplete or of another kind.")
        widths.append(int(state[key].shape[0]))
    return tuple(widths)


# ---------------------------------------------------------------- building


def load_motion_adapter(path: str | Path, unet: UNetShape) -> MotionAdapter:
    """A `MotionAdapter` holding the file's weights (in the file's dtype), built for `unet`, loaded strictly."""
    shape, state = read_motion_module(path, unet)
    return motion_adapter_from_state(state, shape, unet, str(path))


def motion_adapter_from_state(state: StateDict, shape: MotionShape, unet: UNetShape, source: str) -> MotionAdapter:
    """Build the adapter on the meta device (no random init) and take `state` strictly."""
    with init_empty_weights():
        adapter = MotionAdapter(**shape.adapter_config(unet))
    return load_strict(adapter, state, WHAT, source).eval()


# ---------------------------------------------------------------- writing


def motion_module_to_original(
    model: nn.Module | Mapping[str, torch.Tensor], shape: MotionShape | None = None
) -> StateDict:
    """AnimateDiff's original key layout of a `MotionAdapter`'s (or a `UNetMotionModel`'s) motion modules.

    Each diffusers `pos_embed.pe` becomes the two `pos_encoder.pe` tables AnimateDiff keeps per block.
    With `shape`, its positional length and mid block are checked against the weights.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    original: StateDict = {}
    for key, tensor in state.items():
        head, sep, rest = key.partition(".motion_modules.")
        if not sep:
            continue  # a UNetMotionModel's spatial layers
        index, _, inner = rest.partition(".")
        prefix = f"{head}.motion_modules.{index}.temporal_transformer."
        tensor = tensor.detach()
        if inner.endswith(".pos_embed.pe"):
            block = inner[: -len(".pos_embed.pe")]
            for attention in (0, 1):
                original[f"{prefix}{block}.attention_blocks.{attention}.pos_encoder.pe"] = tensor
            continue
        if match := _BLOCK_PART.match(inner):
            inner = f"{match.group(1)}.{_TO_ORIGINAL[match.group(2)]}.{match.group(3)}"
        original[prefix + inner] = tensor
    if not original:
        raise ValueError("no motion modules (no '.motion_modules.' keys) to write")
    if shape is not None:
        lengths = {int(v.shape[1]) for k, v in original.items() if k.endswith(".pos_encoder.pe")}
        has_mid = any(k.startswith("mid_block.") for k in original)
        if lengths != {shape.max_seq_length} or has_mid != shape.use_mid_block:
            raise ValueError(
                f"motion weights (positional lengths {sorted(lengths)}, mid block {has_mid}) do not match {shape}"
            )
    return original


def write_motion_module(path: str | Path, adapter: nn.Module | Mapping[str, torch.Tensor]) -> Path:
    """Save motion modules as AnimateDiff ships them: `.safetensors` by suffix, else a plain-dict `.ckpt`."""
    path = Path(path)
    original = motion_module_to_original(adapter)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        return write_safetensors(path, original)
    # the released .ckpt files are a bare {name: tensor} dict; copies keep shared or strided
    # storage (the two positional tables of a block, views) out of the file
    return write_pickle(path, {k: v.to("cpu").contiguous().clone() for k, v in original.items()})


# ---------------------------------------------------------------- internals


def _strip_prefix(state: StateDict, prefix: str) -> StateDict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _refuse_other_files(state: StateDict, source: str) -> None:
    keys = list(state)
    if any("lora" in k.lower() for k in keys):
        motion = any(".motion_modules." in k for k in keys)
        raise AA2WeightsError(
            f"{source} is a {'motion ' if motion else ''}LoRA (its keys name lora layers, e.g. "
            f"{next(k for k in keys if 'lora' in k.lower())!r}), not a motion module. "
            + ("Motion LoRAs (v2_lora_*.ckpt) go on top of a motion module; " if motion else
               "LoRAs such as v3_sd15_adapter.ckpt go on top of a checkpoint; ")
            + "put a motion module (mm_sd_v15_v2.ckpt, v3_sd15_mm.ckpt, ...) in this slot."
        )
    if any(".temporal_attentions." in k for k in keys):
        raise AA2WeightsError(
            f"{source} is HotShot-XL's temporal layers (an SDXL video model), not an SD1.5 AnimateDiff motion "
            "module. Use an SD1.5 motion module such as mm_sd_v15_v2.ckpt or v3_sd15_mm.ckpt."
        )
    if any(k.startswith("controlnet_cond_embedding.") for k in keys):
        raise AA2WeightsError(
            f"{source} is an AnimateDiff SparseCtrl model (it has controlnet_cond_embedding.*), not a motion "
            "module. Use a motion module such as v3_sd15_mm.ckpt."
        )
    if not any(".motion_modules." in k for k in keys):
        raise AA2WeightsError(
            f"{source} is not an AnimateDiff motion module (no '.motion_modules.' keys); it looks like "
            f"{_describe(state)}. Put a motion module (mm_sd_v15_v2.ckpt, v3_sd15_mm.ckpt, ...) here."
        )
    others = [k for k in keys if ".motion_modules." not in k]
    if others:
        raise AA2WeightsError(
            f"{source} holds motion modules and {len(others)} other weights (e.g. {others[:3]}): it is a "
            "full video UNet or a merge, not a motion-module file. Use the motion module on its own."
        )


def _describe(state: StateDict) -> str:
    if any(k.startswith("model.diffusion_model.") for k in state):
        return "a Stable Diffusion checkpoint (model.diffusion_model.*; it belongs in models/checkpoints)"
    return describe_weights(state)


def _original_to_diffusers(state: StateDict, source: str) -> StateDict:
    tables: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in state.items():
        if match := _ORIGINAL_PE.match(key):
            tables.setdefault(f"{match.group(1)}.{match.group(2)}.pos_embed.pe", {})[int(match.group(3))] = tensor
    converted = convert_animatediff_checkpoint_to_diffusers(state)  # renames; drops every pos_encoder table
    dropped = sorted(k for k in state if "pos_encoder" in k and not _ORIGINAL_PE.match(k))
    if dropped:
        raise AA2WeightsError(
            f"{source}: unknown positional keys {dropped[:3]}; this is not a motion module layout we know."
        )
    for name, by_attention in tables.items():
        first = by_attention[min(by_attention)]
        for other in by_attention.values():
            if other.shape != first.shape or not torch.equal(other, first):
                raise AA2WeightsError(
                    f"{source}: the two attentions of {name.rsplit('.pos_embed', 1)[0]} have different positional "
                    "tables; diffusers' MotionAdapter shares one per block, so this file cannot be loaded exactly."
                )
        converted[name] = first
    return converted


def _check_unet(state: StateDict, channels: tuple[int, ...], unet: UNetShape, source: str) -> None:
    if channels != tuple(unet.block_out_channels):
        raise AA2WeightsError(
            f"{source} is a motion module for a UNet with block widths {channels}, but the UNet here has "
            f"{tuple(unet.block_out_channels)}. Use a motion module made for this base model."
        )
    layers = len({k.split(".")[3] for k in state if k.startswith("down_blocks.0.motion_modules.")})
    if layers != unet.layers_per_block:
        raise AA2WeightsError(
            f"{source} has {layers} motion modules per down block, but the UNet has {unet.layers_per_block} "
            "layers per block. Use a motion module made for this base model."
        )
