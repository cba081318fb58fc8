"""The pack's own checkpoint: one `.safetensors` file that says what it is.

Keys are `AA2Model.state_dict()` names (`denoising_net.unet.*`, `denoising_net.pose_modulation.*`,
`reference_net.*`, `vae.*`, `image_encoder.*`, ...). The metadata holds the `AA2Config` as JSON —
architecture, fusion mode, and the scheduler settings the weights were trained with — so loading
needs nothing but the file, and sampling defaults to what the weights expect.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import AA2Config
from ..errors import AA2WeightsError
from ..models.aa2_model import AA2Model, ModelParts
from .files import read_safetensors_metadata, read_state_dict, write_safetensors

FORMAT = "aa2"
FORMAT_VERSION = "1"

_PART_PREFIXES = {
    "denoising_net.unet.": "denoising_unet",  # split further into UNet and motion keys below
    "reference_net.": "reference_unet",
    "vae.": "vae",
    "image_encoder.": "image_encoder",
}
_EXTRAS_PREFIX = "denoising_net."


def is_aa2_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        return read_safetensors_metadata(path).get("format") == FORMAT
    except AA2WeightsError:
        return False


def save_checkpoint(model: AA2Model, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `model` with its config in the metadata (atomically: a crash never leaves half a file)."""
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous().cpu()
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "aa2_config": model.config.to_json()}
    write_safetensors(path, state, metadata)
    return Path(path)


def read_checkpoint_config(path: str | Path) -> AA2Config:
    """A pack checkpoint's stored config, from its metadata alone (no tensor is read)."""
    path = Path(path)
    metadata = read_safetensors_metadata(path)
    if metadata.get("format") != FORMAT:
        raise AA2WeightsError(
            f"{path} is not an Animate Anyone 2 pack checkpoint (its metadata has no format={FORMAT!r}). "
            "Write one with `python -m aa2 convert SRC DST`, or load the file in the slot for its kind."
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise AA2WeightsError(
            f"{path} is format version {metadata.get('format_version')}, this pack reads {FORMAT_VERSION}: "
            "update the pack, or re-convert the file with this version."
        )
    try:
        config = AA2Config.from_dict(json.loads(metadata["aa2_config"]))
    except (KeyError, ValueError, TypeError) as error:
        raise AA2WeightsError(f"{path}: the stored config cannot be read ({error})") from error
    return config


def read_checkpoint(path: str | Path) -> tuple[AA2Config, ModelParts]:
    """Read a pack checkpoint into its config and the parts `assemble` takes."""
    path = Path(path)
    config = read_checkpoint_config(path)
    state = read_state_dict(path)
    parts = ModelParts(sources={name: str(path) for name in ("denoising_unet", "motion", "reference_unet",
                                                             "vae", "image_encoder", "aa2_extras")})
    groups: dict[str, dict[str, torch.Tensor]] = {name: {} for name in _PART_PREFIXES.values()}
    for key, tensor in state.items():
        for prefix, name in _PART_PREFIXES.items():
            if key.startswith(prefix):
                groups[name][key[len(prefix):]] = tensor
                break
        else:
            if key.startswith(_EXTRAS_PREFIX):
                parts.aa2_extras[key[len(_EXTRAS_PREFIX):]] = tensor
            else:
                raise AA2WeightsError(f"{path}: unexpected key {key!r} in an AA2 checkpoint")
    unet = groups["denoising_unet"]
    parts.motion = {k: v for k, v in unet.items() if ".motion_modules." in k}
    parts.denoising_unet = {k: v for k, v in unet.items() if ".motion_modules." not in k}
    for name in ("reference_unet", "vae", "image_encoder"):
        setattr(parts, name, groups[name] or None)
    return config, parts
