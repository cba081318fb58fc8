"""DWPose whole-body keypoints through ONNX Runtime: the extractor Animate Anyone 1's pose guider saw.

The paper extracts its skeletons with Sapiens (`sapiens.py`); Animate Anyone 1 and the
Moore-AnimateAnyone weights were trained on DWPose (Yang et al. 2023) skeletons, and most ComfyUI
users already have DWPose's two ONNX files (huggingface.co/yzd-v/DWPose). This module runs them
with `onnxruntime`, an optional dependency imported only when a model is loaded.

The conventions are those of DWPose's ONNX demo (IDEA-Research/DWPose,
`ControlNet-v1-1-nightly/annotator/dwpose/onnxdet.py`, `onnxpose.py`) and of comfyui_controlnet_aux,
which carries the same code:

* Detector `yolox_l.onnx` (YOLOX-L, COCO's 80 classes): input `[1, 3, 640, 640]` float 0..255,
  the frame resized by r = min(640 / H, 640 / W) into the top-left corner of a canvas filled with
  114. The output `[1, N, 5 + 80]` is raw per grid cell over strides 8, 16, 32 (N = 8400 at 640):
  box centre (dx + cell) · stride, size exp(dw) · stride; objectness and class scores are already
  sigmoids. A person's score is objectness × the class-0 score; boxes above 0.3 are kept, then
  greedy NMS at IoU 0.45, and divided by r back to frame pixels.
* Pose `dw-ll_ucoco_384.onnx` (RTMPose-L distilled on COCO-WholeBody, 133 keypoints): top-down, the
  person's box padded by 1.25 and widened to the input's 3:4 aspect (the same window Sapiens
  uses, `sapiens._pose_windows`), warped affinely to `[1, 3, 384, 288]` (black outside the frame),
  RGB normalised with mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375). Outputs
  SimCC vectors `simcc_x [1, K, 288 · 2]` and `simcc_y [1, K, 384 · 2]`: a keypoint is the argmax
  of each divided by the split ratio 2, in input pixels, mapped back through the crop; its score is
  the *smaller* of the two maxima (DWPose's `get_simcc_maximum` takes the minimum, although its
  comment says "maximum").
* 133 keypoints → the OpenPose layout `skeleton.py` draws, by `sapiens.sapiens_to_openpose` (the
  COCO-WholeBody table: neck = mean of the shoulders, hands 21 each, face 68 + the two eyes = 70).
  Written confidences are 1 (kept, score ≥ `min_confidence`, 0.3 as DWPose) or 0, as Sapiens'.

Departures, and why:
- The detector gets the frame in BGR, the channel order YOLOX was trained on (its demo reads
  images with OpenCV). DWPose and comfyui_controlnet_aux hand it RGB; that changes detection
  scores a little, never the keypoints, which come from the pose model fed RGB as it expects.
- NMS uses continuous box areas, not DWPose's "+1 pixel" convention; for person-sized boxes the
  IoU differs in the third decimal.
- Boxes may be given per frame (e.g. the SAM2 character mask's), which skips the detector for
  that frame. Without a detector and without a box the whole frame is the box (as DWPose does
  when it finds nobody); a frame in which the detector finds nobody has no people (as
  comfyui_controlnet_aux writes it).

Frames are `[F, 3, H, W]` float 0..1 RGB, as everywhere in `aa2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from einops import rearrange

from ..errors import AA2Error, AA2InputError, AA2WeightsError
from .sapiens import KEYPOINT_SETS, SAPIENS_MEAN, SAPIENS_STD, _check_frames, _pose_windows, sapiens_to_openpose
from .skeleton import PoseFrame, write_pose_keypoints

DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
WEIGHTS_FOLDER = "models/dwpose"
WEIGHTS_SOURCE = "huggingface.co/yzd-v/DWPose"
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114.0
PERSON_CLASS = 0
DETECTION_SCORE = 0.3
NMS_IOU = 0.45
# Accelerated providers first; onnxruntime falls back to the next when one cannot start.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider",
                       "CPUExecutionProvider")


@dataclass(frozen=True)
class DWPoseModel:
    """Loaded DWPose sessions and the shapes read off them.

    pose_size / detector_size: input (H, W). simcc_outputs: the (x, y) output names.
    simcc_ratio: SimCC bins per input pixel (2 for DWPose).
    """

    pose: Any  # onnxruntime.InferenceSession
    pose_path: Path
    pose_size: tuple[int, int]
    keypoints: int
    simcc_outputs: tuple[str, str]
    simcc_ratio: float
    detector: Any = None
    detector_path: Path | None = None
    detector_size: tuple[int, int] = (640, 640)


def providers_for(device: str | torch.device) -> list[str] | None:
    """onnxruntime providers for the torch device the rest of a run uses: None (the accelerated
    default of `load_dwpose`) for CUDA, the CPU alone otherwise, so a CPU run never grabs a GPU."""
    return None if torch.device(device).type == "cuda" else ["CPUExecutionProvider"]


def load_dwpose(
    detector_path: str | Path | None,
    pose_path: str | Path,
    *,
    providers: Sequence[str] | None = None,
) -> DWPoseModel:
    """Open DWPose's ONNX files with onnxruntime and check they are the models expected.

    detector_path: `yolox_l.onnx`, or None to go without a detector (boxes given, or whole frames).
    providers: onnxruntime execution providers; default: CUDA (or ROCm, DirectML) if this
        onnxruntime has it, else the CPU.
    Raises AA2Error without onnxruntime, AA2WeightsError for a missing file, a file onnxruntime
    cannot read, or a model whose inputs and outputs are not DWPose's (saying what it found).
    """
    ort = _require_onnxruntime()
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in PREFERRED_PROVIDERS if p in available] or available
    pose = _session(ort, pose_path, "pose model", POSE_FILE, providers)
    pose_size, keypoints, outputs, ratio = _pose_signature(pose, Path(pose_path))
    detector, detector_size = None, (640, 640)
    if detector_path is not None:
        detector = _session(ort, detector_path, "person detector", DETECTOR_FILE, providers)
        detector_size = _detector_signature(detector, Path(detector_path))
    return DWPoseModel(pose, Path(pose_path), pose_size, keypoints, outputs, ratio, detector,
                       None if detector_path is None else Path(detector_path), detector_size)


def dwpose_detect(model: DWPoseModel, frames: torch.Tensor) -> list[np.ndarray]:
    """People found by the detector in each frame: `[N, 5]` (x1, y1, x2, y2, score) in frame
    pixels, best first. frames: `[F, 3, H, W]` float 0..1 RGB."""
    _check_model(model)
    if model.detector is None:
        raise AA2InputError("This DWPose model was loaded without a detector (detector_path=None); "
                            f"load it with {DETECTOR_FILE} to detect people.")
    return [_detect(model, image) for image in _to_pixels(frames)]


def dwpose_keypoints(
    model: DWPoseModel,
    frames: torch.Tensor,
    *,
    boxes: torch.Tensor | Sequence[Sequence[float] | None] | None = None,
    max_people: int | None = None,
    min_confidence: float = 0.3,
    hands: bool = True,
    face: bool = True,
) -> list[dict]:
    """Whole-body keypoints of the people in each frame, as POSE_KEYPOINT in frame pixels.

    frames: `[F, 3, H, W]` float 0..1 RGB.
    boxes: optional per-frame person box (x1, y1, x2, y2) in pixels, `[F, 4]` or a list whose
        entries may be None; a frame with a box has that one person and skips the detector.
    max_people: keep at most this many detected people per frame, the best scored (None: all).
    Returns one dict per frame (`people` ordered by detector score, `canvas_height/width` = H, W).
    """
    _check_model(model)
    images = _to_pixels(frames)
    h, w = images.shape[1:3]
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().tolist()
    if boxes is not None:
        _pose_windows((h, w), boxes, len(images), model.pose_size)  # validates count and each box
    if max_people is not None and (not isinstance(max_people, int) or max_people < 1):
        raise AA2InputError(f"max_people must be a positive integer or None (everyone); got {max_people!r}.")
    out = []
    for i, image in enumerate(images):
        box = None if boxes is None else boxes[i]
        if box is not None:
            people = [tuple(float(v) for v in box)]
        elif model.detector is not None:
            people = [tuple(d[:4]) for d in _detect(model, image)[:max_people]]
        else:
            people = [(0.0, 0.0, float(w), float(h))]
        found = _estimate(model, image, people, min_confidence)
        out.append(PoseFrame(h, w, [sapiens_to_openpose(kp, hands=hands, face=face) for kp in found]))
    return write_pose_keypoints(out)


# --- loading ----------------------------------------------------------------------------------


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise AA2Error(
            f"DWPose runs on onnxruntime, which is not installed ({error}). Install it into ComfyUI's "
            "Python: `pip install onnxruntime-gpu` (NVIDIA GPUs) or `pip install onnxruntime` (CPU)."
        ) from error
    return onnxruntime


def _session(ort, path: str | Path, what: str, expected: str, providers: Sequence[str]):
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(
            f"DWPose {what} not found: {path}. Put {expected} (from {WEIGHTS_SOURCE}; DWPose needs "
            f"{DETECTOR_FILE} and {POSE_FILE}) in ComfyUI's {WEIGHTS_FOLDER} folder."
        )
    try:
        return ort.InferenceSession(str(path), providers=list(providers))
    except Exception as error:  # onnxruntime's errors share no base class below Exception
        raise AA2WeightsError(
            f"{path} is not an ONNX model onnxruntime can read, so it cannot be DWPose's {what} "
            f"({expected}); the TorchScript exports (*.torchscript.pt) are not read here. "
            f"onnxruntime said: {str(error).splitlines()[0]}"
        ) from error


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def _signature(session) -> str:
    ins = ", ".join(f"{i.name} {list(i.shape)} {i.type}" for i in session.get_inputs())
    outs = ", ".join(f"{o.name} {list(o.shape)}" for o in session.get_outputs())
    return f"inputs {ins}; outputs {outs}"


def _image_input(session) -> tuple[int, int] | None:
    """(H, W) of a single float32 `[1 or N, 3, H, W]` input with a static size, else None."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(float)":
        return None
    batch, channels, height, width = inputs[0].shape
    if _static(channels) != 3 or _static(height) is None or _static(width) is None or _static(batch) not in (1, None):
        return None
    return height, width


