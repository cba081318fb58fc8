"""Reading and writing weight files safely: the one place that opens `.safetensors` and pickles.

Pickled checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`) can run arbitrary code when unpickled, and
ComfyUI users download them from anywhere. They are opened with `torch.load(weights_only=True)`
only, whose unpickler accepts tensors and plain containers and refuses everything else *before*
building it. There is deliberately no "trust this file" switch: such a file should be converted to
`.safetensors` once, by someone who trusts it.

Every failure becomes an `AA2WeightsError` naming the file, because in ComfyUI the message is all a
user sees.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import AA2WeightsError

StateDict = dict[str, torch.Tensor]

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "module")  # Lightning / DeepSpeed-style wrappers around the weights


def read_state_dict(path: str | Path) -> StateDict:
    """All tensors of a weight file, on the CPU, with wrappers (`state_dict`, `module`) removed."""
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(
            f"weight file not found: {path}. Check the file name, and that it is in the folder the "
            "node looks in."
        )
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        loaded: object = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        loaded = _read_pickle(path)
    else:
        raise AA2WeightsError(
            f"{path}: unknown weight file type {suffix!r}; this pack reads "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}."
        )
    return _plain_state_dict(loaded, path)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` strings of a `.safetensors` file (empty if it has none), without its tensors."""
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(f"weight file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, error) from error


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write `tensors` atomically: a temporary file in the same folder, then `os.replace`.

    A crash or a full disk mid-write leaves the previous file (or none), never half a file that a
    later run would report as corrupt.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; a copy per tensor keeps callers simple
    plain = {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in tensors.items()}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(plain, temporary, metadata=dict(metadata) if metadata else None)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_pickle(path: str | Path, payload: object) -> Path:
    """`torch.save` atomically (temporary file, then `os.replace`), for formats that are pickles:
    original SD `.ckpt`, AnimateDiff `.ckpt`, Moore-AnimateAnyone `.pth`. Only plain containers of
    tensors are written, so the files load with `weights_only=True`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], what: str, source: str, assign: bool = True
) -> nn.Module:
    """Load `state` into `module` strictly, explaining any misfit in words.

    torch's own message lists hundreds of keys and never names the file; this one shows a few
    missing, unexpected and mis-shaped keys, the file, and what it should have been. `assign=True`
    keeps the given tensors, which is what a module built on the meta device needs.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        lines = [f"{source} does not fit the {what}:"]
        if missing:
            lines.append(f"  {len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        for key in wrong[:3]:
            lines.append(f"  {key}: file has {tuple(state[key].shape)}, the {what} needs {tuple(expected[key].shape)}")
        lines.append(f"Check that the file is a {what} of the kind this slot expects.")
        raise AA2WeightsError("\n".join(lines))
    module.load_state_dict(dict(state), strict=True, assign=assign)
    return module


def _read_safetensors(path: Path) -> StateDict:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, error) from error


def _read_pickle(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            detail = str(error).strip().splitlines()[-1][:300]
            raise AA2WeightsError(
                f"{path} was refused and NOT executed: it is a pickle that contains more than plain tensors "
                f"(Python objects whose loading could run code; {detail}). If you trust its source, convert "
                "it to .safetensors once (load it in a trusted Python session and save the state dict with "
                "safetensors.torch.save_file), or download a .safetensors version of the same weights."
            ) from error
        raise _corrupt(path, error) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise _corrupt(path, error) from error


def _corrupt(path: Path, error: BaseException) -> AA2WeightsError:
    size = path.stat().st_size if path.exists() else 0
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return AA2WeightsError(
        f"{path} ({size:,} bytes) cannot be read; it looks truncated or corrupt ({reason}). "
        "Download it again, and compare its size or hash with the source's."
    )


def _plain_state_dict(loaded: object, path: Path) -> StateDict:
    """Unwrap `{"state_dict": {...}}`-style files and insist on `{str: Tensor}`."""
    while isinstance(loaded, Mapping):
        inner = next((loaded[k] for k in _WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, Mapping):
        raise AA2WeightsError(
            f"{path} holds a {type(loaded).__name__}, not a dictionary of named tensors; it is not a weight "
            "file this pack can read."
        )
    if not loaded:
        raise AA2WeightsError(f"{path} holds no tensors at all (an empty dictionary): re-download or re-export it.")
    bad = [str(k) for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        kinds = sorted({type(loaded[k]).__name__ for k in loaded if str(k) in bad[:5]})
        raise AA2WeightsError(
            f"{path} mixes tensors with other values ({len(bad)} entries such as {bad[:3]}, of type "
            f"{', '.join(kinds)}); expected a plain state dict of named tensors. Save only the model's "
            "state_dict()."
        )
    return dict(loaded)
