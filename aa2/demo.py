"""`python -m aa2 demo`: the whole path on a fresh machine, in under a minute on two CPU cores
(about 15 s when they are not shared).

It writes tiny random weights (`aa2.weights.tiny`) and a synthetic driving scene — a stick figure
walking and pushing a box across a landscape — as the files a user would have: a driving video,
the character mask, the object mask, a depth video, skeleton images (a PNG folder) and a reference
image. Then it runs exactly what `python -m aa2 animate` runs on them: the file readers, the
shape-agnostic mask (§3.2), structured depth (§3.4), the object sequence, the environment, and a
video long enough for at least two clips (motion frames carried as latents between them).

Random weights animate nothing; the demo says so. Its job is to prove the install.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange

from .errors import AA2InputError

NOTICE = (
    "This demo runs tiny RANDOM weights: the video it writes is coloured noise, not an animation of the figure.\n"
    "Its job is to prove the install: weights -> input files -> masks, depth, objects -> clips of "
    "denoising chained as latents -> video.\nFor real animations, convert real weights (see README) and use `python -m aa2 animate`."
)

# Colours (RGB 0..255) of the synthetic character and scene.
_SHIRT, _TROUSERS, _SKIN, _BOX = (40, 90, 200), (40, 40, 60), (230, 180, 140), (230, 120, 30)


@dataclass
class DemoScene:
    """Synthetic driving inputs. Frames `[F, 3, S, S]` 0..1; masks `[F, S, S]` 0/1."""

    reference: torch.Tensor  # [3, S, S]
    video: torch.Tensor
    pose: torch.Tensor
    depth: torch.Tensor  # inverse depth (near = bright), as depth preprocessors write it
    mask: torch.Tensor  # the character, exact (the CLI makes it shape-agnostic)
    object_mask: torch.Tensor  # the box


def figure_keypoints(t: float, size: int) -> np.ndarray:
    """COCO-18 body keypoints `[18, 3]` (x, y, confidence) in pixels at time t in [0, 1]: the
    figure walks right, its right hand on the box, legs and left arm swinging."""
    cx = 0.22 + 0.30 * t
    swing = math.sin(2 * math.pi * 2 * t)  # two strides over the clip
    fractions = [
        (cx, 0.20), (cx, 0.30),  # nose, neck
        (cx + 0.07, 0.31), (cx + 0.13, 0.38), (cx + 0.19, 0.45),  # right shoulder, elbow, wrist (on the box)
        (cx - 0.07, 0.31), (cx - 0.09 - 0.02 * swing, 0.42), (cx - 0.10 - 0.05 * swing, 0.53),  # left arm
        (cx + 0.04, 0.55), (cx + 0.05 + 0.04 * swing, 0.70), (cx + 0.05 + 0.07 * swing, 0.85),  # right leg
        (cx - 0.04, 0.55), (cx - 0.05 - 0.04 * swing, 0.70), (cx - 0.05 - 0.07 * swing, 0.85),  # left leg
        (cx + 0.02, 0.185), (cx - 0.02, 0.185), (cx + 0.04, 0.20), (cx - 0.04, 0.20),  # eyes, ears
    ]
    points = np.array(fractions, dtype=np.float64) * size
    return np.concatenate([points, np.ones((18, 1))], axis=1)


def make_scene(frames: int, size: int) -> DemoScene:
    """Draw the synthetic scene (deterministic: no randomness)."""
    if frames < 1 or size < 64 or size % 64:
        raise AA2InputError(f"the demo needs frames >= 1 and a size that is a multiple of 64; got {frames}, {size}")
    from .conditioning.skeleton import PersonPose, PoseFrame, render_skeleton

    background = _background(size)
    video, depth, mask, object_mask, poses = [], [], [], [], []
    for i in range(frames):
        kp = figure_keypoints(i / max(frames - 1, 1), size)
        wrist = kp[4, :2]
        box = (int(wrist[0]), int(0.42 * size), int(wrist[0] + 0.16 * size), int(0.86 * size))  # x0, y0, x1, y1
        rgb = background.copy()
        cv2.rectangle(rgb, box[:2], box[2:], _BOX, thickness=-1)
        _draw_figure(rgb, kp, size)
        figure = np.zeros((size, size), np.uint8)
        _draw_figure(figure, kp, size, flat=255)
        boxes = np.zeros((size, size), np.uint8)
        cv2.rectangle(boxes, box[:2], box[2:], 255, thickness=-1)
        near = _background_depth(size)
        near[boxes > 0] = 150
        _draw_figure(near, kp, size, flat=220)
        video.append(rgb), depth.append(near), mask.append(figure), object_mask.append(boxes)
        poses.append(PoseFrame(size, size, [PersonPose(body=kp)]))

    reference = np.full((size, size, 3), 255, np.uint8)
    _draw_figure(reference, _standing(size), size)
    stick = max(1, round(4 * size / 512))  # DWPose's 4 px at 512, scaled to the canvas
    return DemoScene(
        reference=_frames(reference[None])[0],
        video=_frames(np.stack(video)),
        pose=render_skeleton(poses, size, size, stick_width=stick),
        depth=_frames(np.repeat(np.stack(depth)[..., None], 3, axis=3)),
        mask=torch.from_numpy(np.stack(mask) > 127).float(),
        object_mask=torch.from_numpy(np.stack(object_mask) > 127).float(),
    )


def write_scene(scene: DemoScene, folder: Path, fps: float = 8.0):
    """The scene as a user's files; returns the `InputFiles` for `load_inputs`."""
    from .animate_command import InputFiles
    from .video_io import write_image, write_video

    folder.mkdir(parents=True, exist_ok=True)

    def masks(m: torch.Tensor) -> torch.Tensor:
        return m[..., None].expand(-1, -1, -1, 3)

    def video(x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "f c h w -> f h w c")

    return InputFiles(
        reference=write_image(folder / "reference.png", scene.reference),
        pose=write_video(folder / "pose", video(scene.pose)),  # PNG folder: skeleton colours stay exact
        video=write_video(folder / "driving.mp4", video(scene.video), fps),
        mask=write_video(folder / "character_mask.mp4", masks(scene.mask), fps),
        depth=write_video(folder / "depth.mp4", video(scene.depth), fps),
        object_mask=write_video(folder / "object_mask.mp4", masks(scene.object_mask), fps),
    )


