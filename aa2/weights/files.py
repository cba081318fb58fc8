"""Reading and writing weight files safely: the one place that opens `.safetensors` and pickles.

Pickled checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`) can run arbitrary code when unpickled, and
ComfyUI users download them from anywhere. They are opened with `torch.load(weights_only=True)`
only, whose unpickler accepts tensors and plain containers and refuses everything else *before*
building it. There is deliberately no "trust this file" switch: such a file should be converted to
`.safetensors` once, by someone who trusts it.

Every failure becomes an `AA2WeightsError` naming the file, because in ComfyUI the message is all a
user sees, and says which failure it is: an empty file, a file that is no checkpoint at all (a text
or HTML page saved under a weight file's name, random bytes), a truncated or corrupt one, a pickle
that holds Python objects (the only case called a security risk), or weights that are NaN or inf.
`load_strict` adds the misfits only the receiving module can tell: keys, shapes, and integer tensors
where the module holds floating-point ones (or the reverse).
"""

from __future__ import annotations

import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from ..checks import is_finite
from ..errors import AA2WeightsError, worded

StateDict = dict[str, torch.Tensor]

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "module")  # Lightning / DeepSpeed-style wrappers around the weights
# How `torch.save(..., _use_new_zipfile_serialization=False)` files begin: the pickled magic number.
# Every other file torch.load reads is a zip archive.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
# Globals a torch checkpoint's pickle names; anything else in a refused pickle is a Python object.
_TORCH_GLOBALS = ("torch", "collections", "numpy", "_codecs", "builtins")


