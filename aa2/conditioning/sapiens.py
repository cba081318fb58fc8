"""Built-in pose and depth extraction with Sapiens, as the paper does (§4.1, implementation).

Animate Anyone 2 extracts the driving skeleton and depth with Sapiens (Khirodkar et al. 2024).
Meta publishes Sapiens "lite" exports as TorchScript files (`*_torchscript.pt2`), which load with
`torch.jit.load` and need no extra dependency. This module loads them from a path (the node layer
resolves `models/sapiens`) and reproduces the pre- and post-processing of Sapiens' own lite demos
(`lite/demo/vis_pose.py`, `vis_depth.py`, `pose_utils.py` in facebookresearch/sapiens):

* Input: RGB, 0..255, normalised with mean (123.675, 116.28, 103.53) and std (58.395, 57.12,
  57.375), at 1024 × 768 (H × W).
* Pose is top-down: Sapiens crops each person's box, padded by 1.25 and widened to the 3:4 input
  aspect, with an affine warp (black outside the frame). Without boxes the whole frame is that
  box, unpadded (a letterbox). Heatmaps come out at 1/4 resolution and are decoded with UDP
  (heatmap index j ↔ input index j · (in − 1) / (hm − 1)); the peak value is the confidence.
* Depth: the frame is stretched to 1024 × 768 and the 1-channel output is resized bilinearly back
  to the frame. Sapiens' depth is ordinary depth (larger = farther; its demo inverts it to show
  near as bright), so pass `convention="depth"` to `structured_depth`.

Keypoint sets, told apart by the heatmap channel count:
* 308 — Sapiens' "goliath" set: the 344 keypoints of `pose/configs/_base_/datasets/goliath.py`
  with the 36 teeth removed (`remove_teeth=True`, ids 220–255); ids below 220 keep their
  numbers, and every id used here is below 70.
* 133 — COCO-WholeBody: 17 body, 6 feet, 68 face, 21 left hand, 21 right hand (the same file's
  `coco_wholebody_info`, and the COCO-WholeBody paper).
* 17 — COCO body.
Mapping to what `skeleton.py` draws (the OpenPose 18 body + 21-point hands + 70-point face):
* Body: OpenPose order nose, neck, R shoulder/elbow/wrist, L shoulder/elbow/wrist, R hip/knee/
  ankle, L hip/knee/ankle, R eye, L eye, R ear, L ear, taken from the named ids below. The neck is
  the mean of the shoulders with the smaller of their confidences, as DWPose computes it (not
  Goliath's own `neck` point, which sits higher): the pose guider learned DWPose's neck.
* Hands: OpenPose's wrist, then four joints per finger from the palm out. COCO-WholeBody is
  already in that order. Goliath lists each finger tip first (`*4`, `*3`, `*2`,
  `*_third_joint`) with the wrist apart (41 right, 62 left), so its fingers are reversed.
* Face: COCO-WholeBody's 68 points plus the two eyes (70, as DWPose writes). Goliath's face
  points are a different landmark scheme with no 68-point contour; no face is produced from it.

Departures, and why:
- Keypoints are the heatmap argmax refined by a 1-D parabola per axis, not Sapiens' DARK-UDP
  (Gaussian-blurred Taylor refinement): both are sub-cell, and a cell is 4 input pixels; the
  parabola needs no blur kernel tied to the training sigma.
- Written keypoints get confidence 1 (kept) or 0 (below `min_confidence`, default 0.3 as DWPose),
  as comfyui_controlnet_aux writes them, because its reader drops anything below 1.
- No person detector: one person per frame, in its given box or the whole frame. Boxes can come
  from the character mask (SAM2), which the pipeline has anyway.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as nnf
from einops import rearrange

from ..errors import AA2InputError, AA2WeightsError
from .skeleton import PersonPose, PoseFrame, write_pose_keypoints

Task = Literal["pose", "depth"]
SAPIENS_INPUT_SIZE = (1024, 768)  # H, W
SAPIENS_MEAN = (123.675, 116.28, 103.53)
SAPIENS_STD = (58.395, 57.12, 57.375)
SAPIENS_BOX_PADDING = 1.25
KEYPOINT_SETS = {308: "goliath", 133: "coco_wholebody", 17: "coco"}

_NECK = -1  # placeholder in the body tables: computed from the shoulders
# OpenPose-18 body from each set (same order as skeleton.BODY_NAMES).
_BODY = {
    "goliath": (0, _NECK, 6, 8, 41, 5, 7, 62, 10, 12, 14, 9, 11, 13, 2, 1, 4, 3),
    "coco_wholebody": (0, _NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3),
    "coco": (0, _NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3),
}
_SHOULDERS = {"goliath": (5, 6), "coco_wholebody": (5, 6), "coco": (5, 6)}


def _goliath_hand(wrist: int, first: int) -> tuple[int, ...]:
    # Goliath: for each of thumb, fore, middle, ring, pinky, four ids from the tip in.
    return (wrist,) + tuple(first + 4 * f + 3 - j for f in range(5) for j in range(4))


_HANDS = {
    "goliath": {"left_hand": _goliath_hand(62, 42), "right_hand": _goliath_hand(41, 21)},
    "coco_wholebody": {"left_hand": tuple(range(91, 112)), "right_hand": tuple(range(112, 133))},
}
_FACE = {"coco_wholebody": tuple(range(23, 91))}


@dataclass(frozen=True)
class SapiensModel:
    """A loaded Sapiens TorchScript module and how to run it."""

    module: torch.nn.Module
    task: Task
    path: Path
    device: torch.device
    dtype: torch.dtype
    input_size: tuple[int, int] = SAPIENS_INPUT_SIZE


def load_sapiens(
    path: str | Path,
    task: Task,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    input_size: tuple[int, int] = SAPIENS_INPUT_SIZE,
) -> SapiensModel:
    """Load a Sapiens pose or depth model exported as TorchScript (`torch.jit.load`).

    Raises AA2WeightsError if the file is missing or is not TorchScript (a `.pth` checkpoint,
    a `torch.export` `*_bfloat16.pt2`, a safetensors file), naming the file and what to use.
    """
    if task not in ("pose", "depth"):
        raise AA2InputError(f"task must be 'pose' or 'depth'; got {task!r}.")
    path = Path(path)
    example = "sapiens_0.3b_goliath_best_goliath_AP_573_torchscript.pt2" if task == "pose" else (
        "sapiens_0.3b_render_people_epoch_100_torchscript.pt2")
    if not path.is_file():
        raise AA2WeightsError(
            f"Sapiens {task} model not found: {path}. Put a Sapiens TorchScript export (e.g. {example}) "
            "in ComfyUI's models/sapiens folder."
        )
    device = torch.device(device)
    try:
        with warnings.catch_warnings():
            # torch warns that TorchScript is deprecated; Sapiens ships it, and the user cannot act on it.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, OSError) as e:
        raise AA2WeightsError(
            f"{path} is not a TorchScript model ({_what_is(path)}). Sapiens releases several files per "
            f"model; use the *_torchscript.pt2 one (e.g. {example}), not the *_bfloat16.pt2 (torch.export) "
            f"or .pth checkpoint. Loader said: {str(e).splitlines()[0]}"
        ) from e
    module = module.to(dtype).eval()
    return SapiensModel(module, task, path, device, dtype, tuple(input_size))


def sapiens_pose(
    model: SapiensModel,
    frames: torch.Tensor,
    *,
    boxes: torch.Tensor | Sequence[Sequence[float] | None] | None = None,
    batch_size: int = 4,
    min_confidence: float = 0.3,
    hands: bool = True,
    face: bool = True,
) -> list[dict]:
    """Keypoints of one person per frame, as POSE_KEYPOINT in frame pixels.

    frames: `[F, 3, H, W]` float 0..1 RGB.
    boxes: optional per-frame person box (x1, y1, x2, y2) in pixels, `[F, 4]` or a list whose
        entries may be None (whole frame); e.g. the character mask's bounding box.
    batch_size: frames per forward pass; memory stays flat in the clip length.
    Returns one dict per frame (`people` with one entry, `canvas_height/width` = H, W).
    """
    _check_model(model, "pose")
    _check_frames(frames)
    windows = _pose_windows(frames.shape[-2:], boxes, len(frames), model.input_size)
    people = []
    for start in range(0, len(frames), _check_batch(batch_size)):
        sl = slice(start, start + batch_size)
        x = _preprocess(frames[sl], windows[sl], model)
        with torch.inference_mode():
            heatmaps = _run(model, x)
        if heatmaps.ndim != 4 or heatmaps.shape[1] not in KEYPOINT_SETS:
            raise AA2WeightsError(
                f"{model.path.name} returned {tuple(heatmaps.shape)}; a Sapiens pose model returns heatmaps "
                f"[B, K, H/4, W/4] with K in {sorted(KEYPOINT_SETS)}. Is this a pose model (not depth, "
                "normal or segmentation)?"
            )
        peaks = heatmap_peaks(heatmaps.float()).cpu().numpy()  # [B, K, 3] in heatmap cells
        hm_size = heatmaps.shape[-2:]
        for kp, win in zip(peaks, windows[sl]):
            kp = _to_frame(kp, hm_size, model.input_size, win)
            kp[:, 2] = np.where(kp[:, 2] >= min_confidence, 1.0, 0.0)
            kp[kp[:, 2] == 0, :2] = 0.0
            people.append(sapiens_to_openpose(kp, hands=hands, face=face))
    h, w = frames.shape[-2:]
    return write_pose_keypoints([PoseFrame(int(h), int(w), [p]) for p in people])


def sapiens_depth(model: SapiensModel, frames: torch.Tensor, *, batch_size: int = 4) -> torch.Tensor:
    """Relative depth per frame: `[F, 3, H, W]` 0..1 RGB → `[F, H, W]` float (larger = farther).

    The values are the model's raw output, resized to the frame; normalise with
    `structured_depth(..., convention="depth")`.
    """
    _check_model(model, "depth")
    _check_frames(frames)
    h, w = frames.shape[-2:]
    whole = np.array([[0.0, 0.0, float(w), float(h)]] * len(frames))  # stretched, as Sapiens' demo
    out = []
    for start in range(0, len(frames), _check_batch(batch_size)):
        sl = slice(start, start + batch_size)
        x = _preprocess(frames[sl], whole[sl], model)
        with torch.inference_mode():
            y = _run(model, x)
        if y.ndim == 3:
            y = y[:, None]
        if y.ndim != 4 or y.shape[1] != 1:
            raise AA2WeightsError(
                f"{model.path.name} returned {tuple(y.shape)}; a Sapiens depth model returns one channel "
                "[B, 1, h, w]. Is this a depth model (not pose, normal or segmentation)?"
            )
        y = nnf.interpolate(y.float(), size=(h, w), mode="bilinear", align_corners=False)
        out.append(rearrange(y, "b 1 h w -> b h w").to(frames.device))
    return torch.cat(out)


def heatmap_peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """Argmax of each heatmap refined to sub-cell by a parabola per axis.

    heatmaps: `[N, K, h, w]`. Returns `[N, K, 3]`: x, y in heatmap cells (index convention) and the
    peak value as confidence.
    """
    n, k, h, w = heatmaps.shape
    flat = rearrange(heatmaps, "n k h w -> n k (h w)")
    score, idx = flat.max(dim=-1)
    iy, ix = idx // w, idx % w

    def offset(hm: torch.Tensor, i: torch.Tensor, size: int, axis: int) -> torch.Tensor:
        # Vertex of the parabola through the peak and its two neighbours; 0 at the border.
        lo, hi = (i - 1).clamp(min=0), (i + 1).clamp(max=size - 1)
        pick = (lambda j: hm.gather(-1, (iy * w + j)[..., None])[..., 0]) if axis == 0 else (
            lambda j: hm.gather(-1, (j * w + ix)[..., None])[..., 0])
        a, b, c = pick(lo), pick(i), pick(hi)
        denom = a - 2 * b + c
        d = torch.where(denom < 0, 0.5 * (a - c) / denom.clamp(max=-1e-12), torch.zeros_like(denom))
        inside = (i > 0) & (i < size - 1)
        return torch.where(inside, d.clamp(-0.5, 0.5), torch.zeros_like(d))

    x = ix.float() + offset(flat, ix, w, 0)
    y = iy.float() + offset(flat, iy, h, 1)
    return torch.stack([x, y, score], dim=-1)


def sapiens_to_openpose(keypoints: np.ndarray, *, hands: bool = True, face: bool = True) -> PersonPose:
    """Map one person's Sapiens keypoints `[K, 3]` (K = 308, 133 or 17) to the OpenPose layout.

    See the module docstring for the tables and their sources.
    """
    k = len(keypoints)
    if k not in KEYPOINT_SETS:
        raise AA2InputError(f"Unknown Sapiens keypoint set with {k} keypoints; expected one of {sorted(KEYPOINT_SETS)}.")
    kset = KEYPOINT_SETS[k]
    body = np.zeros((18, 3))
    for i, src in enumerate(_BODY[kset]):
        if src != _NECK:
            body[i] = keypoints[src]
    ls, rs = (keypoints[j] for j in _SHOULDERS[kset])
    if ls[2] > 0 and rs[2] > 0:
        body[1] = [(ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2])]
    person = PersonPose(body)
    if hands and kset in _HANDS:
        for side, ids in _HANDS[kset].items():
            setattr(person, side, keypoints[list(ids)].copy())
    if face and kset in _FACE:
        person.face = np.concatenate([keypoints[list(_FACE[kset])], body[[14, 15]]])
    return person


# --- internals ------------------------------------------------------------------------------


def _check_model(model: SapiensModel, task: Task) -> None:
    if not isinstance(model, SapiensModel):
        raise AA2InputError(f"Expected a SapiensModel from load_sapiens; got {type(model).__name__}.")
    if model.task != task:
        raise AA2InputError(f"{model.path.name} was loaded as a {model.task} model; this step needs a {task} model.")


def _check_frames(frames: object) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise AA2InputError(f"Frames must be a tensor [F, 3, H, W] (F >= 1) in 0..1; got {shape}.")


def _check_batch(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AA2InputError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return batch_size


def _pose_windows(size, boxes, count: int, input_size) -> np.ndarray:
    """Per-frame crop windows (x0, y0, x1, y1) in continuous pixels, at the input's aspect."""
    h, w = (float(s) for s in size)
    if boxes is None:
        boxes = [None] * count
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().tolist()
    if len(boxes) != count:
        raise AA2InputError(f"boxes has {len(boxes)} entries for {count} frames; give one (or None) per frame.")
    aspect = input_size[1] / input_size[0]  # W / H
    out = np.zeros((count, 4))
    for i, box in enumerate(boxes):
        if box is None:
            cx, cy, bw, bh = w / 2, h / 2, w, h
        else:
            if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                raise AA2InputError(f"boxes[{i}] must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1; got {box}.")
            x1, y1, x2, y2 = (float(v) for v in box)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            bw, bh = (x2 - x1) * SAPIENS_BOX_PADDING, (y2 - y1) * SAPIENS_BOX_PADDING
        # Widen the short side to the model's aspect rather than squash the person (Sapiens does).
        bw, bh = (bw, bw / aspect) if bw > bh * aspect else (bh * aspect, bh)
        out[i] = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
    return out


