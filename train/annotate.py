"""Annotations for one training video: character and object masks, skeleton keypoints, depth.

The paper (§4.1) annotates its training videos with SAM for the character and the objects it
touches and with Sapiens for skeleton and depth. Everything here goes through the pack's own
functions (`aa2.conditioning.sam2_segment`, `.sapiens`, `.skeleton`), so training sees exactly the
conditioning that inference builds; what this module adds is reading a source video at the
prepared size and rate, and reading precomputed annotations made by other tools, frame for frame.

Frame selection. A source video is decoded once; `--fps` keeps, for each output period 1/fps, the
first source frame that falls in it (never more frames than the source has), `--every n` keeps
every n-th. The kept source indices are remembered, and precomputed annotations (one entry per
*source* frame) are taken at the same indices, so they stay aligned with the frames.

Prepared size: the short side becomes `size`, the long side is scaled with it and rounded to a
multiple of 8 (mp4v needs even sides, and training crops multiples of 8 from it).

Automatic character prompt. Without a box for a video, SAM2 is prompted on the first frame with a
fixed box around the frame's centre (`CENTRE_BOX`: the middle half of the width, 5 %–95 % of the
height), which is where a single performer stands in dance and TikTok-style videos. Its limits:
it picks whatever fills that box, so a second person near the centre, a performer off-centre or
entering after the first frame, or a small full-body figure in a wide shot can give the wrong
mask. There is no person detector in the pack's dependencies; give `--boxes` for such videos.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange

from aa2.conditioning.dwpose import DWPoseModel, dwpose_keypoints
from aa2.conditioning.masks import mask_boxes
from aa2.conditioning.sam2_segment import ObjectPrompt, SAM2Model, segment_video
from aa2.conditioning.sapiens import SapiensModel, sapiens_depth, sapiens_pose
from aa2.conditioning.skeleton import read_pose_keypoints, write_pose_keypoints
from aa2.errors import AA2InputError
from aa2.video_io import IMAGE_SUFFIXES, natural_key

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv")
CENTRE_BOX = (0.25, 0.05, 0.75, 0.95)  # x0, y0, x1, y1 as fractions of the frame
SIZE_MULTIPLE = 8

Box = tuple[float, float, float, float]


@dataclass
class SourceVideo:
    """A source video read at the prepared size: `frames` RGB uint8 `[F, H, W, 3]`."""

    frames: np.ndarray
    indices: list[int]  # source frame index of each kept frame
    source_count: int
    source_fps: float | None
    source_size: tuple[int, int]  # (H, W)
    fps: float  # frame rate of the kept frames

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def as_tensor(self) -> torch.Tensor:
        """`[F, 3, H, W]` float16 0..1: half the memory of float32 for SAM2 and Sapiens, which
        convert a frame or batch at a time to float32 themselves."""
        frames = torch.from_numpy(self.frames)
        return rearrange(frames, "f h w c -> f c h w").to(torch.float16).div_(255.0)


def prepared_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """`(H, W)` with the short side `short_side` and the long side scaled, a multiple of 8."""
    if short_side < SIZE_MULTIPLE or short_side % SIZE_MULTIPLE:
        raise AA2InputError(f"--size must be a multiple of {SIZE_MULTIPLE}; got {short_side}.")
    scale = short_side / min(height, width)
    long_side = max(SIZE_MULTIPLE, round(max(height, width) * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return (short_side, long_side) if height <= width else (long_side, short_side)


def read_source(path: Path, short_side: int, *, fps: float | None = None, every: int = 1,
                max_frames: int | None = None) -> SourceVideo:
    """Decode a video, keep the selected frames, resize them. Raises AA2InputError when the file
    cannot be opened or decoded (a corrupt video)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AA2InputError(f"could not open {path.name} as a video (corrupt, or a codec OpenCV lacks)")
        rate = capture.get(cv2.CAP_PROP_FPS)
        source_fps = float(rate) if rate and np.isfinite(rate) and 0 < rate < 1000 else None
        if fps is not None and source_fps is None:
            raise AA2InputError(f"{path.name} states no frame rate, so --fps cannot resample it; use --every")
        resample = fps is not None and fps < source_fps
        frames, indices, size, source_size = [], [], None, None
        index, last_period = 0, -1
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if resample:
                period = int(np.floor(index / source_fps * fps + 1e-6))
                keep, last_period = period > last_period, max(period, last_period)
            else:
                keep = index % every == 0
            if keep:
                if size is None:
                    source_size = frame.shape[:2]
                    size = prepared_size(*source_size, short_side)
                elif frame.shape[:2] != source_size:
                    raise AA2InputError(f"{path.name} changes frame size at frame {index}")
                frames.append(_resize(frame, size, cv2.INTER_AREA)[..., ::-1])
                indices.append(index)
            index += 1
        # Count the rest too: precomputed annotations are checked against the source's length.
        while capture.grab():
            index += 1
    finally:
        capture.release()
    if not frames:
        raise AA2InputError(f"{path.name} opened but no frame could be decoded (corrupt or empty)")
    out_fps = (fps if resample else source_fps / every) if source_fps else 0.0
    return SourceVideo(np.ascontiguousarray(np.stack(frames)), indices, index, source_fps,
                       tuple(int(v) for v in source_size), float(out_fps))