def run_demo(
    out: Path,
    *,
    frames: int = 32,
    size: int = 128,
    steps: int = 6,
    seed: int = 0,
    clip_length: int | None = None,
    models_dir: Path | None = None,
    inputs_dir: Path | None = None,
    show_progress: bool = True,
) -> int:
    """Write weights and inputs, animate, write `out`. Returns the exit status."""
    from .animate_command import ReadOptions, load_for_device, load_inputs, render
    from .pipeline.inputs import SamplingSettings
    from .video_io import check_output_path
    from .weights.sources import ModelSources
    from .weights.tiny import NAME, make_tiny_weights

    out = check_output_path(out)
    print(NOTICE)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aa2-demo-") as temp:
        models = models_dir or Path(temp) / "models"
        checkpoint = models / "animateanyone2" / f"{NAME}.safetensors"
        if not checkpoint.is_file():
            print(f"writing tiny random weights to {models} ...", file=sys.stderr)
            make_tiny_weights(models, seed=seed)
        files = write_scene(make_scene(frames, size), inputs_dir or Path(temp) / "inputs")
        inputs = load_inputs(files, ReadOptions())
        model = load_for_device(ModelSources.from_path(checkpoint), torch.device("cpu"), torch.float32)
        length = clip_length or model.config.motion.trained_frames
        settings = SamplingSettings(steps=steps, cfg=2.5, seed=seed, clip_length=length, motion_frames=1,
                                    environment="input+blend", paste_environment=True, feather=2)
        clips = 1 + max(0, math.ceil((frames - length) / (length - 1)))
        print(f"animating {frames} frames at {size}x{size} in {clips} clip(s) of up to {length} frames, {steps} steps, "
              "with environment, objects and structured depth", file=sys.stderr)
        status = render(model, inputs, settings, out, 8.0, show_progress=show_progress)
    if status == 0:
        print(f"demo finished in {time.perf_counter() - started:.1f} s. Reminder: random weights, so the video shows "
              "noise; the install works.")
    return status