def read_state_dict(path: str | Path, wrappers: tuple[str, ...] = ()) -> StateDict:
    """All tensors of a weight file, on the CPU, with wrappers (`state_dict`, `module`) removed.

    `wrappers` names more keys a format wraps its weights in (Meta's SAM2 files hold `{"model": ...}`);
    they are opt-in so that a pack file with a top-level `model` key is not silently unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(
            f"weight file not found: {path}. Check the file name"
            + worded(comfyui=", and that it is in the folder the node looks in.", cli=" and the folder.")
        )
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise AA2WeightsError(
            f"{path}: unknown weight file type {suffix!r}; this pack reads "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}."
        )
    if path.stat().st_size == 0:
        raise _empty(path)
    if suffix in SAFETENSORS_SUFFIXES or _is_safetensors(path):  # safetensors renamed .pt/.bin read as what they are
        loaded: object = _read_safetensors(path)
    else:
        loaded = _read_pickle(path)
    return check_finite(_plain_state_dict(loaded, path, _WRAPPER_KEYS + wrappers), str(path))


def check_finite(state: StateDict, source: str) -> StateDict:
    """Refuse weights holding NaN or inf: a model built from them renders every frame NaN (black)."""
    bad = [key for key, tensor in state.items() if not is_finite(tensor)]
    if bad:
        raise AA2WeightsError(
            f"{source} holds NaN or infinite weights in {len(bad)} of {len(state)} tensors (e.g. {bad[:3]}); "
            "a model built from it would render only NaN frames. The file is damaged, or was saved from a "
            "training run that diverged: use an earlier checkpoint or download it again."
        )
    return state


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` strings of a `.safetensors` file (empty if it has none), without its tensors."""
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(f"weight file not found: {path}")
    if path.stat().st_size == 0:
        raise _empty(path)
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
    # safetensors refuses shared or non-contiguous storage; a copy per tensor keeps callers simple
    plain = {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(plain, temporary, metadata=dict(metadata) if metadata else None)
    return Path(path)


def write_pickle(path: str | Path, payload: object) -> Path:
    """`torch.save` atomically (temporary file, then `os.replace`), for formats that are pickles:
    original SD `.ckpt`, AnimateDiff `.ckpt`, Moore-AnimateAnyone `.pth`. Only plain containers of
    tensors are written, so the files load with `weights_only=True`."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


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
        lines.append(f"Check that the file is a {what} of the kind this "
                     + worded(comfyui="slot expects.", cli="option expects."))
        raise AA2WeightsError("\n".join(lines))
    check_dtype_kinds(expected, state, what, source)
    module.load_state_dict(dict(state), strict=True, assign=assign)
    return module


def check_dtype_kinds(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str, source: str
) -> None:
    """Refuse tensors whose kind (floating point or integer) differs from the module's own.

    torch would either fail with "Only Tensors of floating point and complex dtype can require
    gradients" (`assign=True`), naming neither the file nor the tensor, or, worse, silently copy
    integers into a float parameter (`assign=False`) and render with them. The kind is compared, not
    the dtype: fp16 or bf16 files feed fp32 modules all the time, and integer buffers such as CLIP's
    `position_ids` legitimately arrive as integers.
    """
    wrong = [key for key in expected if key in state and _is_float(state[key]) != _is_float(expected[key])]
    if not wrong:
        return
    lines = [f"{source}: {len(wrong)} tensor(s) for the {what} hold the wrong kind of number:"]
    for key in wrong[:3]:
        needed = "floating-point" if _is_float(expected[key]) else f"integer ({_dtype_name(expected[key])})"
        lines.append(f"  the {what}'s {key} is {_dtype_name(state[key])}, where it needs {needed} values")
    lines.append(
        "The file was converted or exported wrongly. Re-export (or convert) its weights as float16 or float32, "
        "leaving only integer buffers such as position_ids as integers, or download the file again."
    )
    raise AA2WeightsError("\n".join(lines))


def _is_float(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _read_safetensors(path: Path) -> StateDict:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, error) from error


def _read_pickle(path: Path) -> object:
    try:
        with warnings.catch_warnings():  # a non-checkpoint is reported below, not as torch's protocol warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # torch.load on arbitrary bytes raises anything (KeyError, IndexError, ...)
        code = _refused_code(path, error)
        if code is not None:
            raise AA2WeightsError(
                f"{path} was refused and NOT executed: it is a pickle that contains more than plain tensors "
                f"(Python objects whose loading could run code; {code}). If you trust its source, convert "
                "it to .safetensors once (load it in a trusted Python session and save the state dict with "
                "safetensors.torch.save_file), or download a .safetensors version of the same weights."
            ) from error
        if not _is_torch_container(path):
            raise _not_a_checkpoint(path) from error
        raise _corrupt(path, error) from error


def _refused_code(path: Path, error: BaseException) -> str | None:
    """What Python object the file's pickle names, if that is why it was refused; else None.

    torch's weights-only unpickler names a refused global in its message; a pickle it could not even
    parse (a raw protocol-4 pickle, say) is scanned opcode by opcode, without running anything, and
    counts as code only if it is a complete pickle naming a global outside torch's own."""
    if isinstance(error, pickle.UnpicklingError):
        for line in str(error).splitlines():
            if "GLOBAL" in line:
                return line.strip()[:300]
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                with archive.open(name) as stream:
                    names = _pickled_globals(stream)
        else:
            with path.open("rb") as stream:
                names = _pickled_globals(stream)
    except Exception:  # not a well-formed pickle: corrupt, not code
        return None
    foreign = [n for n in names if not n.split(".")[0].split(" ")[0] in _TORCH_GLOBALS]
    return f"it names {', '.join(foreign[:3])}" if foreign else None


def _pickled_globals(stream) -> list[str]:
    """The globals named by the first pickle in `stream`; raises if it is not a complete pickle."""
    names, strings, stopped = [], [], False
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            names.append(str(arg))
        elif opcode.name == "STACK_GLOBAL":
            names.append(" ".join(strings[-2:]) if len(strings) >= 2 else "a global")
        elif isinstance(arg, str):
            strings.append(arg)
        if opcode.name == "STOP":
            stopped = True
    if not stopped:
        raise ValueError("no STOP opcode")
    return names


def _is_torch_container(path: Path) -> bool:
    """Whether the file begins as a `torch.save` file does (a zip archive, or the legacy magic number);
    the start, not the zip directory at the end, so a truncated checkpoint still counts."""
    with path.open("rb") as stream:
        head = stream.read(len(_LEGACY_TORCH_MAGIC))
    return head == _LEGACY_TORCH_MAGIC or head.startswith(b"PK\x03\x04")


def _is_safetensors(path: Path) -> bool:
    """A safetensors file begins with its JSON header's length (8 bytes, little-endian), then `{`."""
    with path.open("rb") as stream:
        head = stream.read(9)
    return len(head) == 9 and head[8:] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _not_a_checkpoint(path: Path) -> AA2WeightsError:
    with path.open("rb") as stream:
        head = stream.read(16)
    text = all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head)
    kind = "it looks like text" if text else "its bytes are in no format torch writes"
    return AA2WeightsError(
        f"{path} ({path.stat().st_size:,} bytes) is not a PyTorch checkpoint: it is neither a zip archive nor a "
        f"torch pickle ({kind}; it starts with {head!r}), so it is corrupt or was saved under the wrong name "
        "(a download that stored an error page does this). Download it again, and compare its size or hash with "
        "the source's."
    )


def _empty(path: Path) -> AA2WeightsError:
    return AA2WeightsError(f"{path} is empty (0 bytes): the download or copy did not finish. Download it again.")


def _corrupt(path: Path, error: BaseException) -> AA2WeightsError:
    size = path.stat().st_size if path.exists() else 0
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return AA2WeightsError(
        f"{path} ({size:,} bytes) cannot be read; it looks truncated or corrupt ({reason}). "
        "Download it again, and compare its size or hash with the source's."
    )


def _plain_state_dict(loaded: object, path: Path, wrappers: tuple[str, ...]) -> StateDict:
    """Unwrap `{"state_dict": {...}}`-style files and insist on `{str: Tensor}`."""
    while isinstance(loaded, Mapping):
        inner = next((loaded[k] for k in wrappers if isinstance(loaded.get(k), Mapping)), None)
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
