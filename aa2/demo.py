"""`python -m aa2 demo`: a character animated into its scene by small trained weights and scored
against the truth; without those weights, the whole path on tiny random ones (it proves the install).

**With trained weights** — the small SynthWorld model shipped at
`aa2/synthworld/weights/aa2-synthworld.safetensors` (made by `bench/synthworld.sh`), or any pack
checkpoint given with `--weights` — the demo makes a *held-out* SynthWorld clip (`aa2.synthworld`:
a scene, a character and motion parameters training never saw; by default the figure pushes a box,
16 frames at 128x128 for the shipped weights, 64x64 for others) and writes it as the files a user would have: the reference image (a
portrait of the character standing in the clean scene, as the recipe trains; `--reference-framing
frame` for the whole scene), the driving video, the character mask, the object mask, a
depth video (near = bright) and the skeletons (aa2's renderer, as training drew them), each a
folder of PNG frames: lossless, as training read its clips (mp4v costs a 64-pixel clip about
26 dB PSNR before the model sees it; `--inputs-format mp4` writes mp4 files). Then it runs exactly what `python -m aa2 animate` runs on them — the file readers, the
shape-agnostic mask (§3.2), structured depth (§3.4), the object sequence, the environment, clips of
the motion modules' length chained by a latent motion frame — with DDIM, 20 steps, guidance 2.5.
The environment is the model's *input* (the driving frames cut by the shape-agnostic mask, as the
model was trained); nothing is blended or pasted back unless `--environment` or
`--paste-environment` asks, so every pixel of the video is the model's own.

Because the clip's ground truth is known, the demo writes `metrics.json` beside the video
(`aa2.metrics.ground_truth`, the numbers `train.synthworld_eval` reports): `psnr` and `ssim` over
whole frames, `psnr_environment` outside the true character (what the model must keep),
`psnr_character` inside it (what it must draw), `psnr_band` across the outline, and
`silhouette_iou` of the drawn character against the true one, each averaged over the frames;
plus the clip's seed and motion, the weights file, the sampler settings and the seconds taken.
The frames scored are the pipeline's, rounded to 8 bits before the mp4 codec touches them.

**Without trained weights** (or with `--random-weights`) it writes tiny random weights
(`aa2.weights.tiny`) and a hand-drawn scene — a stick figure walking and pushing a box — in the
same files, and runs the same path on a video long enough for at least two clips. Random weights
animate nothing; the demo says so. Its job is then to prove the install.
"""

from __future__ import annotations

import dataclasses
import json
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

from .errors import AA2InputError, AA2WeightsError

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "synthworld" / "weights" / "aa2-synthworld.safetensors"
SHIPPED_SIZE = 128  # the clip side the shipped weights were trained at (bench/synthworld.sh SIZE=128)
METRICS_FILE = "metrics.json"
FPS = 8.0

NOTICE_RANDOM = (
    "This demo runs tiny RANDOM weights: the video it writes is coloured noise, not an animation of the figure.\n"
    "Its job is to prove the install: weights -> input files -> masks, depth, objects -> clips of "
    "denoising chained as latents -> video.\nFor real animations, convert real weights (see README) and use `python -m aa2 animate`."
)
NOTICE_SHIPPED = (
    "This demo runs the shipped small TRAINED weights ({weights}) on a held-out SynthWorld clip: a procedural "
    "character it never saw, animated into a scene it never saw, at {size}x{size}.\nThey were trained on SynthWorld only: "
    "they show that this implementation learns Animate Anyone 2's task, not how a real model looks on real videos.\n"
    "The scores against the clip's ground truth go to {metrics}."
)
NOTICE_GIVEN = (
    "This demo runs the weights you gave ({weights}) on a held-out SynthWorld clip, whose ground truth is known.\n"
    "The scores against it go to {metrics}: they say how well these weights animate SynthWorld, which is what "
    "a model trained on it (python -m train.train, train/README.md) should do well."
)

# Colours (RGB 0..255) of the hand-drawn character and scene (random-weights demo).
_SHIRT, _TROUSERS, _SKIN, _BOX = (40, 90, 200), (40, 40, 60), (230, 180, 140), (230, 120, 30)


