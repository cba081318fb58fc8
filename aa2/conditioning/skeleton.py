"""Skeleton maps: the pose half of depth-wise pose modulation's input (paper §3.4).

Animate Anyone 2 drives the character with a rendered skeleton per frame, as Animate Anyone 1 did
(which rendered DWPose). The pose guider has only ever seen skeletons drawn in the OpenPose /
DWPose style: the 18-keypoint body with 17 limbs, each limb a filled ellipse in its own colour at
60% brightness and each joint a dot in full colour; hands as 20 rainbow-coloured edges with blue
joints; the face as white dots. A skeleton drawn in any other style is a different input
distribution, so this module reproduces that look (the colour table is the OpenPose standard)
rather than inventing one.

Keypoints come in ComfyUI's `POSE_KEYPOINT` form, which comfyui_controlnet_aux writes for its
DWPose and OpenPose preprocessors: a list with one dict per frame,

    {"people": [{"pose_keypoints_2d": [x, y, c, ...] (18 × 3),
                 "hand_left_keypoints_2d": [...] (21 × 3) or None,
                 "hand_right_keypoints_2d": [...] (21 × 3) or None,
                 "face_keypoints_2d": [...] (70 × 3 from DWPose) or None}, ...],
     "canvas_width": W, "canvas_height": H}

Coordinates: its DWPose path writes pixels of the canvas; its OpenPose path writes 0..1 fractions
of the canvas. Both occur in the wild, and the file does not say which, so `coords="auto"` decides
per frame the way comfyui_controlnet_aux's own renderer does: if every present coordinate lies in
[0, 1] the frame is normalised, otherwise pixels. Pass `coords` explicitly to remove the guess.
A keypoint is missing when its confidence is not above `min_confidence` (DWPose writes c = 0 for
missing and 1 for present); missing keypoints and the limbs that touch them are not drawn.
OpenPose's BODY_25 layout (25 body keypoints) is accepted and reduced to the 18 drawn here.

Departures, and why:
- One person by default (`person="largest"`), where DWPose's image draws everyone: the model
  animates one character, and the others in a multi-person driving video belong to the
  environment. `person="all"` draws everyone, `person=i` picks the i-th entry.
- Coordinates are rounded to the nearest pixel (DWPose truncates), so a keypoint at 9.9 lands on
  pixel 10; the difference is under a pixel.
- Line widths are pixels of the output canvas (`stick_width=4` as DWPose draws at the canvas size).

Layout: rendered frames are `[F, 3, H, W]` float 0..1, RGB.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as nnf

from ..errors import AA2InputError, size_text

Coords = Literal["auto", "normalized", "pixels"]
PersonChoice = int | Literal["largest", "all"]

# OpenPose 18-keypoint body (the COCO-18 layout DWPose writes):
BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# The 17 limbs, as (from, to) keypoint indices, in OpenPose's drawing order; LIMB_COLORS[i] is
# limb i's colour (drawn at 60%) and also keypoint i's dot colour (drawn at 100%).
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
LIMB_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_BRIGHTNESS = 0.6
# OpenPose 21-keypoint hand: 0 = wrist, then four joints per finger from the palm out.
HAND_EDGES = tuple(
    (0 if j == 0 else 1 + 4 * finger + j - 1, 1 + 4 * finger + j) for finger in range(5) for j in range(4)
)
HAND_EDGE_COLORS = tuple(
    tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
    for i in range(len(HAND_EDGES))
)
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)
# BODY_25 → the 18 above (BODY_25 inserts MidHip at 8 and appends six foot points).
_BODY25_TO_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


@dataclass
class PersonPose:
    """One person's keypoints, each an array `[K, 3]` of (x, y, confidence) in canvas pixels.

    Missing keypoints have confidence 0 (and are kept in place, so indices keep their meaning).
    Hands and face are None when the source had none.
    """

    body: np.ndarray
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    face: np.ndarray | None = None

    def parts(self) -> dict[str, np.ndarray | None]:
        return {"body": self.body, "left_hand": self.left_hand, "right_hand": self.right_hand, "face": self.face}

    def box_size(self, min_confidence: float = 0.0) -> float:
        """Diagonal of the box around the present keypoints (body first, all parts if no body).

        The diagonal rather than the area, so a person seen as a single straight limb still has a size.
        """
        for arrays in ([self.body], [a for a in self.parts().values() if a is not None]):
            pts = np.concatenate([a[a[:, 2] > min_confidence, :2] for a in arrays])
            if len(pts):
                span = pts.max(0) - pts.min(0)
                return float(np.hypot(*span))
        return 0.0


@dataclass
class PoseFrame:
    """One frame of POSE_KEYPOINT: its people, in pixels of a `height × width` canvas."""

    height: int
    width: int
    people: list[PersonPose] = field(default_factory=list)


_JSON_PARTS = {
    "body": "pose_keypoints_2d",
    "left_hand": "hand_left_keypoints_2d",
    "right_hand": "hand_right_keypoints_2d",
    "face": "face_keypoints_2d",
}


def read_pose_keypoints(data: object, coords: Coords = "auto") -> list[PoseFrame]:
    """Parse ComfyUI's POSE_KEYPOINT (a list of frame dicts, one dict, or their JSON text).

    Returns one `PoseFrame` per frame with every coordinate in canvas pixels. Raises
    AA2InputError naming the frame and field for anything malformed.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise AA2InputError(f"POSE_KEYPOINT text is not valid JSON: {e}.") from e
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, Sequence) or len(data) == 0:
        raise AA2InputError(
            "POSE_KEYPOINT must be a non-empty list with one dict per frame (as DWPose/OpenPose "
            f"preprocessors emit); got {type(data).__name__}."
        )
    if coords not in ("auto", "normalized", "pixels"):
        raise AA2InputError(f"coords must be 'auto', 'normalized' or 'pixels'; got {coords!r}.")
    return [_read_frame(frame, i, coords) for i, frame in enumerate(data)]