def _preprocess(frames: torch.Tensor, windows: np.ndarray, model: SapiensModel) -> torch.Tensor:
    """Sample each window to the model's input size (black outside the frame) and normalise."""
    in_h, in_w = model.input_size
    b, _, h, w = frames.shape
    win = torch.as_tensor(windows, dtype=torch.float32, device=frames.device)
    # Output pixel u's centre is at x0 + (u + 0.5) · width / in_w; grid_sample wants -1..1 over
    # the frame's edges (align_corners=False).
    u = (torch.arange(in_w, device=frames.device) + 0.5) / in_w
    v = (torch.arange(in_h, device=frames.device) + 0.5) / in_h
    xs = win[:, :1] + u * (win[:, 2:3] - win[:, :1])
    ys = win[:, 1:2] + v * (win[:, 3:4] - win[:, 1:2])
    gx = (2 * xs / w - 1)[:, None, :].expand(b, in_h, in_w)
    gy = (2 * ys / h - 1)[:, :, None].expand(b, in_h, in_w)
    grid = torch.stack([gx, gy], dim=-1)
    x = nnf.grid_sample(frames.float() * 255.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = torch.tensor(SAPIENS_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(SAPIENS_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device=model.device, dtype=model.dtype)


def _run(model: SapiensModel, x: torch.Tensor) -> torch.Tensor:
    y = model.module(x)
    if isinstance(y, (tuple, list)):
        y = y[0]
    if not isinstance(y, torch.Tensor):
        raise AA2WeightsError(f"{model.path.name} returned {type(y).__name__}, not a tensor.")
    return y


def _to_frame(kp: np.ndarray, hm_size, input_size, window: np.ndarray) -> np.ndarray:
    """Heatmap cells → input pixels (UDP) → frame pixels (index convention)."""
    hm_h, hm_w = hm_size
    in_h, in_w = input_size
    out = kp.astype(np.float64).copy()
    u = out[:, 0] * (in_w - 1) / max(hm_w - 1, 1)
    v = out[:, 1] * (in_h - 1) / max(hm_h - 1, 1)
    x0, y0, x1, y1 = window
    out[:, 0] = x0 + (u + 0.5) * (x1 - x0) / in_w - 0.5
    out[:, 1] = y0 + (v + 0.5) * (y1 - y0) / in_h - 0.5
    return out


def _what_is(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return "not a zip archive: perhaps safetensors or a truncated download"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("constants.pkl") for n in names):
        return "a TorchScript archive that failed to load; it may need a newer torch"
    if any(n.endswith("data.pkl") for n in names):
        return "a PyTorch checkpoint (state dict), not TorchScript"
    return "a zip archive without TorchScript code, perhaps a torch.export program"