# ------------------------------------------------------------------------------------ drawing


def _background(size: int) -> np.ndarray:
    """Sky above a horizon, ground below, a sun and two trees: a scene with fixed structure."""
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.array([150, 200, 240]) * (1 - 0.3 * y) + 0
    ground = np.array([90, 150, 70]) * (1.2 - 0.4 * y)
    image = np.where(y < 0.62, sky, ground).repeat(size, axis=1)
    image = np.ascontiguousarray(image.clip(0, 255).astype(np.uint8))
    cv2.circle(image, (int(0.82 * size), int(0.14 * size)), max(2, size // 14), (250, 220, 90), -1)
    for x in (0.08, 0.92):
        cv2.rectangle(image, (int(x * size) - 1, int(0.45 * size)), (int(x * size) + 1, int(0.7 * size)), (100, 70, 40), -1)
        cv2.circle(image, (int(x * size), int(0.42 * size)), max(2, size // 12), (40, 110, 50), -1)
    return image


def _background_depth(size: int) -> np.ndarray:
    """Inverse depth of the scene: the ground nears toward the bottom of the frame."""
    y = np.linspace(0, 1, size)[:, None]
    near = np.where(y < 0.62, 30.0, 40 + 80 * (y - 0.62) / 0.38)
    return np.ascontiguousarray(np.repeat(near, size, axis=1).astype(np.uint8))


def _standing(size: int) -> np.ndarray:
    """The reference pose: upright, arms slightly out, centred."""
    kp = figure_keypoints(0.0, size)
    shift = 0.5 * size - kp[1, 0]
    kp[:, 0] += shift
    cx = 0.5 * size
    kp[3, :2], kp[4, :2] = (cx + 0.10 * size, 0.42 * size), (cx + 0.12 * size, 0.53 * size)
    kp[6, :2], kp[7, :2] = (cx - 0.10 * size, 0.42 * size), (cx - 0.12 * size, 0.53 * size)
    for knee, ankle, side in ((9, 10, 1), (12, 13, -1)):
        kp[knee, :2], kp[ankle, :2] = (cx + side * 0.05 * size, 0.70 * size), (cx + side * 0.06 * size, 0.85 * size)
    return kp


def _draw_figure(canvas: np.ndarray, kp: np.ndarray, size: int, flat: int | None = None) -> None:
    """A filled body (torso, limbs, head) on `canvas`, in the character's colours or one `flat` value."""
    p = [tuple(int(round(v)) for v in point[:2]) for point in kp]
    limb = max(2, size // 20)

    def colour(rgb):
        return flat if flat is not None else rgb

    torso = np.array([p[2], p[5], p[11], p[8]], np.int32)
    cv2.fillConvexPoly(canvas, torso, colour(_SHIRT))
    for a, b, c in ((2, 3, _SHIRT), (3, 4, _SKIN), (5, 6, _SHIRT), (6, 7, _SKIN),
                    (8, 9, _TROUSERS), (9, 10, _TROUSERS), (11, 12, _TROUSERS), (12, 13, _TROUSERS)):
        cv2.line(canvas, p[a], p[b], colour(c), thickness=limb)
    cv2.line(canvas, p[1], p[0], colour(_SKIN), thickness=limb)
    cv2.circle(canvas, p[0], max(3, size // 14), colour(_SKIN), -1)


def _frames(images: np.ndarray) -> torch.Tensor:
    """uint8 `[F, H, W, 3]` RGB -> `[F, 3, H, W]` float 0..1."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0, "f h w c -> f c h w")