def write_pose_keypoints(frames: Sequence[PoseFrame]) -> list[dict]:
    """The inverse of `read_pose_keypoints`: POSE_KEYPOINT dicts in canvas pixels.

    Missing keypoints are written as (0, 0, 0), as comfyui_controlnet_aux writes them.
    """
    out = []
    for frame in frames:
        people = []
        for person in frame.people:
            entry = {}
            for name, key in _JSON_PARTS.items():
                arr = getattr(person, name)
                if arr is None:
                    entry[key] = None
                    continue
                arr = arr.astype(np.float64).copy()
                arr[arr[:, 2] <= 0] = 0.0
                entry[key] = [float(v) for v in arr.reshape(-1)]
            people.append(entry)
        out.append({"people": people, "canvas_height": int(frame.height), "canvas_width": int(frame.width)})
    return out


def select_people(frame: PoseFrame, person: PersonChoice = "largest", min_confidence: float = 0.0) -> list[PersonPose]:
    """The people of a frame to use: all of them, the i-th, or the one with the largest box
    (by its diagonal).

    A frame without that person gives an empty list (nothing is drawn), not an error: detectors
    drop people for a frame or two, and the clip should go on.
    """
    if person == "all":
        return list(frame.people)
    if person == "largest":
        if not frame.people:
            return []
        return [max(frame.people, key=lambda p: p.box_size(min_confidence))]
    if isinstance(person, (int, np.integer)) and not isinstance(person, bool) and person >= 0:
        return [frame.people[person]] if person < len(frame.people) else []
    raise AA2InputError(f"person must be 'all', 'largest' or an index >= 0; got {person!r}.")


def render_skeleton(
    pose_keypoints: object,
    height: int | None = None,
    width: int | None = None,
    *,
    person: PersonChoice = "largest",
    body: bool = True,
    hands: bool = True,
    face: bool = True,
    coords: Coords = "auto",
    min_confidence: float = 0.0,
    stick_width: int = 4,
    require_person: bool = False,
) -> torch.Tensor:
    """Draw OpenPose/DWPose-style skeletons from POSE_KEYPOINT data.

    pose_keypoints: POSE_KEYPOINT (list of frame dicts, JSON text) or a list of `PoseFrame`.
    height, width: output size; None takes the first frame's canvas. Each frame's keypoints are
        scaled from its own canvas to this size (x by width / canvas_width, y likewise).
    person: which people to draw (see `select_people`).
    min_confidence: a keypoint is drawn when its confidence is above this.
    stick_width: half-thickness of a body limb in output pixels (DWPose: 4); dots and hand lines
        scale with it.
    require_person: refuse keypoints that draw nobody on every frame (a black pose video would
        animate nothing, silently); single empty frames are fine, as detectors drop people.
    Returns `[F, 3, H, W]` float 0..1, RGB, black background.
    """
    frames = _as_frames(pose_keypoints, coords)
    height = frames[0].height if height is None else height
    width = frames[0].width if width is None else width
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise AA2InputError(f"width and height must be positive integers; got width {width!r}, height {height!r}.")
    if stick_width < 1:
        raise AA2InputError(f"stick_width must be at least 1 pixel; got {stick_width}.")
    out = np.zeros((len(frames), height, width, 3), np.uint8)
    for index, (canvas, frame) in enumerate(zip(out, frames)):
        scale = np.array([width / frame.width, height / frame.height, 1.0])
        for p in select_people(frame, person, min_confidence):
            _check_drawable(p, scale, height, width, min_confidence, index, frame)
            if body:
                _draw_body(canvas, p.body * scale, min_confidence, stick_width)
            if hands:
                for hand in (p.left_hand, p.right_hand):
                    if hand is not None:
                        _draw_hand(canvas, hand * scale, min_confidence, stick_width)
            if face and p.face is not None:
                _draw_face(canvas, p.face * scale, min_confidence, stick_width)
    if require_person and not out.any():
        raise AA2InputError(
            f"POSE_KEYPOINT has no person on any of its {len(frames)} frames, so the skeleton would be black and "
            "the character would not move. Check that the pose estimator found the person (its detection "
            "threshold, the frames' orientation), or connect skeleton images instead."
        )
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


