"""Data preparation: `python -m train.prepare VIDEOS_DIR OUT_DIR [options]` (paper §4.1).

Annotates every video in VIDEOS_DIR (.mp4 .mov .webm .avi .mkv; the file stem is its id) with the
conditioning Animate Anyone 2 trains on, and writes the layout described in `train/store.py`:

- character mask `M_c`: SAM2 (`--sam2`, prompted with a box per video from `--boxes`, or the
  centre box; see `train/annotate.py` for its limits), or precomputed masks (`--masks DIR`);
- interacting-object mask (union of objects): SAM2 with `--object-boxes`, or `--object-masks DIR`;
- skeleton keypoints: Sapiens TorchScript (`--sapiens-pose`), DWPose ONNX (`--dwpose DIR`: the
  skeletons Animate Anyone 1 / Moore-AnimateAnyone's pose guider learned, for fine-tuning from those
  weights) or POSE_KEYPOINT JSON (`--poses DIR`);
- depth: Sapiens TorchScript (`--sapiens-depth`) or precomputed arrays/images (`--depth DIR`).

Character masks and skeletons are needed for training: a video whose precomputed mask or pose
file is missing fails (and is redone once it is added). Object masks and depth are optional per
video: a video with none in the given folder is prepared without them.

Precomputed annotations live in DIR as `<video_id>.<ext>` (or a folder `<video_id>/` of images),
one entry per *source* frame; they are taken at the same frames as the video.

Resumable: a video's `meta.json` is written last and atomically, so a video with one is complete
and skipped on the next run, and a video interrupted anywhere (a crash, Ctrl-C, a killed job)
has none and is prepared again from the start. A video that fails (corrupt file, a precomputed
annotation missing or of the wrong length) is logged to OUT_DIR/prepare.log and stderr and
skipped; the run goes on and ends with a summary. Models are loaded before the first video, so a
wrong weight file stops the run at once rather than failing every video.

Departure from the paper: it does not say how its character prompts were made. Here the prompt is
a box on the first frame, given or the centre box; there is no person detector.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aa2.conditioning.dwpose import DETECTOR_FILE, POSE_FILE, DWPoseModel
from aa2.conditioning.sam2_segment import SAM2Model
from aa2.conditioning.sapiens import SapiensModel
from aa2.errors import AA2Error, AA2InputError
from aa2.video_io import natural_key

from . import annotate, store

LOG_NAME = "prepare.log"
log = logging.getLogger("train.prepare")


@dataclass
class Sources:
    """Where each annotation comes from (parsed options and loaded models)."""

    size: int = 768
    fps: float | None = None
    every: int = 1
    max_frames: int | None = None
    frames_format: str = "mp4"
    sam2: SAM2Model | None = None
    boxes: dict = field(default_factory=dict)
    object_boxes: dict = field(default_factory=dict)
    masks: Path | None = None
    object_masks: Path | None = None
    sapiens_pose: SapiensModel | None = None
    sapiens_depth: SapiensModel | None = None
    dwpose: DWPoseModel | None = None
    poses: Path | None = None
    depth: Path | None = None
    depth_convention: str = "inverse"


def list_videos(folder: Path) -> list[Path]:
    """The videos directly in `folder`, in natural order."""
    if not folder.is_dir():
        raise AA2InputError(f"VIDEOS_DIR {folder} is not a folder")
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in annotate.VIDEO_SUFFIXES),
                  key=natural_key)


def prepare_video(path: Path, folder: Path, sources: Sources) -> dict:
    """Prepare one video into `folder`; returns the meta written last. Raises on any failure,
    leaving no meta.json."""
    started = time.monotonic()
    video_id = folder.name
    source = annotate.read_source(path, sources.size, fps=sources.fps, every=sources.every,
                                  max_frames=sources.max_frames)  # first: a corrupt video leaves no folder
    folder.mkdir(parents=True, exist_ok=True)
    for target in folder.iterdir():  # leftovers of an interrupted run, temporary files included
        if target.name in store.ALL_FILES or (target.name.startswith(".") and ".tmp" in target.name):
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    frames_file = store.write_frames(folder, source.frames, source.fps or 25.0, sources.frames_format)
    annotations: dict[str, dict] = {}
    needs_pixels = sources.sam2 or sources.sapiens_pose or sources.sapiens_depth or sources.dwpose
    tensor = source.as_tensor() if needs_pixels else None

    character, objects = _masks(video_id, source, tensor, sources, annotations)
    if character is not None:
        store.write_masks(folder / store.CHARACTER_MASK, character)
        annotations["character_mask"]["file"] = store.CHARACTER_MASK
    if objects is not None:
        store.write_masks(folder / store.OBJECT_MASK, objects)
        annotations["object_mask"]["file"] = store.OBJECT_MASK
    # Skeleton keypoints are stored, not rendered: the dataset renders them at the training size.
    poses = _poses(video_id, source, tensor, character, sources, annotations)
    if poses is not None:
        store.write_json_atomic(folder / store.POSE, poses)
        annotations["pose"]["file"] = store.POSE
    depth = _depth(video_id, source, tensor, sources, annotations)
    if depth is not None:
        store.write_depth(folder / store.DEPTH, depth)
        annotations["depth"].update(file=store.DEPTH, stored="nearness per frame, 0..1, near = 1, float16")

    height, width = source.size
    meta = {
        "format": store.FORMAT_VERSION,
        "video_id": video_id,
        "frames": len(source.indices),
        "height": height,
        "width": width,
        "fps": source.fps or None,
        "frames_file": frames_file,
        "source": {"file": path.name, "frames": source.source_count, "fps": source.source_fps,
                   "height": source.source_size[0], "width": source.source_size[1]},
        "source_indices": source.indices,
        "annotations": annotations,
        "prepared": {"size": sources.size, "fps": sources.fps, "every": sources.every,
                     "max_frames": sources.max_frames, "seconds": round(time.monotonic() - started, 2),
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    store.write_json_atomic(folder / store.META, meta)  # last: the video is now complete
    return meta


def run(videos_dir: Path, out_dir: Path, sources: Sources, *, redo: bool = False) -> dict[str, list]:
    """Prepare every video; returns {"prepared": [ids], "complete": [ids], "failed": [(id, reason)]}."""
    videos = list_videos(videos_dir)
    summary: dict[str, list] = {"prepared": [], "complete": [], "failed": []}
    seen: dict[str, Path] = {}
    log.info("preparing %d videos from %s into %s", len(videos), videos_dir, out_dir)
    for number, path in enumerate(videos, 1):
        video_id = path.stem
        if video_id in seen:
            reason = f"its id {video_id!r} is taken by {seen[video_id].name}; rename one of them"
            log.error("%s: skipped: %s", path.name, reason)
            summary["failed"].append((path.name, reason))
            continue
        seen[video_id] = path
        folder = out_dir / video_id
        if (folder / store.META).is_file() and not redo:
            log.info("[%d/%d] %s: already complete (meta.json present), skipped", number, len(videos), video_id)
            summary["complete"].append(video_id)
            continue
        try:
            meta = prepare_video(path, folder, sources)
        except AA2Error as error:  # bad input: one line is the whole story
            log.error("[%d/%d] %s: skipped: %s", number, len(videos), video_id, error)
            summary["failed"].append((video_id, str(error)))
            continue
        except Exception as error:  # a bug or an environment problem: keep the traceback in the log
            log.exception("[%d/%d] %s: skipped after an unexpected error", number, len(videos), video_id)
            summary["failed"].append((video_id, f"{type(error).__name__}: {error}"))
            continue
        kinds = ", ".join(meta["annotations"]) or "no annotations"
        log.info("[%d/%d] %s: %d frames %dx%d (%s) in %.1f s", number, len(videos), video_id, meta["frames"],
                 meta["width"], meta["height"], kinds, meta["prepared"]["seconds"])
        summary["prepared"].append(video_id)
    log.info("summary: %d prepared, %d already complete, %d failed", len(summary["prepared"]),
             len(summary["complete"]), len(summary["failed"]))
    for video_id, reason in summary["failed"]:
        log.info("  failed: %s: %s", video_id, reason)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos_dir", type=Path, help="folder of videos (.mp4 .mov .webm .avi .mkv)")
    p.add_argument("out_dir", type=Path, help="output folder (one subfolder per video)")
    g = p.add_argument_group("frames")
    g.add_argument("--size", type=int, default=768, help="short side of the prepared frames, a multiple of 8 "
                   "(default 768; at least the training size)")
    rate = g.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, help="resample to this frame rate (never above the source's)")
    rate.add_argument("--every", type=int, default=1, help="keep every n-th frame (default 1: all)")
    g.add_argument("--max-frames", type=int, help="keep at most this many frames per video")
    g.add_argument("--frames-format", choices=("mp4", "png"), default="mp4",
                   help="mp4: mp4v video (compact, ~37 dB); png: lossless frames folder (large)")
    g = p.add_argument_group("masks")
    g.add_argument("--sam2", type=Path, help="SAM2 checkpoint for character (and object) masks")
    g.add_argument("--sam2-config", help="SAM2 config name or yaml (default: from the checkpoint)")
    g.add_argument("--boxes", type=Path, help="JSON {video_id: [x0, y0, x1, y1]}: the character on the first "
                   "frame, in source pixels (or 0..1 fractions); default: the centre box")
    g.add_argument("--object-boxes", type=Path, help="JSON {video_id: [[x0, y0, x1, y1], ...]}: objects the "
                   "character touches, on the first frame (SAM2)")
    g.add_argument("--masks", type=Path, help="folder of precomputed character masks: <id>.mp4 or <id>/*.png")
    g.add_argument("--object-masks", type=Path, help="folder of precomputed object masks (union): <id>.mp4 or "
                   "<id>/*.png; videos without one have no objects")
    g = p.add_argument_group("skeleton and depth")
    g.add_argument("--sapiens-pose", type=Path, help="Sapiens pose TorchScript (*_torchscript.pt2)")
    g.add_argument("--sapiens-depth", type=Path, help="Sapiens depth TorchScript (*_torchscript.pt2)")
    g.add_argument("--dwpose", type=Path, help=f"folder holding DWPose's {POSE_FILE} (and {DETECTOR_FILE} for "
                   "frames without a character mask); needs onnxruntime")
    g.add_argument("--poses", type=Path, help="folder of POSE_KEYPOINT JSON files, <id>.json")
    g.add_argument("--depth", type=Path, help="folder of precomputed depth: <id>.npy/.npz [F, H, W], or <id>.mp4 "
                   "/ <id>/*.png grey images; videos without one have no depth")
    g.add_argument("--depth-convention", choices=("inverse", "depth"), default="inverse",
                   help="precomputed depth: inverse = larger is nearer (Depth Anything, MiDaS, ComfyUI depth "
                   "images; default), depth = larger is farther")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="cpu", help="device for SAM2, Sapiens and DWPose (cpu, cuda, cuda:1, mps)")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="SAM2 precision")
    g.add_argument("--redo", action="store_true", help="prepare every video again, even complete ones")
    return p


def load_sources(args: argparse.Namespace) -> Sources:
    """Check the options against each other and load the models, before any video is read."""
    def conflict(a: str, b: str) -> None:
        raise AA2InputError(f"{a} and {b} are two sources for the same annotation; give one")

    if args.masks and args.boxes:
        conflict("--masks", "--boxes (a SAM2 character prompt)")
    if args.object_masks and args.object_boxes:
        conflict("--object-masks", "--object-boxes")
    if (args.boxes or args.object_boxes or args.sam2_config) and not args.sam2:
        raise AA2InputError("--boxes, --object-boxes and --sam2-config need a SAM2 checkpoint (--sam2)")
    pose_sources = [name for name in ("sapiens_pose", "dwpose", "poses") if getattr(args, name)]
    if len(pose_sources) > 1:
        conflict(*(f"--{name.replace('_', '-')}" for name in pose_sources[:2]))
    if args.sapiens_depth and args.depth:
        conflict("--sapiens-depth", "--depth")
    if args.every < 1 or (args.fps is not None and args.fps <= 0) or (args.max_frames is not None and args.max_frames < 1):
        raise AA2InputError("--every and --max-frames must be at least 1, and --fps positive")
    annotate.prepared_size(args.size, args.size, args.size)  # checks --size
    for option in ("masks", "object_masks", "poses", "depth", "dwpose"):
        value = getattr(args, option)
        if value is not None and not value.is_dir():
            raise AA2InputError(f"--{option.replace('_', '-')} {value} is not a folder")
    sources = Sources(size=args.size, fps=args.fps, every=args.every, max_frames=args.max_frames,
                      frames_format=args.frames_format, masks=args.masks, object_masks=args.object_masks,
                      poses=args.poses, depth=args.depth, depth_convention=args.depth_convention,
                      boxes=annotate.read_boxes(args.boxes, nested=False),
                      object_boxes=annotate.read_boxes(args.object_boxes, nested=True))
    if args.sam2:
        from aa2.conditioning.sam2_segment import load_sam2

        sources.sam2 = load_sam2(args.sam2, config=args.sam2_config, device=args.device, precision=args.precision)
    if args.sapiens_pose or args.sapiens_depth:
        from aa2.conditioning.sapiens import load_sapiens

        if args.sapiens_pose:
            sources.sapiens_pose = load_sapiens(args.sapiens_pose, "pose", device=args.device)
        if args.sapiens_depth:
            sources.sapiens_depth = load_sapiens(args.sapiens_depth, "depth", device=args.device)
    if args.dwpose:
        from aa2.conditioning.dwpose import load_dwpose, providers_for

        detector = args.dwpose / DETECTOR_FILE
        sources.dwpose = load_dwpose(detector if detector.is_file() else None, args.dwpose / POSE_FILE,
                                     providers=providers_for(args.device))
    return sources


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when OUT_DIR holds at least one complete video afterwards, 1 when none, 2
    for bad options or weights (reported before any video is touched)."""
    args = parser().parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(args.out_dir / LOG_NAME, encoding="utf-8"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        try:
            sources = load_sources(args)
            run(args.videos_dir, args.out_dir, sources, redo=args.redo)
        except AA2Error as error:
            log.error("%s", error)
            return 2
        complete = [p for p in args.out_dir.iterdir() if (p / store.META).is_file()]
        return 0 if complete else 1
    finally:  # leave the logger as it was: main() may be called again in one process (tests, scripts)
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        log.setLevel(level)


def _masks(video_id: str, source: annotate.SourceVideo, tensor, sources: Sources,
           annotations: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Character mask and object union, bool `[F, H, W]` or None; one SAM2 run for all prompts."""
    character = objects = None
    if sources.masks is not None:
        file = _required(sources.masks, video_id, annotate.VIDEO_SUFFIXES, "--masks")
        character = annotate.masks_from_file(file, source)
        annotations["character_mask"] = {"method": "precomputed", "from": str(file)}
    object_file = None
    if sources.object_masks is not None:
        object_file = annotate.find_annotation(sources.object_masks, video_id, annotate.VIDEO_SUFFIXES)
        if object_file is not None:
            objects = annotate.masks_from_file(object_file, source)
            annotations["object_mask"] = {"method": "precomputed", "from": str(object_file)}
    if sources.sam2 is None:
        return character, objects
    prompt = None
    if sources.masks is None:
        given = sources.boxes.get(video_id)
        prompt = annotate.scale_box(given[0] if given else annotate.CENTRE_BOX, source.source_size, source.size)
    boxes = [annotate.scale_box(b, source.source_size, source.size)
             for b in sources.object_boxes.get(video_id, [])] if object_file is None else []
    sam_character, sam_objects = annotate.sam2_masks(sources.sam2, tensor, prompt, boxes)
    how = {"method": "sam2", "checkpoint": sources.sam2.path.name, "config": sources.sam2.config, "prompt_frame": 0}
    if sam_character is not None:
        character = sam_character
        annotations["character_mask"] = {**how, "box": _rounded(prompt),
                                         "prompt": "boxes" if video_id in sources.boxes else "centre"}
    if sam_objects is not None:
        objects = sam_objects
        annotations["object_mask"] = {**how, "boxes": [_rounded(b) for b in boxes]}
    return character, objects


def _poses(video_id: str, source: annotate.SourceVideo, tensor, character: np.ndarray | None,
           sources: Sources, annotations: dict) -> list[dict] | None:
    if sources.poses is not None:
        file = _required(sources.poses, video_id, (".json",), "--poses")
        annotations["pose"] = {"method": "precomputed", "from": str(file)}
        return annotate.poses_from_file(file, source)
    if sources.sapiens_pose is not None:
        annotations["pose"] = {"method": "sapiens", "model": sources.sapiens_pose.path.name,
                               "boxes": "character mask" if character is not None else "whole frame"}
        return annotate.sapiens_poses(sources.sapiens_pose, tensor, character)
    if sources.dwpose is not None:
        detector = sources.dwpose.detector_path.name if sources.dwpose.detector_path else None
        annotations["pose"] = {"method": "dwpose", "model": sources.dwpose.pose_path.name, "detector": detector,
                               "boxes": "character mask" if character is not None else
                               ("detector" if detector else "whole frame")}
        return annotate.dwpose_poses(sources.dwpose, tensor, character)
    return None


def _depth(video_id: str, source: annotate.SourceVideo, tensor, sources: Sources,
           annotations: dict) -> np.ndarray | None:
    """Stored nearness `[F, H, W]`, or None. Depth is optional per video (the sample's has_depth
    says so); masks and poses are not."""
    if sources.depth is not None:
        file = annotate.find_annotation(sources.depth, video_id, (".npy", ".npz", *annotate.VIDEO_SUFFIXES))
        if file is None:
            log.info("%s: no depth in %s; prepared without depth", video_id, sources.depth)
            return None
        annotations["depth"] = {"method": "precomputed", "from": str(file), "convention": sources.depth_convention}
        return annotate.nearness(annotate.depth_from_file(file, source), sources.depth_convention)
    if sources.sapiens_depth is not None:
        annotations["depth"] = {"method": "sapiens", "model": sources.sapiens_depth.path.name, "convention": "depth"}
        return annotate.nearness(annotate.sapiens_depths(sources.sapiens_depth, tensor), "depth")
    return None


def _required(folder: Path, video_id: str, suffixes, option: str) -> Path:
    found = annotate.find_annotation(folder, video_id, suffixes)
    if found is None:
        raise AA2InputError(f"{option} {folder} has no file {video_id}.* ({' '.join(suffixes)}) and no folder "
                           f"{video_id}/ for this video")
    return found


def _rounded(box) -> list[float]:
    return [round(float(v), 2) for v in box]


if __name__ == "__main__":
    sys.exit(main())