def _detector_signature(session, path: Path) -> tuple[int, int]:
    size = _image_input(session)
    outputs = session.get_outputs()
    ok = size is not None and all(s % max(YOLOX_STRIDES) == 0 for s in size) and len(outputs) >= 1
    if ok:
        shape = outputs[0].shape
        cells = _static(shape[1]) if len(shape) == 3 else -1
        ok = len(shape) == 3 and cells in (None, len(_yolox_grid(size)[0])) and (_static(shape[2]) or 6) >= 6
    if not ok:
        raise AA2WeightsError(
            f"{path.name} is not a YOLOX person detector: it has {_signature(session)}. DWPose's detector "
            f"{DETECTOR_FILE} takes float32 [1, 3, 640, 640] and returns [1, 8400, 85]. Are the detector and the "
            "pose model swapped?"
        )
    return size


def _pose_signature(session, path: Path) -> tuple[tuple[int, int], int, tuple[str, str], float]:
    size = _image_input(session)
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    if {"simcc_x", "simcc_y"} <= set(names):
        pair = (outputs[names.index("simcc_x")], outputs[names.index("simcc_y")])
    else:
        pair = tuple(outputs[:2])  # RTMPose exports list x before y
    ok = size is not None and len(outputs) == 2 and all(len(o.shape) == 3 for o in pair)
    if ok:
        (_, kx, lx), (_, ky, ly) = (o.shape for o in pair)
        ratio = lx / size[1] if _static(lx) else 0.0
        ok = _static(kx) in KEYPOINT_SETS and kx == ky and ratio > 0 and _static(ly) == ratio * size[0]
    if not ok:
        raise AA2WeightsError(
            f"{path.name} is not an RTMPose / DWPose whole-body model: it has {_signature(session)}. DWPose's "
            f"{POSE_FILE} takes float32 [1, 3, 384, 288] and returns simcc_x [1, 133, 576] and simcc_y [1, 133, 768]. "
            "Are the detector and the pose model swapped?"
        )
    return size, int(kx), (pair[0].name, pair[1].name), float(ratio)