# Keypoints this many output sizes away from the canvas are not pixels of it (OpenCV's integer
# coordinates overflow long before, with a TypeError that names nothing).
_FAR = 64


def _check_drawable(person: PersonPose, scale: np.ndarray, height: int, width: int, min_confidence: float,
                    index: int, frame: PoseFrame) -> None:
    for name, arr in person.parts().items():
        if arr is None:
            continue
        pts = (arr * scale)[arr[:, 2] > min_confidence, :2]
        if len(pts) and (np.abs(pts) > _FAR * max(height, width)).any():
            x, y = arr[np.abs(arr[:, :2] * scale[:2]).max(1).argmax(), :2]
            raise AA2InputError(
                f"POSE_KEYPOINT frame {index}: a {name.replace('_', ' ')} keypoint at ({x:g}, {y:g}) lies far outside "
                f"its {size_text(frame.height, frame.width)} canvas; keypoints must be pixels of the canvas (or "
                "0..1 of it). Check the canvas_width / canvas_height and the estimator that wrote them."
            )


def prepare_skeleton_images(images: torch.Tensor, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Accept skeleton images rendered elsewhere (a DWPose/OpenPose node's IMAGE output).

    images: `[F, 3, H, W]` (or `[F, 1, H, W]` grey, `[F, 4, H, W]` with alpha), float 0..1 or uint8.
    Scaled to `height × width` when given: bilinear, antialiased when shrinking, so thin limbs fade
    rather than break up. Images of another aspect ratio, or smaller than 16 px, are refused: a
    stretched skeleton is a body of other proportions. Returns `[F, 3, H, W]` float 0..1.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise AA2InputError(f"Skeleton images must be a tensor [F, 3, H, W]; got {shape}.")
    if images.shape[1] not in (1, 3, 4):
        raise AA2InputError(
            f"Skeleton images must have 1, 3 or 4 channels on axis 1 ([F, C, H, W]); got shape "
            f"{tuple(images.shape)}. ComfyUI IMAGE [B, H, W, C] must be permuted first."
        )
    if images.shape[0] == 0:
        raise AA2InputError("Skeleton images are empty (0 frames).")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    else:
        images = images.float()
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise AA2InputError(
                f"Skeleton images must be in 0..1; got values in [{lo:.3g}, {hi:.3g}]. Divide 0..255 images by 255."
            )
        images = images.clamp(0, 1)
    images = images[:, :3] if images.shape[1] == 4 else images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    h, w = images.shape[-2:]
    height, width = height or h, width or w
    if (height, width) != (h, w) and (min(h, w) < 16 or abs((w / h) / (width / height) - 1) > 0.01):
        # Scaling a skeleton keeps its pose; stretching one to another shape (or blowing up a
        # thumbnail) changes the body's proportions, and the character would take them on.
        raise AA2InputError(
            f"the skeleton images are {size_text(h, w)} but the output is {size_text(height, width)}: stretching "
            "them would distort the body. Give skeletons of the output's size or aspect ratio (draw them at "
            "the video's size, or crop / resize the video and skeletons together), or set the output size to "
            "the skeletons' shape."
        )
    if (height, width) != (h, w):
        shrink = height < h or width < w
        images = nnf.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
        images = images.clamp(0, 1)
    return images.contiguous()


# --- parsing --------------------------------------------------------------------------------


def _as_frames(data: object, coords: Coords) -> list[PoseFrame]:
    if isinstance(data, Sequence) and data and all(isinstance(f, PoseFrame) for f in data):
        return list(data)
    return read_pose_keypoints(data, coords)


def _read_frame(frame: object, index: int, coords: Coords) -> PoseFrame:
    if not isinstance(frame, Mapping):
        raise AA2InputError(f"POSE_KEYPOINT frame {index} must be a dict; got {type(frame).__name__}.")
    try:
        height, width = int(frame["canvas_height"]), int(frame["canvas_width"])
    except (KeyError, TypeError, ValueError) as e:
        raise AA2InputError(
            f"POSE_KEYPOINT frame {index} needs integer 'canvas_height' and 'canvas_width'; got keys {sorted(frame)}."
        ) from e
    if height <= 0 or width <= 0:
        raise AA2InputError(f"POSE_KEYPOINT frame {index} has an empty canvas {size_text(height, width)}.")
    listed = frame.get("people") or []
    if not isinstance(listed, (list, tuple)):
        raise AA2InputError(f"POSE_KEYPOINT frame {index}: 'people' must be a list of person dicts; "
                            f"got {type(listed).__name__}.")
    people = []
    for j, entry in enumerate(listed):
        if not isinstance(entry, Mapping):
            raise AA2InputError(f"POSE_KEYPOINT frame {index}, person {j} must be a dict; got {type(entry).__name__}.")
        parts = {}
        for name, key in _JSON_PARTS.items():
            parts[name] = _read_part(entry.get(key), f"frame {index}, person {j}, '{key}'")
        if parts["body"] is None:
            parts["body"] = np.zeros((18, 3))
        elif len(parts["body"]) == 25:
            parts["body"] = parts["body"][list(_BODY25_TO_18)]
        elif len(parts["body"]) != 18:
            raise AA2InputError(
                f"POSE_KEYPOINT frame {index}, person {j}: 'pose_keypoints_2d' has {len(parts['body'])} "
                "keypoints; expected 18 (OpenPose COCO-18 / DWPose) or 25 (BODY_25)."
            )
        for hand in ("left_hand", "right_hand"):
            if parts[hand] is not None and len(parts[hand]) != 21:
                raise AA2InputError(
                    f"POSE_KEYPOINT frame {index}, person {j}: {hand} has {len(parts[hand])} keypoints; expected 21."
                )
        people.append(PersonPose(**parts))
    if _is_normalised(people, coords):
        scale = np.array([width, height, 1.0])
        for p in people:
            for name in _JSON_PARTS:
                arr = getattr(p, name)
                if arr is not None:
                    setattr(p, name, arr * scale)
    return PoseFrame(height, width, people)


def _read_part(values: object, where: str) -> np.ndarray | None:
    if values is None or (isinstance(values, Sequence) and len(values) == 0):
        return None
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise AA2InputError(f"POSE_KEYPOINT {where} must be a flat list of numbers.") from e
    if arr.size % 3:
        raise AA2InputError(f"POSE_KEYPOINT {where} has {arr.size} numbers; expected x, y, c triples.")
    if not np.isfinite(arr).all():
        raise AA2InputError(f"POSE_KEYPOINT {where} contains NaN or infinity.")
    arr = arr.reshape(-1, 3)
    # Missing keypoints may carry junk positions; c <= 0 alone decides, so zero them for clarity.
    arr[arr[:, 2] <= 0] = 0.0
    return arr


def _is_normalised(people: list[PersonPose], coords: Coords) -> bool:
    if coords != "auto":
        return coords == "normalized"
    pts = [a[a[:, 2] > 0, :2] for p in people for a in p.parts().values() if a is not None]
    pts = np.concatenate(pts) if pts else np.zeros((0, 2))
    return len(pts) > 0 and bool((np.abs(pts) <= 1.0).all())


# --- drawing (RGB uint8 canvases, in place) -------------------------------------------------


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def _draw_body(canvas: np.ndarray, kp: np.ndarray, min_confidence: float, stick_width: int) -> None:
    present = kp[:, 2] > min_confidence
    for (a, b), color in zip(BODY_LIMBS, LIMB_COLORS):
        if not (present[a] and present[b]):
            continue
        # A limb is a filled ellipse whose long axis spans the two joints, as OpenPose draws it.
        mid = (kp[a, :2] + kp[b, :2]) / 2
        d = kp[a, :2] - kp[b, :2]
        length = float(np.hypot(*d))
        angle = int(round(np.degrees(np.arctan2(d[1], d[0]))))
        poly = cv2.ellipse2Poly(_pt(mid), (int(round(length / 2)), stick_width), angle, 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, tuple(int(c * LIMB_BRIGHTNESS) for c in color))
    for i in range(len(BODY_NAMES)):
        if present[i]:
            cv2.circle(canvas, _pt(kp[i]), stick_width, LIMB_COLORS[i], thickness=-1)


def _draw_hand(canvas: np.ndarray, kp: np.ndarray, min_confidence: float, stick_width: int) -> None:
    present = kp[:, 2] > min_confidence
    line = max(1, stick_width // 2)
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if present[a] and present[b]:
            cv2.line(canvas, _pt(kp[a]), _pt(kp[b]), color, thickness=line)
    for i in np.flatnonzero(present):
        cv2.circle(canvas, _pt(kp[i]), stick_width, HAND_JOINT_COLOR, thickness=-1)


def _draw_face(canvas: np.ndarray, kp: np.ndarray, min_confidence: float, stick_width: int) -> None:
    radius = max(1, (3 * stick_width) // 4)
    for i in np.flatnonzero(kp[:, 2] > min_confidence):
        cv2.circle(canvas, _pt(kp[i]), radius, FACE_COLOR, thickness=-1)
