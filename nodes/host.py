"""Everything the pack asks of its ComfyUI host, with a fallback for each when there is none.

This is the only module that imports ComfyUI (`folder_paths`, `comfy.model_management`,
`comfy.utils`, `comfy.model_patcher`, `comfy.model_sampling`, `comfy.latent_formats`, `latent_preview`;
a test holds the other node modules to it). Each import is guarded, so the pack imports and its node
functions run in the tests and the CLI, where:

- model folders are `<models dir>/<folder name>`, the models dir coming from `set_models_dir()`
  (tests) or the `AA2_MODELS_DIR` environment variable;
- the device is the CPU, the dtype float32, progress is counted but shown nowhere, and nothing
  is ever interrupted.

Model names in the pack's dropdowns are `"<folder>/<path inside it>"` (`checkpoints/sd15.safetensors`,
`animateanyone2/moore-anyone`): a slot reads several folders (a base model may be a pack
checkpoint, an SD1.5 file or a diffusers folder), and the prefix says where each entry lives.
A name coming from a workflow resolves only inside the folders its slot reads (see `resolve_model`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

import torch

from ..aa2.errors import AA2InputError, AA2WeightsError
from ..aa2.pipeline.offload import OFFLOAD_MODES, choose_offload, part_bytes
from ..aa2.weights.files import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES

try:  # ComfyUI's top-level modules exist only inside a running ComfyUI.
    import folder_paths
except ImportError:
    folder_paths = None
try:
    import comfy.model_management as model_management
except ImportError:
    model_management = None
try:
    import comfy.utils as comfy_utils
except ImportError:
    comfy_utils = None
try:
    import comfy.model_sampling as comfy_model_sampling  # the host's sigma classes, for its SAMPLER functions
except ImportError:
    comfy_model_sampling = None

MODELS_DIR_VARIABLE = "AA2_MODELS_DIR"
PACK_FOLDER = "animateanyone2"
# Folders the pack registers when the host does not have them yet: its own, AnimateDiff-Evolved's
# (so its users' motion modules are found), and the ones SAM2 / Sapiens / DWPose packs keep their files in.
OWN_FOLDERS = (PACK_FOLDER, "animatediff_models", "sam2", "sapiens", "dwpose")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

_models_dir_override: Path | None = None


# ----------------------------------------------------------------------------- model folders


def set_models_dir(path: str | Path | None) -> None:
    """Read model folders from `path/<folder>` instead of the host's (None: back to the host/env)."""
    global _models_dir_override
    _models_dir_override = None if path is None else Path(path)


def register_model_folders() -> None:
    """Make ComfyUI know the pack's folders under `models/` (idempotent; no-op without ComfyUI).

    Through `add_model_folder_path`, so `extra_model_paths.yaml` entries for the same names keep
    working; a name that yaml already created (with no extensions, i.e. every file) is left alone.
    """
    if folder_paths is None:
        return
    for name in OWN_FOLDERS:
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def folder_roots(folder: str) -> list[Path]:
    """The directories that make up model folder `folder`, existing or not (never raises)."""
    models_dir = _models_dir_override
    if models_dir is None and folder_paths is None and os.environ.get(MODELS_DIR_VARIABLE):
        models_dir = Path(os.environ[MODELS_DIR_VARIABLE])
    if models_dir is not None:
        return [models_dir / folder]
    if folder_paths is None:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(folder)]
    except KeyError:
        return []


def list_models(folder: str, files: bool = True, folders: Callable[[Path], bool] | None = None,
                suffix: str = "", extensions: tuple[str, ...] = WEIGHT_SUFFIXES) -> list[str]:
    """Dropdown entries `"<folder>/<relative path>"` under every root of `folder`, sorted.

    files: list files ending in one of `extensions` (weight files: .safetensors, .ckpt, …).
    folders: list directories for which this returns True (a Moore-AnimateAnyone folder, a
    diffusers folder); such a directory is one entry and is not searched further. suffix:
    appended to folder entries (`"/vae"` lists a diffusers folder's VAE as `diffusers/<name>/vae`).
    Linked directories are offered when they match but never entered (see `resolve_model`).
    Never raises: a listing error hides entries, not the node.
    """
    names: set[str] = set()
    for root in folder_roots(folder):
        try:
            for directory, subdirs, filenames in os.walk(root, followlinks=False):
                here = Path(directory)
                keep = []
                for sub in sorted(subdirs):
                    if sub.startswith("."):
                        continue
                    if folders is not None and folders(here / sub):
                        names.add(_entry(folder, root, here / sub) + suffix)
                    elif not (here / sub).is_symlink():
                        keep.append(sub)
                subdirs[:] = keep
                if files:
                    names.update(_entry(folder, root, here / f) for f in filenames
                                 if f.lower().endswith(extensions) and not f.startswith("."))
        except OSError:
            continue
    return sorted(names, key=str.lower)


