"""Training clips read from the prepared layout (`train/store.py`, written by `train.prepare`).

Each item is one clip of `clip_length` frames, `stride` apart, of one video, with every
annotation resized and centre-cropped identically to `size` = (H, W): the short side is scaled to
cover the target (frames: area filter when shrinking, bilinear when enlarging; masks: nearest, so
they stay 0/1; depth: bilinear), then the centre H × W is cut. The skeleton is *rendered* from the
stored keypoints at the scaled size and cropped with the rest, so its lines have the thickness
DWPose draws at the training resolution instead of being blurred by a resize (paper §3.4 feeds the
pose guider rendered skeletons).

Which clips. The list of (video, start) pairs is fixed when the dataset is built, so item i is the
same clip in every process and after every `--resume`:
- `clips_per_video=None`: every non-overlapping clip, tiled from frame 0 (starts 0, span, 2·span,
  … with span = (clip_length − 1)·stride + 1). Evaluation uses this: it is the same frames for
  every run and needs no seed.
- `clips_per_video=k`: k starts drawn uniformly from [0, frames − span] by a generator seeded from
  `seed` and the video's id (CRC32), so adding or removing other videos leaves a video's clips as
  they were.
Videos are ordered by id (natural order). Videos shorter than one span, or without a character
mask or skeleton (both needed for training), are left out with a logged note, listed in `skipped`.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from einops import rearrange

from aa2.conditioning.skeleton import render_skeleton
from aa2.errors import AA2InputError
from aa2.video_io import natural_key

from . import store

log = logging.getLogger("train.dataset")
REQUIRED = ("character_mask", "pose")


class PreparedClips(torch.utils.data.Dataset):
    """Clips of prepared videos under `root`: see the module docstring for the sample dict."""

    def __init__(self, root: str | Path, clip_length: int = 16, size: tuple[int, int] = (512, 512),
                 stride: int = 1, seed: int = 0, clips_per_video: int | None = None) -> None:
        self.root = Path(root)
        self.clip_length, self.stride, self.seed = int(clip_length), int(stride), int(seed)
        self.size = (int(size[0]), int(size[1]))
        if self.clip_length < 1 or self.stride < 1 or min(self.size) < 1:
            raise AA2InputError(f"clip_length, stride and size must be positive; got {clip_length}, {stride}, {size}")
        if clips_per_video is not None and clips_per_video < 1:
            raise AA2InputError(f"clips_per_video must be None (all non-overlapping clips) or ≥ 1; got {clips_per_video}")
        if not self.root.is_dir():
            raise AA2InputError(f"prepared data folder {self.root} does not exist; run python -m train.prepare first")
        self.span = (self.clip_length - 1) * self.stride + 1
        self.videos: list[dict] = []
        self.skipped: dict[str, str] = {}
        self.clips: list[tuple[int, int]] = []  # (index into self.videos, first frame)
        for folder in sorted((p for p in self.root.iterdir() if (p / store.META).is_file()), key=natural_key):
            meta = store.read_json(folder / store.META)
            reason = self._unusable(meta)
            if reason:
                self.skipped[folder.name] = reason
                log.warning("%s: left out: %s", folder.name, reason)
                continue
            meta["folder"] = folder
            for start in self._starts(folder.name, int(meta["frames"]), clips_per_video):
                self.clips.append((len(self.videos), start))
            self.videos.append(meta)
        if not self.clips:
            why = "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "no folder with a meta.json"
            raise AA2InputError(f"no training clips in {self.root} ({why})")

    def _unusable(self, meta: dict) -> str | None:
        if meta.get("format", 0) > store.FORMAT_VERSION:
            return f"prepared with a newer layout (format {meta.get('format')}); update the pack"
        missing = [k for k in REQUIRED if k not in meta.get("annotations", {})]
        if missing:
            return f"no {' or '.join(missing)} (prepare it with --masks/--sam2 and --poses/--sapiens-pose)"
        if int(meta["frames"]) < self.span:
            return f"{meta['frames']} frames, shorter than one clip of {self.clip_length} frames at stride {self.stride}"
        return None

    def _starts(self, video_id: str, frames: int, per_video: int | None) -> list[int]:
        last = frames - self.span
        if per_video is None:
            return list(range(0, last + 1, self.span))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(video_id.encode("utf-8")))
        return sorted(torch.randint(0, last + 1, (per_video,), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, start = self.clips[index]
        meta = self.videos[video]
        folder: Path = meta["folder"]
        indices = [start + j * self.stride for j in range(self.clip_length)]
        notes = meta["annotations"]
        h, w = int(meta["height"]), int(meta["width"])
        (rh, rw), (top, left) = _cover(h, w, self.size)
        height, width = self.size
        crop = (slice(top, top + height), slice(left, left + width))

        pixels = store.read_frames(folder, meta["frames_file"], indices)  # uint8 [F, h, w, 3]
        shrink = rh * rw < h * w
        pixels = np.stack([_resize(p, rh, rw, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)[crop] for p in pixels])
        frames = rearrange(torch.from_numpy(pixels).float() / 255.0, "f h w c -> f c h w")

        def masks(name: str) -> torch.Tensor:
            if name not in notes:
                return torch.zeros(self.clip_length, height, width)
            stored = store.read_masks(folder / notes[name]["file"], indices).astype(np.uint8)
            return torch.from_numpy(np.stack([_resize(m, rh, rw, cv2.INTER_NEAREST)[crop] for m in stored])).float()

        poses = store.read_json(folder / notes["pose"]["file"])
        skeleton = render_skeleton([poses[i] for i in indices], rh, rw)[:, :, crop[0], crop[1]].contiguous()

        has_depth = "depth" in notes
        if has_depth:
            near = store.read_depth(folder / notes["depth"]["file"], indices)
            depth = torch.from_numpy(np.stack([_resize(d, rh, rw, cv2.INTER_LINEAR)[crop] for d in near])).clamp(0, 1)
        else:
            depth = torch.zeros(self.clip_length, height, width)
        return {
            "frames": frames.contiguous(),
            "character_mask": masks("character_mask"),
            "object_mask": masks("object_mask"),
            "skeleton": skeleton,
            "depth": depth.float().contiguous(),
            "has_depth": has_depth,
            "has_objects": "object_mask" in notes,
            "video_id": str(meta["video_id"]),
            "start": int(start),
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: tensors stacked on a new first axis (`frames` → `[B, F, 3, H, W]`), bools and ints
    as `[B]` tensors (bool, int64), strings as lists."""
    if not samples:
        raise AA2InputError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key, first in samples[0].items():
        values = [s[key] for s in samples]
        if isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, bool):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = list(values)
    return out


def _cover(h: int, w: int, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The scaled size that covers `size` with the aspect kept, and the centre crop's top-left."""
    height, width = size
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    return (rh, rw), ((rh - height) // 2, (rw - width) // 2)


def _resize(image: np.ndarray, h: int, w: int, mode: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=mode)
