"""The prepared-data layout on disk: one folder per video, written by `train.prepare`, read by
`train.dataset`.

    OUT_DIR/
      prepare.log                 every run's log lines (appended)
      <video_id>/
        frames.mp4                the video at the prepared size and rate, RGB, mp4v (or frames/ PNGs)
        character_mask.npz        M_c, bool [F, H, W] as packed bits, in chunks of CHUNK frames
        object_mask.npz           union of the interacting objects' masks, same format (optional)
        pose.json                 POSE_KEYPOINT, one dict per frame, pixels of its canvas (optional)
        depth.npz                 nearness, float16 [F, H, W] in 0..1, near = 1, per frame (optional)
        meta.json                 written last, atomically: the video is complete when it exists

Why chunks: an `.npz` is a zip whose members load one at a time, so storing every CHUNK frames as
its own compressed member lets the dataset read a 16-frame clip of a 900-frame video without
inflating the rest. Masks are packed 8 pixels a byte (`np.packbits` along the width) before
compression.

Depth is stored already converted to nearness and normalised per frame (min → 0, max → 1), the
convention the training config's `depth_convention: inverse` expects: `structured_depth`
renormalises inside the skeleton per frame, and an affine map per frame does not change that result,
so nothing the model sees is lost. float16 keeps ~3 significant digits, far finer than a person's
depth range within a frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from aa2.errors import AA2InputError
from aa2.video_io import IMAGE_SUFFIXES, natural_key

FORMAT_VERSION = 1
CHUNK = 32  # frames per npz member; a 16-frame clip touches at most two members
META = "meta.json"
FRAMES_VIDEO = "frames.mp4"
FRAMES_FOLDER = "frames"
CHARACTER_MASK = "character_mask.npz"
OBJECT_MASK = "object_mask.npz"
POSE = "pose.json"
DEPTH = "depth.npz"
ALL_FILES = (FRAMES_VIDEO, FRAMES_FOLDER, CHARACTER_MASK, OBJECT_MASK, POSE, DEPTH, META)


# --- json ---------------------------------------------------------------------------------


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON through a temporary file and `os.replace`, so `path` is either absent or whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> object:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- chunked arrays -----------------------------------------------------------------------


def write_masks(path: Path, masks: np.ndarray) -> None:
    """bool `[F, H, W]` → packed, chunked, compressed npz."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise AA2InputError(f"masks to store must be [F, H, W]; got shape {masks.shape}.")
    _write_chunks(path, np.packbits(masks, axis=-1), masks.shape, "bits")


def write_depth(path: Path, nearness: np.ndarray) -> None:
    """float `[F, H, W]` in 0..1 (near = 1) → float16, chunked, compressed npz."""
    nearness = np.asarray(nearness)
    if nearness.ndim != 3:
        raise AA2InputError(f"depth to store must be [F, H, W]; got shape {nearness.shape}.")
    _write_chunks(path, np.clip(nearness, 0, 1).astype(np.float16), nearness.shape, "float16")


def read_masks(path: Path, indices: Sequence[int]) -> np.ndarray:
    """The stored masks at frame `indices`, bool `[len(indices), H, W]`."""
    with np.load(path) as data:
        shape = tuple(int(v) for v in data["shape"])
        rows = _read_rows(data, indices, shape[0])
    return np.unpackbits(rows, axis=-1, count=shape[2]).astype(bool)


def read_depth(path: Path, indices: Sequence[int]) -> np.ndarray:
    """The stored nearness at frame `indices`, float32 `[len(indices), H, W]` in 0..1."""
    with np.load(path) as data:
        shape = tuple(int(v) for v in data["shape"])
        return _read_rows(data, indices, shape[0]).astype(np.float32)


def stored_shape(path: Path) -> tuple[int, int, int]:
    """`(F, H, W)` of a stored mask or depth file, reading only its header member."""
    with np.load(path) as data:
        return tuple(int(v) for v in data["shape"])


def _write_chunks(path: Path, array: np.ndarray, shape: tuple[int, ...], kind: str) -> None:
    members = {f"c{i // CHUNK:06d}": array[i : i + CHUNK] for i in range(0, len(array), CHUNK)}
    tmp = path.with_name(f".{path.stem}.tmp.npz")  # savez appends .npz to names without it
    np.savez_compressed(tmp, shape=np.asarray(shape, dtype=np.int64), kind=np.asarray(kind), **members)
    os.replace(tmp, path)


def _read_rows(data, indices: Sequence[int], count: int) -> np.ndarray:
    indices = [int(i) for i in indices]
    if any(not 0 <= i < count for i in indices):
        raise AA2InputError(f"frame indices {indices} fall outside the stored {count} frames.")
    chunks = {c: data[f"c{c:06d}"] for c in sorted({i // CHUNK for i in indices})}
    return np.stack([chunks[i // CHUNK][i % CHUNK] for i in indices])


# --- frames -------------------------------------------------------------------------------


def write_frames(folder: Path, frames: np.ndarray, fps: float, fmt: str = "mp4") -> str:
    """RGB uint8 `[F, H, W, 3]` → `frames.mp4` (mp4v) or `frames/00000.png …` in `folder`.

    Returns the name written (relative to `folder`). H and W must be even for mp4v.
    """
    if fmt == "png":
        out = folder / FRAMES_FOLDER
        out.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            ok, data = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
            if not ok:
                raise OSError(f"could not encode frame {i} of {folder.name} as PNG")
            data.tofile(str(out / f"{i:05d}.png"))
        return FRAMES_FOLDER
    path = folder / FRAMES_VIDEO
    tmp = folder / f".tmp.{FRAMES_VIDEO}"  # keep the suffix: OpenCV picks the container from it
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    try:
        if not writer.isOpened():
            raise OSError(f"OpenCV could not open an mp4v writer for {tmp}; use --frames-format png")
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()
    os.replace(tmp, path)
    return FRAMES_VIDEO


def read_frames(folder: Path, name: str, indices: Sequence[int]) -> np.ndarray:
    """Stored frames at increasing `indices`, RGB uint8 `[len(indices), H, W, 3]`.

    A video is entered with a seek to the first index and then decoded forward, grabbing (not
    converting) the frames between indices. OpenCV seeks in the mp4v files `write_frames` makes are
    frame-exact (their first frame is a keyframe and FFmpeg decodes forward from the previous
    keyframe); `tests/test_prepare.py` checks a seeked clip against a sequential decode.
    """
    indices = [int(i) for i in indices]
    if indices != sorted(indices) or not indices:
        raise AA2InputError(f"frame indices must be non-empty and increasing; got {indices}.")
    path = folder / name
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        out = []
        for i in indices:
            image = cv2.imdecode(np.fromfile(str(files[i]), dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise AA2InputError(f"could not read {files[i]}")
            out.append(image[..., ::-1])
        return np.stack(out)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AA2InputError(f"could not open {path}; prepare this video again (delete its meta.json)")
        if indices[0] > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, indices[0])
        out, position = [], indices[0]
        for i in indices:
            while position < i:
                if not capture.grab():
                    break
                position += 1
            ok, frame = capture.read()
            if not ok:
                raise AA2InputError(f"{path} ended before frame {i}; prepare this video again (delete its meta.json)")
            position += 1
            out.append(frame[..., ::-1])
    finally:
        capture.release()
    return np.ascontiguousarray(np.stack(out))
