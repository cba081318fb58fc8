"""Resumable training checkpoints, written atomically (issue 6: "a crash mid-write never leaves a
broken latest").

Layout under `RUN_DIR/checkpoints/`:

    step-00001000/
        trainable.safetensors   the trainable parameters (float32 masters), AA2Model names
        optimizer.pt            optimizer state (tensors and numbers only: loads with weights_only)
        lr_scheduler.pt         learning-rate scheduler state
        grad_scaler.pt          fp16 only
        rng-rank{R}.json        each process's Python / NumPy / torch (CPU and CUDA) RNG states
        state.json              step, samples consumed (the data position), world size, config
    latest                      the name of the newest complete checkpoint, written last

A checkpoint is assembled in a hidden temporary folder, flushed to disk, then renamed into place
(a rename is atomic on POSIX); `latest` is replaced the same way only after that. A crash at any
moment leaves `latest` naming a complete checkpoint. Frozen weights are not stored: they are the
starting weights, which the run reads again.

Our own small files instead of accelerate's `save_state`: it would store every frozen weight too,
and its RNG loading silently skips a file it cannot read. For DeepSpeed and FSDP, whose optimizer
state is sharded, `train.train` uses accelerate's `save_state`/`load_state` inside the same folder
and the same atomic rename.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from aa2.errors import AA2Error

CHECKPOINTS = "checkpoints"
LATEST = "latest"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint `latest` names, or None for a run without one."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise AA2Error(f"{pointer} names {path.name}, which is incomplete or missing: point it at another "
                       f"step-* folder in {pointer.parent} (or delete it to start over)")
    return path


def staging_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f".tmp-{checkpoint_name(step)}"


def write_rng_state(folder: Path, rank: int) -> None:
    state = {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    (folder / f"rng-rank{rank}.json").write_text(json.dumps(state))


def read_rng_state(folder: Path, rank: int) -> bool:
    """Restore this process's RNG states; False when the checkpoint has none for this rank."""
    path = folder / f"rng-rank{rank}.json"
    if not path.is_file():
        return False
    state = json.loads(path.read_text())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    return True


def write_main_files(folder: Path, trainable: dict[str, torch.Tensor], optimizer: Any, lr_scheduler: Any,
                     state: dict[str, Any], scaler: Any = None) -> None:
    """The rank-0 part of a checkpoint (replicated weights and optimizer under DDP)."""
    if trainable:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in trainable.items()},
                  str(folder / "trainable.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), folder / "lr_scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), folder / "grad_scaler.pt")
    (folder / "state.json").write_text(json.dumps(state, indent=1))


def publish(run_dir: str | Path, step: int, keep: int = 0) -> Path:
    """Flush the staged checkpoint, rename it into place, then point `latest` at it; prune old ones."""
    folder = staging_dir(run_dir, step)
    root = folder.parent
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(folder)
    final = root / checkpoint_name(step)
    if final.exists():  # a re-run of this step (never the one `latest` names: that run moved past it)
        trash = root / f".old-{final.name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, final)
    _fsync(root)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    _fsync(pointer)
    os.replace(pointer, root / LATEST)
    _fsync(root)
    if keep > 0:
        for old in sorted(root.glob("step-*"))[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainable(folder: Path, expected: dict[str, torch.nn.Parameter]) -> None:
    """Copy the stored trainable weights into `expected` (name -> parameter); names must match."""
    stored = load_file(str(folder / "trainable.safetensors"))
    missing, extra = set(expected) - set(stored), set(stored) - set(expected)
    if missing or extra:
        raise AA2Error(
            f"{folder} was written for other trainable parameters ({len(missing)} missing, {len(extra)} unexpected, "
            f"e.g. {sorted(missing or extra)[:2]}): resume with the recipe and stage it was started with"
        )
    with torch.no_grad():
        for name, parameter in expected.items():
            parameter.copy_(stored[name].to(parameter.device, parameter.dtype))


def load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)