def resolve_model(name: str, slot: Mapping[str, str]) -> Path:
    """The path of dropdown entry `name`, found only inside the model folders of `slot`.

    slot: the folders this input reads, each with what it holds there, for messages
    (`{"checkpoints": "SD1.5 checkpoints", ...}`).
    Refused, with a message naming the folders to use: absolute paths, `..`, a first component that
    is not one of the slot's folders, and a path that reaches outside its folder through a linked
    directory on the way. The entry itself may be a link (a weight file or folder the user linked
    in): only the user can make one, whereas a shared workflow can only name one.
    """
    reads = "; ".join(f"models/{folder} ({what})" for folder, what in slot.items())
    if not isinstance(name, str) or not name.strip():
        raise AA2WeightsError(f"No model chosen: pick one from the list. This input reads {reads}.")
    text = name.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or ".." in parts:
        raise AA2WeightsError(
            f"'{name}' is not a model name: names are '<folder>/<file>' inside ComfyUI's model folders, "
            "never absolute or with '..', so a shared workflow cannot read other files. Pick one from "
            f"the list; this input reads {reads}."
        )
    if len(parts) < 2 or parts[0] not in slot:
        raise AA2WeightsError(
            f"'{name}' is not in a folder this input reads. It reads {reads}, named '<folder>/<file>' "
            "as the list shows. Pick one from the list."
        )
    folder, inner = parts[0], Path(*parts[1:])
    roots = folder_roots(folder)
    for root in roots:
        candidate = root / inner
        if not os.path.lexists(candidate):
            continue
        real_root = Path(os.path.realpath(root))
        real_parent = Path(os.path.realpath(candidate.parent))
        if real_parent != real_root and real_root not in real_parent.parents:
            raise AA2WeightsError(
                f"'{name}' leads outside models/{folder} through a linked folder ({candidate.parent} -> "
                f"{real_parent}). Link or copy the file itself into models/{folder}, or add its "
                "directory to extra_model_paths.yaml under this folder name."
            )
        if not candidate.exists():
            raise AA2WeightsError(f"'{name}' is a broken link in models/{folder} ({candidate}).")
        return candidate
    looked = ", ".join(str(r) for r in roots) or (
        f"nowhere: no models folder is set; run inside ComfyUI or set {MODELS_DIR_VARIABLE}")
    raise AA2WeightsError(
        f"'{name}' was not found in models/{folder} (looked in {looked}). Put it there "
        f"(models/{folder} holds {slot[folder]}), then refresh the page and pick it from the list."
    )


def resolve_optional(name: str, slot: Mapping[str, str], default: str) -> Path | None:
    """`resolve_model`, except that the `default` entry ("from base") gives None."""
    return None if name == default else resolve_model(name, slot)


def files_signature(paths: Iterable[Path | None]) -> str:
    """Sizes and modification times of `paths` (files, or every file in a folder), to notice a change."""
    stamps = []
    for path in paths:
        if path is None:
            continue
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        stamps += [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in found if p.is_file()]
    return "|".join(stamps)


def _entry(folder: str, root: Path, path: Path) -> str:
    return "/".join((folder, *path.relative_to(root).parts))


# ----------------------------------------------------------------------------- devices and dtypes


def torch_device() -> torch.device:
    """Where models run: the host's device, or the CPU."""
    return model_management.get_torch_device() if model_management else torch.device("cpu")


def offload_device() -> torch.device:
    """Where models wait between runs: the host's offload device, or the CPU."""
    return model_management.unet_offload_device() if model_management else torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where IMAGE / MASK / LATENT outputs live between nodes: the host's choice, or the CPU."""
    return model_management.intermediate_device() if model_management else torch.device("cpu")


def preferred_dtype(device: torch.device | None = None) -> torch.dtype:
    """fp16 where the host says it is fast and safe on `device`, else bf16 likewise, else fp32.

    SD1.5 was trained in fp32 and runs in fp16 as a matter of course; the CPU always gets fp32.
    """
    if model_management is None:
        return torch.float32
    device = device if device is not None else torch_device()
    if model_management.should_use_fp16(device):
        return torch.float16
    if model_management.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


def free_memory() -> None:
    """Give cached accelerator memory back (the host's way, or nothing without a host)."""
    if model_management is not None:
        model_management.soft_empty_cache()


def make_room(needed: int, device: torch.device) -> int | None:
    """Ask the host to unload other models until `needed` bytes are free on `device` (as its own
    loader does before loading one); the bytes then free, or None without a host."""
    if model_management is None:
        return None
    model_management.free_memory(needed, device)
    return int(model_management.get_free_memory(device))