@dataclass
class DemoScene:
    """Driving inputs. Frames `[F, 3, S, S]` 0..1; masks `[F, S, S]` 0/1."""

    reference: torch.Tensor  # [3, S, S]
    video: torch.Tensor
    pose: torch.Tensor
    depth: torch.Tensor  # inverse depth (near = bright), as depth preprocessors write it
    mask: torch.Tensor  # the character, exact (the CLI makes it shape-agnostic)
    object_mask: torch.Tensor | None  # the box (None: a motion without an object)


def synthworld_scene(clip, framing: str = "frame") -> DemoScene:
    """A SynthWorld clip (`aa2.synthworld.SynthClip`) as the demo's inputs. The skeleton is drawn
    as `train.dataset` draws it for training (aa2's renderer, its default 4-pixel sticks). `framing`
    "character" cuts the reference to a portrait of the figure, as training with
    `data.reference_framing: character` showed it (`augment.portrait`)."""
    from .conditioning.augment import REFERENCE_FRAMINGS, portrait
    from .conditioning.skeleton import render_skeleton

    if framing not in REFERENCE_FRAMINGS:
        raise AA2InputError(f"--reference-framing is one of {', '.join(REFERENCE_FRAMINGS)}; got {framing!r}")
    size = clip.frames.shape[1]
    near = torch.from_numpy(np.ascontiguousarray(clip.depth)).float()
    reference = _frames(clip.reference[None])[0]
    if framing == "character":
        reference = portrait(reference, torch.from_numpy(clip.main.reference_mask).float(), aspect=1.0,
                             size=(size, size))
    return DemoScene(
        reference=reference,
        video=_frames(clip.frames),
        pose=render_skeleton(clip.poses, size, size),
        depth=rearrange(near, "f h w -> f 1 h w").expand(-1, 3, -1, -1),
        mask=torch.from_numpy(clip.character_mask).float(),
        object_mask=None if clip.object_mask is None else torch.from_numpy(clip.object_mask).float(),
    )


def synthworld_truth(clip):
    """The clip's ground truth for `aa2.metrics.score_clip`."""
    from .metrics import Truth

    character = torch.from_numpy(clip.character_mask)
    objects = torch.zeros_like(character) if clip.object_mask is None else torch.from_numpy(clip.object_mask)
    return Truth(frames=_frames(clip.frames), character=character, objects=objects,
                 background=_frames(clip.background[None])[0])


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
    """Draw the hand-drawn scene of the random-weights demo (deterministic: no randomness)."""
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


def write_scene(scene: DemoScene, folder: Path, fps: float = FPS, video_format: str = "mp4"):
    """The scene as a user's files; returns the `InputFiles` for `load_inputs`. `video_format` "mp4"
    writes the driving video, masks and depth as mp4v files, "png" as folders of PNG frames
    (lossless: mp4v costs a 64-pixel SynthWorld clip about 26 dB PSNR, a ceiling on how well any
    model can keep the environment it is given). The skeletons are always a PNG folder."""
    from .animate_command import InputFiles
    from .video_io import write_image, write_video

    if video_format not in ("mp4", "png"):
        raise AA2InputError(f"--inputs-format is mp4 or png; got {video_format!r}")
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".mp4" if video_format == "mp4" else ""

    def masks(m: torch.Tensor) -> torch.Tensor:
        return m[..., None].expand(-1, -1, -1, 3)

    def video(x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "f c h w -> f h w c")

    return InputFiles(
        reference=write_image(folder / "reference.png", scene.reference),
        pose=write_video(folder / "pose", video(scene.pose)),  # PNG folder: skeleton colours stay exact
        video=write_video(folder / f"driving{suffix}", video(scene.video), fps),
        mask=write_video(folder / f"character_mask{suffix}", masks(scene.mask), fps),
        depth=write_video(folder / f"depth{suffix}", video(scene.depth), fps),
        object_mask=None if scene.object_mask is None else write_video(folder / f"object_mask{suffix}",
                                                                        masks(scene.object_mask), fps),
    )