# --- boxes --------------------------------------------------------------------------------


def read_boxes(path: Path | None, nested: bool) -> dict[str, list[Box]]:
    """`{video_id: [x0, y0, x1, y1]}` (or, `nested`, a list of such boxes per video) from JSON."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AA2InputError(f"could not read boxes from {path}: {e}") from e
    if not isinstance(data, dict):
        raise AA2InputError(f"{path} must hold a JSON object {{video_id: box}}; got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        boxes = value if nested and value and isinstance(value[0], (list, tuple)) else [value]
        for box in boxes:
            if not (isinstance(box, (list, tuple)) and len(box) == 4
                    and all(isinstance(v, (int, float)) for v in box)):
                raise AA2InputError(f"{path}: the box for {key!r} must be [x0, y0, x1, y1]; got {box!r}")
        out[str(key)] = [tuple(float(v) for v in b) for b in boxes]
    return out


def scale_box(box: Box, source_size: tuple[int, int], size: tuple[int, int]) -> Box:
    """A box in source pixels (or fractions, when every value is ≤ 1) → prepared pixels, clipped."""
    (sh, sw), (h, w) = source_size, size
    fx, fy = (w, h) if all(0 <= v <= 1 for v in box) else (w / sw, h / sh)
    x0, y0, x1, y1 = box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy
    x0, x1 = sorted((min(max(x0, 0.0), w), min(max(x1, 0.0), w)))
    y0, y1 = sorted((min(max(y0, 0.0), h), min(max(y1, 0.0), h)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise AA2InputError(f"the box {box} is empty inside the {sw}×{sh} source frame")
    return (x0, y0, x1, y1)


# --- masks --------------------------------------------------------------------------------


def sam2_masks(model: SAM2Model, frames: torch.Tensor, character: Box | None,
               objects: Sequence[Box] = ()) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Character mask and the union of object masks, bool `[F, H, W]`, from box prompts on the
    first frame. The objects are tracked as separate SAM2 objects in the same run (sharing the
    image features) and merged afterwards, as `object_frames` merges them for the object guider."""
    prompts = ([ObjectPrompt(box=character)] if character is not None else []) + [ObjectPrompt(box=b) for b in objects]
    if not prompts:
        return None, None
    masks = segment_video(model, frames, prompts, prompt_frame=0).numpy()  # [O, F, H, W] bool
    first = 1 if character is not None else 0
    return (masks[0] if character is not None else None,
            masks[first:].any(axis=0) if len(objects) else None)


def masks_from_file(path: Path, source: SourceVideo) -> np.ndarray:
    """Precomputed masks (a video or a folder of images, one per source frame) at the kept frames,
    resized to the prepared size, as bool `[F, H, W]`: brightness (or alpha) above one half,
    thresholded after resizing so edges are resampled rather than aliased."""
    h, w = source.size
    keep = set(source.indices)
    out, count = [], 0
    for i, raw in enumerate(_decode(path)):
        count += 1
        if i not in keep:
            continue
        out.append(_resize(_brightness(raw, alpha=True), (h, w), cv2.INTER_AREA) > 0.5)
    _check_count(path, count, source)
    return np.stack(out)


# --- pose ---------------------------------------------------------------------------------


def poses_from_file(path: Path, source: SourceVideo) -> list[dict]:
    """POSE_KEYPOINT JSON (one frame dict per source frame) at the kept frames, written back in
    canvas pixels by the pack's own reader and writer (so 0..1 OpenPose files become pixels)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AA2InputError(f"could not read POSE_KEYPOINT JSON {path}: {e}") from e
    frames = read_pose_keypoints(data)
    _check_count(path, len(frames), source)
    return write_pose_keypoints([frames[i] for i in source.indices])


def sapiens_poses(model: SapiensModel, frames: torch.Tensor, character: np.ndarray | None) -> list[dict]:
    """Sapiens keypoints, top-down in the character mask's box when there is one (the paper's
    person boxes; Sapiens itself has no detector), otherwise in the whole frame."""
    boxes = mask_boxes(torch.from_numpy(character)) if character is not None else None
    return sapiens_pose(model, frames, boxes=boxes)


def dwpose_poses(model: DWPoseModel, frames: torch.Tensor, character: np.ndarray | None) -> list[dict]:
    """DWPose keypoints: in the character mask's box where the frame has one (the detector is not
    run there), elsewhere the detector's best person, or the whole frame without a detector."""
    boxes = mask_boxes(torch.from_numpy(character)) if character is not None else None
    return dwpose_keypoints(model, frames, boxes=boxes, max_people=1)