@dataclass
class HostedModel:
    """A model handed between nodes, with what the host needs to move it to and from the GPU.

    ComfyUI's model manager keeps only a weak reference to a `ModelPatcher`, so the object a loader
    node returns has to own it. Without ComfyUI there is no patcher and `ready()` moves the model.
    """

    model: torch.nn.Module
    dtype: torch.dtype
    load_device: torch.device
    offload_device: torch.device
    patcher: Any = None
    info: dict[str, str] = field(default_factory=dict)

    def ready(self) -> torch.nn.Module:
        """The model on its load device (the host may first unload others to make room)."""
        if self.patcher is not None:
            model_management.load_models_gpu([self.patcher], force_full_load=True)
            return self.model
        return self.model.to(self.load_device)

    def for_render(self, offload: str, working: int) -> tuple[torch.nn.Module, str]:
        """The model and the offload mode to render with (`aa2.pipeline.offload`).

        "auto" is "none" without a host, on a CPU, or when this model is already loaded; else the host
        makes room and "none" is taken if every part and `working` bytes of activations fit in what is
        free, "model" if not. "none": the whole model on the load device (`ready()`). "model": the model
        stays on the offload device, out of the host's records, for the pipeline to move part by part.
        """
        if offload != "auto" and offload not in OFFLOAD_MODES:
            raise AA2InputError(f"offload must be auto, {', '.join(OFFLOAD_MODES)}; got {offload!r}.")
        parts = part_bytes(self.model)
        if offload == "auto":
            if self.patcher is None or self.load_device.type == "cpu" or self._loaded():
                offload = "none"
            else:
                offload = choose_offload(make_room(sum(parts.values()) + working, self.load_device), parts, working)
        if offload == "none":
            return self.ready(), offload
        if self._loaded():
            self.release()
        make_room(max(parts.values()) + working, self.load_device)
        return self.model, offload

    def _loaded(self) -> bool:
        """Whether the host holds this model on its load device now."""
        return self.patcher is not None and any(
            loaded.model is self.patcher for loaded in model_management.current_loaded_models)

    def release(self) -> None:
        """Back to the offload device (after sampling, when the user asks for it)."""
        if self.patcher is not None:
            # Through the manager's own record, so it does not think the model is still loaded.
            loaded = model_management.current_loaded_models
            for i in reversed(range(len(loaded))):
                if loaded[i].model is self.patcher:
                    loaded.pop(i).model_unload()
        else:
            self.model.to(self.offload_device)
        free_memory()


def host_model(model: torch.nn.Module, dtype: torch.dtype, info: dict[str, str] | None = None) -> HostedModel:
    """Wrap a loaded model for the host: cast to `dtype`, park on the offload device, make a patcher."""
    load, offload = torch_device(), offload_device()
    model = model.to(device=offload, dtype=dtype)
    patcher = None
    if model_management is not None:
        try:
            from comfy.model_patcher import ModelPatcher
        except ImportError:
            ModelPatcher = None
        if ModelPatcher is not None:
            patcher = ModelPatcher(model, load_device=load, offload_device=offload)
    return HostedModel(model, dtype, load, offload, patcher, dict(info or {}))


# ----------------------------------------------------------------------------- progress, interruption


class Progress:
    """A progress bar in the host's UI, or a plain counter without one.

    `update_absolute` under ComfyUI also raises the host's interrupt exception when the user
    pressed Cancel (the server's progress hook checks it), so callers need nothing extra.
    """

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = int(total)
        self.current = 0
        self._bar = comfy_utils.ProgressBar(self.total, node_id=node_id) if comfy_utils else None

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.current, self.total, preview)

    def update(self, steps: int = 1, preview: Any = None) -> None:
        self.update_absolute(self.current + steps, preview=preview)


def interrupted() -> bool:
    """Whether the user asked the host to stop (never, without a host)."""
    return bool(model_management and model_management.processing_interrupted())


def check_interrupted() -> None:
    """Raise the host's own interrupt exception if the user pressed Cancel (no-op without a host).

    The host's exception, not ours: ComfyUI treats it as a cancelled run rather than an error.
    """
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


def latent_previewer(device: torch.device | None = None) -> Callable[[torch.Tensor], Any] | None:
    """A function from SD1.5 latents `[1, 4, h, w]` to the preview `Progress.update` takes, or None.

    None when there is no host or it runs without `--preview-method` (its default).
    """
    try:
        import comfy.latent_formats
        import latent_preview
    except ImportError:
        return None
    previewer = latent_preview.get_previewer(device or torch_device(), comfy.latent_formats.SD15())
    if previewer is None:
        return None
    return lambda x0: previewer.decode_latent_to_preview_image("JPEG", x0)


register_model_folders()