def run_demo(
    out: Path,
    *,
    weights: Path | None = None,
    random_weights: bool = False,
    motion: str = "push",
    clip: int = 0,
    frames: int | None = None,
    size: int | None = None,
    steps: int | None = None,
    cfg: float = 2.5,
    seed: int = 0,
    clip_length: int | None = None,
    environment: str | None = None,
    reference_framing: str = "character",
    paste_environment: bool = False,
    inputs_format: str | None = None,
    models_dir: Path | None = None,
    inputs_dir: Path | None = None,
    show_progress: bool = True,
) -> int:
    """Animate with trained weights (`weights`, else the shipped file if present) and score the
    result, or with tiny random weights when there are none or `random_weights`. `frames`, `size`,
    `steps`, `environment` and `inputs_format` default per case (16, 128 for the shipped weights and 64
    for others, 20, "input", "png" with trained weights; 32, 128, 6, "input+blend", "mp4" with random ones).
    Returns the exit status."""
    from .video_io import check_output_path

    if weights is not None and random_weights:
        raise AA2InputError("--weights and --random-weights exclude each other: choose one")
    if weights is None and not random_weights and SHIPPED_WEIGHTS.is_file():
        weights = SHIPPED_WEIGHTS
    if weights is not None and not Path(weights).is_file():
        raise AA2WeightsError(f"--weights {weights} is not a file: give a pack checkpoint (.safetensors)")
    out = check_output_path(out)
    if weights is None:
        return _random_weights_demo(
            out, frames=frames or 32, size=size or 128, steps=steps or 6, cfg=cfg, seed=seed, clip_length=clip_length,
            environment=environment or "input+blend", inputs_format=inputs_format or "mp4", models_dir=models_dir,
            inputs_dir=inputs_dir, show_progress=show_progress)
    return _trained_demo(
        out, Path(weights), shipped=weights == SHIPPED_WEIGHTS, motion=motion, clip=clip, frames=frames or 16,
        size=size or (SHIPPED_SIZE if weights == SHIPPED_WEIGHTS else 64), steps=steps or 20, cfg=cfg, seed=seed, clip_length=clip_length,
        environment=environment or "input", paste_environment=paste_environment, inputs_format=inputs_format or "png",
        reference_framing=reference_framing,
        inputs_dir=inputs_dir, show_progress=show_progress)


