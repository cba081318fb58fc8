"""Write SynthWorld clips as prepared training data: `python -m train.synthworld OUT_DIR [options]`.

SynthWorld (`aa2.synthworld`, the SynthWorld issue) is a procedural world with known ground truth,
for training and evaluating small Animate Anyone 2 models. This writes its clips in exactly the
layout `train.prepare` writes (`train/store.py`), so `train.dataset.PreparedClips` and
`python -m train.train` read them like real videos, plus the ground truth evaluation needs:

    OUT_DIR/sw_<seed>_<motion>/
      frames/00000.png …          the clip, lossless (or frames.mp4 with --frames-format mp4)
      character_mask.npz          visible character pixels
      object_mask.npz             visible pixels of the interacting object (push, carry, sit only)
      pose.json                   POSE_KEYPOINT, COCO-18 body, pixels
      depth.npz                   nearness, normalised per frame as train.prepare stores it
      background.png              extra: the clean background (no character, no object)
      reference.png               extra: the character standing, facing the camera, on that background
      reference_mask.png          extra: its pixels (0/255)
      reference_pose.json         extra: its POSE_KEYPOINT (one frame)
      cross/                      extra, with --cross-identity: the same motion, scene and keypoints
        frames/ character_mask.npz object_mask.npz depth.npz reference.png reference_mask.png
                                  performed by a different-looking character with the same bones
      meta.json                   written last, atomically (train.prepare's fields, plus "synthworld")

The extras are names `train.prepare` never writes or deletes, and `PreparedClips` reads only what
meta.json's annotations name, so a SynthWorld folder is an ordinary prepared folder to training.

Seeds: `--split train` writes clips `--seed`, `--seed`+1, …; `--split heldout` the same offsets
from `aa2.synthworld.HELDOUT_SEED_BASE`, so held-out scenes, characters and motion parameters are
never seen in training. Motions cycle through `MOTIONS` (minus `--heldout-motions` for training).
Resumable as `train.prepare` is: a folder with a meta.json is complete and skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from aa2.conditioning.skeleton import write_pose_keypoints
from aa2.synthworld import MOTIONS, Rendering, SynthClip, make_clip, split_motions, split_seeds

from . import store
from .annotate import nearness

VERSION = 1
BACKGROUND, REFERENCE, REFERENCE_MASK, REFERENCE_POSE, CROSS = (
    "background.png", "reference.png", "reference_mask.png", "reference_pose.json", "cross")


def video_id(seed: int, motion: str) -> str:
    return f"sw_{seed:07d}_{motion}"


def write_clip(clip: SynthClip, folder: Path, *, split: str, fps: float = 8.0, frames_format: str = "png") -> dict:
    """Write `clip` into `folder` (emptied first); returns the meta written last."""
    started = time.monotonic()
    if folder.exists():
        shutil.rmtree(folder)  # leftovers of an interrupted run: the folder is ours to rebuild
    folder.mkdir(parents=True)
    annotations = _write_rendering(clip.main, folder, fps, frames_format)
    store.write_json_atomic(folder / store.POSE, clip.pose_keypoints())
    annotations["pose"] = {"method": "synthworld", "file": store.POSE}
    _write_image(folder / BACKGROUND, clip.background)
    store.write_json_atomic(folder / REFERENCE_POSE, write_pose_keypoints([clip.reference_pose]))
    extras = {"background": BACKGROUND, "reference": REFERENCE, "reference_mask": REFERENCE_MASK,
              "reference_pose": REFERENCE_POSE}
    if clip.cross is not None:
        cross = _write_rendering(clip.cross, folder / CROSS, fps, frames_format)
        extras["cross"] = {name: f"{CROSS}/{note['file']}" for name, note in cross.items()}
        extras["cross"].update(reference=f"{CROSS}/{REFERENCE}", reference_mask=f"{CROSS}/{REFERENCE_MASK}")
    frames_file = annotations.pop("frames")["file"]
    count, height, width = clip.frames.shape[:3]
    meta = {
        "format": store.FORMAT_VERSION,
        "video_id": folder.name,
        "frames": count,
        "height": height,
        "width": width,
        "fps": fps,
        "frames_file": frames_file,
        "source": {"file": None, "synthworld": clip.seed, "frames": count, "fps": fps, "height": height, "width": width},
        "source_indices": list(range(count)),
        "annotations": annotations,
        "prepared": {"size": min(height, width), "fps": fps, "every": 1, "max_frames": None,
                     "seconds": round(time.monotonic() - started, 2),
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "synthworld": {
            "version": VERSION, "seed": clip.seed, "split": split, "motion": clip.motion, "scene": clip.scene.kind,
            "character": dataclasses.asdict(clip.main.character),
            "cross_character": dataclasses.asdict(clip.cross.character) if clip.cross is not None else None,
            "files": extras,
        },
    }
    store.write_json_atomic(folder / store.META, meta)  # last: the video is now complete
    return meta


def run(out_dir: Path, *, videos: int, frames: int, size: int, seed: int = 0, split: str = "train",
        cross_identity: bool = False, heldout_motions: tuple[str, ...] = (), fps: float = 8.0,
        frames_format: str = "png", redo: bool = False) -> dict[str, list[str]]:
    """Write `videos` clips; returns {"written": [ids], "complete": [ids already there]}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    motions = split_motions(split, heldout_motions)
    summary: dict[str, list[str]] = {"written": [], "complete": []}
    for number, clip_seed in enumerate(split_seeds(split, videos, seed), 1):
        motion = motions[clip_seed % len(motions)]
        folder = out_dir / video_id(clip_seed, motion)
        if (folder / store.META).is_file() and not redo:
            summary["complete"].append(folder.name)
            continue
        clip = make_clip(clip_seed, frames=frames, size=size, motion=motion, cross_identity=cross_identity)
        write_clip(clip, folder, split=split, fps=fps, frames_format=frames_format)
        summary["written"].append(folder.name)
        print(f"[{number}/{videos}] {folder.name}", file=sys.stderr)
    print(f"{len(summary['written'])} written, {len(summary['complete'])} already complete in {out_dir}", file=sys.stderr)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.synthworld", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="output folder (one subfolder per clip)")
    p.add_argument("--videos", type=int, default=32, help="number of clips (default 32)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="first clip's offset within the split (default 0)")
    p.add_argument("--split", choices=("train", "heldout"), default="train")
    p.add_argument("--cross-identity", action="store_true", help="also write cross/: the same clip performed by "
                   "a different-looking character (evaluation ground truth)")
    p.add_argument("--heldout-motions", nargs="*", default=[], choices=MOTIONS, metavar="MOTION",
                   help=f"motions kept out of --split train (of {', '.join(MOTIONS)})")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate written in meta.json (default 8)")
    p.add_argument("--frames-format", choices=("png", "mp4"), default="png",
                   help="png: exact colours (default); mp4: mp4v video as train.prepare writes by default")
    p.add_argument("--redo", action="store_true", help="write every clip again, even complete ones")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.videos < 1 or args.frames < 1 or args.size < 32 or args.seed < 0:
        print("--videos and --frames must be at least 1, --size at least 32, --seed at least 0", file=sys.stderr)
        return 2
    try:
        run(args.out_dir, videos=args.videos, frames=args.frames, size=args.size, seed=args.seed, split=args.split,
            cross_identity=args.cross_identity, heldout_motions=tuple(args.heldout_motions), fps=args.fps,
            frames_format=args.frames_format, redo=args.redo)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


def _write_rendering(rendering: Rendering, folder: Path, fps: float, frames_format: str) -> dict[str, dict]:
    """Frames, masks, depth and reference of one character; returns meta annotations (and frames)."""
    folder.mkdir(parents=True, exist_ok=True)
    notes = {"frames": {"file": store.write_frames(folder, rendering.frames, fps, frames_format)}}
    store.write_masks(folder / store.CHARACTER_MASK, rendering.character_mask)
    notes["character_mask"] = {"method": "synthworld", "file": store.CHARACTER_MASK}
    if rendering.object_mask is not None:
        store.write_masks(folder / store.OBJECT_MASK, rendering.object_mask)
        notes["object_mask"] = {"method": "synthworld", "file": store.OBJECT_MASK}
    store.write_depth(folder / store.DEPTH, nearness(rendering.depth, "inverse"))
    notes["depth"] = {"method": "synthworld", "convention": "inverse", "file": store.DEPTH,
                      "stored": "nearness per frame, 0..1, near = 1, float16"}
    _write_image(folder / REFERENCE, rendering.reference)
    _write_image(folder / REFERENCE_MASK, rendering.reference_mask.astype(np.uint8) * 255)
    return notes


def _write_image(path: Path, image: np.ndarray) -> None:
    """RGB `[H, W, 3]` or grey `[H, W]` uint8 → PNG."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image))
    if not ok:
        raise OSError(f"could not encode {path.name} as PNG")
    data.tofile(str(path))


if __name__ == "__main__":
    sys.exit(main())