# --- running ----------------------------------------------------------------------------------


def _check_model(model: object) -> None:
    if not isinstance(model, DWPoseModel):
        raise AA2InputError(f"Expected a DWPoseModel from load_dwpose; got {type(model).__name__}.")


def _to_pixels(frames: torch.Tensor) -> np.ndarray:
    """`[F, 3, H, W]` float 0..1 → `[F, H, W, 3]` float32 0..255 RGB, on the CPU."""
    _check_frames(frames)
    if not frames.is_floating_point():
        raise AA2InputError(f"Frames must be float 0..1 (ComfyUI's IMAGE); got {frames.dtype}.")
    pixels = rearrange(frames.detach().float().clamp(0, 1) * 255.0, "f c h w -> f h w c")
    return np.ascontiguousarray(pixels.cpu().numpy())


def _yolox_grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction row's cell (x, y) and stride, in YOLOX's order: stride by stride, rows first."""
    cells, strides = [], []
    for stride in YOLOX_STRIDES:
        ys, xs = np.mgrid[0 : size[0] // stride, 0 : size[1] // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(xs.size, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)[:, None]


def _detect(model: DWPoseModel, image: np.ndarray) -> np.ndarray:
    in_h, in_w = model.detector_size
    h, w = image.shape[:2]
    ratio = min(in_h / h, in_w / w)
    size = (max(1, int(w * ratio)), max(1, int(h * ratio)))  # cv2 sizes are (width, height)
    canvas = np.full((in_h, in_w, 3), YOLOX_PAD_VALUE, np.float32)
    bgr = np.ascontiguousarray(image[..., ::-1])
    canvas[: size[1], : size[0]] = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    feed = {model.detector.get_inputs()[0].name: rearrange(canvas, "h w c -> 1 c h w")}
    pred = np.asarray(model.detector.run(None, feed)[0], dtype=np.float32)
    cells, strides = _yolox_grid(model.detector_size)
    if pred.ndim != 3 or pred.shape[1] != len(cells) or pred.shape[2] < 6:
        raise AA2WeightsError(f"{model.detector_path.name} returned {pred.shape}; a YOLOX detector at "
                              f"{in_h}×{in_w} returns [1, {len(cells)}, 5 + classes].")
    pred = pred[0]
    centre = (pred[:, :2] + cells) * strides
    with np.errstate(over="ignore"):
        half = np.exp(pred[:, 2:4]) * strides / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1) / ratio
    scores = pred[:, 4] * pred[:, 5 + PERSON_CLASS]
    # Thresholding before NMS gives DWPose's result: a box is only ever suppressed by a better one.
    keep = scores > DETECTION_SCORE
    boxes, scores = boxes[keep], scores[keep]
    order = _nms(boxes, scores, NMS_IOU)
    return np.concatenate([boxes[order], scores[order, None]], axis=1).astype(np.float64)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        overlap = inter / np.maximum(area[best] + area[rest] - inter, 1e-12)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=int)


def _estimate(model: DWPoseModel, image: np.ndarray, boxes: list[tuple[float, ...]],
              min_confidence: float) -> list[np.ndarray]:
    """One `[K, 3]` array (x, y in frame pixels, confidence 1 or 0) per box."""
    if not boxes:
        return []
    in_h, in_w = model.pose_size
    windows = _pose_windows(image.shape[:2], boxes, len(boxes), model.pose_size)
    mean, std = np.asarray(SAPIENS_MEAN, np.float32), np.asarray(SAPIENS_STD, np.float32)  # ImageNet's
    name = model.pose.get_inputs()[0].name
    out = []
    for x0, y0, x1, y1 in windows:
        # Frame pixel (x, y) lands on input pixel ((x - x0) · sx, (y - y0) · sy), pixel centres at
        # integers, as DWPose's (and mmpose's) warp matrix puts them; the decode below inverts it.
        sx, sy = in_w / (x1 - x0), in_h / (y1 - y0)
        warp = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])
        crop = cv2.warpAffine(image, warp, (in_w, in_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = rearrange((crop - mean) / std, "h w c -> 1 c h w").astype(np.float32)
        simcc_x, simcc_y = (np.asarray(a, np.float32) for a in model.pose.run(list(model.simcc_outputs), {name: x}))
        expected_x, expected_y = (1, model.keypoints, round(in_w * model.simcc_ratio)), (
            1, model.keypoints, round(in_h * model.simcc_ratio))
        if simcc_x.shape != expected_x or simcc_y.shape != expected_y:
            raise AA2WeightsError(f"{model.pose_path.name} returned {simcc_x.shape} and {simcc_y.shape}; "
                                  f"expected simcc_x {list(expected_x)} and simcc_y {list(expected_y)}.")
        kp = np.zeros((model.keypoints, 3))
        kp[:, 0] = x0 + simcc_x[0].argmax(-1) / model.simcc_ratio / sx
        kp[:, 1] = y0 + simcc_y[0].argmax(-1) / model.simcc_ratio / sy
        score = np.minimum(simcc_x[0].max(-1), simcc_y[0].max(-1))
        kp[:, 2] = np.where(score >= min_confidence, 1.0, 0.0)
        kp[kp[:, 2] == 0, :2] = 0.0
        out.append(kp)
    return out