def _trained_demo(out: Path, weights: Path, *, shipped: bool, motion: str, clip: int, frames: int, size: int,
                  steps: int, cfg: float, seed: int, clip_length: int | None, environment: str,
                  paste_environment: bool, inputs_format: str, inputs_dir: Path | None, show_progress: bool,
                  reference_framing: str = "character") -> int:
    """A held-out SynthWorld clip through `animate`'s path, then metrics.json against its truth."""
    from .animate_command import ReadOptions, load_for_device, load_inputs, render
    from .atomic import write_bytes
    from .metrics import jsonable, quantize_8bit, score_clip
    from .pipeline.vae_codec import vae_round_trip
    from .pipeline.inputs import SamplingSettings
    from .synthworld import MOTIONS, make_clip, split_seeds
    from .weights.sources import ModelSources

    if motion not in MOTIONS:
        raise AA2InputError(f"--motion is one of {', '.join(MOTIONS)}; got {motion!r}")
    if clip < 0:
        raise AA2InputError(f"--clip counts held-out clips from 0; got {clip}")
    settings = SamplingSettings(steps=steps, cfg=cfg, seed=seed, clip_length=clip_length, motion_frames=1,
                                environment=environment, paste_environment=paste_environment, feather=2)
    settings.check()
    metrics_path = out.parent / METRICS_FILE
    print((NOTICE_SHIPPED if shipped else NOTICE_GIVEN).format(weights=weights, metrics=metrics_path, size=size))
    started = time.perf_counter()
    clip_seed = split_seeds("heldout", 1, start=clip)[0]
    world = make_clip(clip_seed, frames=frames, size=size, motion=motion, cross_identity=False)
    with tempfile.TemporaryDirectory(prefix="aa2-demo-") as temp:
        files = write_scene(synthworld_scene(world, reference_framing), inputs_dir or Path(temp) / "inputs", video_format=inputs_format)
        inputs = load_inputs(files, ReadOptions())
        model = load_for_device(ModelSources.from_path(weights), torch.device("cpu"), torch.float32)
        length = clip_length or model.config.motion.trained_frames
        print(f"animating held-out SynthWorld clip {clip_seed} ({motion}): {frames} frames at {size}x{size} in clips "
              f"of up to {length}, DDIM {steps} steps, guidance {cfg:g}, environment {environment}"
              + (", pasted" if paste_environment else ""), file=sys.stderr)
        rendered = []
        status = render(model, inputs, settings, out, FPS, show_progress=show_progress,
                        on_result=lambda result: rendered.append(result.frames))
    if status != 0:
        return status
    frames_8bit = quantize_8bit(rearrange(rendered[0], "f h w c -> f c h w"))
    truth = synthworld_truth(world)
    scene = quantize_8bit(vae_round_trip(model.vae, truth.background[None]))[0]  # Truth.scene: like with like
    scores = score_clip(frames_8bit, dataclasses.replace(truth, scene=scene))
    scores.pop("lpips")  # needs weights the user provides (train.metrics.load_lpips)
    seconds = time.perf_counter() - started
    report = {
        **scores,
        "clip_seed": clip_seed, "motion": motion, "frames": frames, "size": size, "weights": str(weights),
        "steps": steps, "cfg": cfg, "sampler": "ddim", "seed": seed, "environment": environment,
        "paste_environment": paste_environment, "inputs_format": inputs_format, "reference_framing": reference_framing,
        "seconds": round(seconds, 1),
        "scored": "the pipeline's frames rounded to 8 bits (before the video codec) against the clip's true frames "
                  "and masks; regions as in aa2.metrics.ground_truth",
    }
    write_bytes(metrics_path, (json.dumps(jsonable(report), indent=1, allow_nan=False) + "\n").encode())
    shown = ", ".join(f"{name} {scores[name]:.3f}" for name in
                      ("psnr", "ssim", "psnr_environment", "psnr_character", "silhouette_iou")
                      if scores[name] is not None)
    print(f"demo finished in {seconds:.1f} s: {shown} -> {metrics_path}")
    return 0


def _random_weights_demo(out: Path, *, frames: int, size: int, steps: int, cfg: float, seed: int,
                         clip_length: int | None, environment: str, inputs_format: str, models_dir: Path | None,
                         inputs_dir: Path | None, show_progress: bool) -> int:
    """Tiny random weights on the hand-drawn scene: proves the install, animates nothing."""
    from .animate_command import ReadOptions, load_for_device, load_inputs, render
    from .pipeline.inputs import SamplingSettings
    from .weights.sources import ModelSources
    from .weights.tiny import NAME, make_tiny_weights

    print(NOTICE_RANDOM)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aa2-demo-") as temp:
        models = models_dir or Path(temp) / "models"
        checkpoint = models / "animateanyone2" / f"{NAME}.safetensors"
        if not checkpoint.is_file():
            print(f"writing tiny random weights to {models} ...", file=sys.stderr)
            make_tiny_weights(models, seed=seed)
        files = write_scene(make_scene(frames, size), inputs_dir or Path(temp) / "inputs", video_format=inputs_format)
        inputs = load_inputs(files, ReadOptions())
        model = load_for_device(ModelSources.from_path(checkpoint), torch.device("cpu"), torch.float32)
        length = clip_length or model.config.motion.trained_frames
        # random noise inside the mask, the driving pixels pasted back outside it: the video shows the
        # environment kept, which is what the pipeline's plumbing is responsible for
        settings = SamplingSettings(steps=steps, cfg=cfg, seed=seed, clip_length=length, motion_frames=1,
                                    environment=environment, paste_environment=True, feather=2)
        clips = 1 + max(0, math.ceil((frames - length) / (length - 1)))
        print(f"animating {frames} frames at {size}x{size} in {clips} clip(s) of up to {length} frames, {steps} steps, "
              "with environment, objects and structured depth", file=sys.stderr)
        status = render(model, inputs, settings, out, FPS, show_progress=show_progress)
    if status == 0:
        print(f"demo finished in {time.perf_counter() - started:.1f} s. Reminder: random weights, so the video shows "
              "noise; the install works. Trained weights: python -m aa2 demo --weights FILE.")
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