# --- depth --------------------------------------------------------------------------------


def depth_from_file(path: Path, source: SourceVideo) -> np.ndarray:
    """Precomputed depth, float32 `[F, H, W]` at the kept frames and prepared size: an `.npy`/
    `.npz` array `[F_source, h, w]` (an npz's `depth` member or its only one), or a video / image
    folder whose brightness is the value."""
    h, w = source.size
    if path.suffix in (".npy", ".npz"):
        picked = _load_depth_array(path, source)
        return np.stack([_resize(d, (h, w), cv2.INTER_AREA) for d in picked])
    keep = set(source.indices)
    out, count = [], 0
    for i, raw in enumerate(_decode(path)):
        count += 1
        if i in keep:
            out.append(_resize(_brightness(raw, alpha=False), (h, w), cv2.INTER_AREA))
    _check_count(path, count, source)
    return np.stack(out)


def sapiens_depths(model: SapiensModel, frames: torch.Tensor) -> np.ndarray:
    """Sapiens relative depth (larger = farther), float32 `[F, H, W]`."""
    return sapiens_depth(model, frames).float().numpy()


def nearness(depth: np.ndarray, convention: str) -> np.ndarray:
    """Depth → nearness normalised per frame to 0..1 (near = 1), the stored form (see store.py).

    convention: "depth" (larger = farther: Sapiens, metric depth) or "inverse" (larger = nearer:
    MiDaS, Depth Anything, ComfyUI's depth images). A flat frame becomes all 1, as
    `structured_depth` reads a flat frame.
    """
    if convention not in ("depth", "inverse"):
        raise AA2InputError(f"depth convention must be 'depth' or 'inverse'; got {convention!r}")
    depth = np.asarray(depth, dtype=np.float32)
    if not np.isfinite(depth).all():
        raise AA2InputError("the depth has NaN or infinite values")
    near = depth if convention == "inverse" else -depth
    lo = near.min(axis=(1, 2), keepdims=True)
    span = near.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (near - lo) / np.maximum(span, 1e-12), 1.0).astype(np.float32)


# --- files of one video in a folder of annotations ---------------------------------------


def find_annotation(folder: Path, video_id: str, suffixes: Sequence[str]) -> Path | None:
    """`folder/<video_id><suffix>` for the first suffix that exists, else the folder
    `folder/<video_id>/` (of images), else None."""
    for suffix in suffixes:
        candidate = folder / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate
    candidate = folder / video_id
    return candidate if candidate.is_dir() else None


# --- helpers ------------------------------------------------------------------------------


def _decode(path: Path) -> Iterator[np.ndarray]:
    """Raw OpenCV images (BGR/BGRA/grey, 8 or 16 bit) of a video or an image folder, in order."""
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        if not files:
            raise AA2InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            image = cv2.imdecode(np.fromfile(str(file), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise AA2InputError(f"could not read {file} as an image")
            yield image
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AA2InputError(f"could not open {path} as a video")
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def _check_count(path: Path, count: int, source: SourceVideo) -> None:
    if count != source.source_count:
        raise AA2InputError(
            f"{path.name} has {count} frames but its video has {source.source_count}; precomputed "
            "annotations need one entry per source frame"
        )


def _brightness(raw: np.ndarray, alpha: bool) -> np.ndarray:
    """An OpenCV image → float32 `[H, W]` 0..1: its mean colour, or its alpha when `alpha` and it
    has one (a cut-out PNG's alpha is its mask)."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(raw.dtype, 1.0)
    pixels = raw.astype(np.float32) / scale
    if pixels.ndim == 2:
        return pixels
    if alpha and pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[..., 3])
    return pixels[..., :3].mean(axis=2)


def _resize(image: np.ndarray, size: tuple[int, int], shrink_mode: int) -> np.ndarray:
    """cv2.resize to `(H, W)`: `shrink_mode` (area: no aliasing) when shrinking, linear otherwise."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    mode = shrink_mode if h * w < image.shape[0] * image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=mode)


def _load_depth_array(path: Path, source: SourceVideo) -> np.ndarray:
    """The kept frames of an `.npy` (memory-mapped: only they are read) or `.npz` depth array."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r")
        else:
            with np.load(path) as data:
                names = list(data.keys())
                if "depth" not in names and len(names) != 1:
                    raise AA2InputError(f"{path.name} holds {names}; name the depth array 'depth'")
                array = data["depth" if "depth" in names else names[0]]
    except (OSError, ValueError) as e:
        raise AA2InputError(f"could not read depth from {path}: {e}") from e
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise AA2InputError(f"{path.name} must hold depth [F, H, W]; got shape {array.shape}")
    _check_count(path, len(array), source)
    return np.asarray(array[source.indices], dtype=np.float32)
