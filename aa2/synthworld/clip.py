"""SynthWorld clips: a scene, a character and a motion from one seed, rendered with every ground truth.

`make_clip(seed, frames, size, motion)` is deterministic: the seed feeds separate random streams
for the scene, the character, the cross-identity character and the motion, so the same seed gives
bit-identical arrays on every machine numpy and OpenCV agree on.

Splits: training clips use seeds below `HELDOUT_SEED_BASE`, held-out clips seeds from it on, so a
held-out clip's scene, character and motion parameters come from random draws training never saw
(`split_seeds`). Whole motions can be kept out of training as well (`split_motions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..conditioning.skeleton import PersonPose, PoseFrame, write_pose_keypoints
from .character import Character, character_parts, keypoints, random_character
from .motion import MOTIONS, Performance, perform, standing
from .render import CHARACTER, OBJECT, Part, composite, cuboid
from .scene import Scene, make_scene

HELDOUT_SEED_BASE = 1_000_000
Split = Literal["train", "heldout"]
_STREAMS = {"scene": 1, "character": 2, "cross": 3, "motion": 4}


@dataclass(frozen=True)
class Rendering:
    """One character performing the clip's motion in its scene.

    frames: uint8 `[F, H, W, 3]` RGB. character_mask: bool `[F, H, W]`, the character's visible
    pixels. object_mask: bool `[F, H, W]`, the interacting object's visible pixels, or None for
    motions without one. depth: float32 `[F, H, W]` nearness 0..1 (near = 1) of what each pixel
    shows. reference: uint8 `[H, W, 3]`, the character standing, facing the camera, in the middle
    of the clean background; reference_mask: bool `[H, W]`, its pixels.
    """

    character: Character
    frames: np.ndarray
    character_mask: np.ndarray
    object_mask: np.ndarray | None
    depth: np.ndarray
    reference: np.ndarray
    reference_mask: np.ndarray


@dataclass(frozen=True)
class SynthClip:
    """A clip and its ground truth. `main` is the character of the clip; `cross` (when asked for)
    the same motion, scene and keypoints performed by a different-looking character with the same
    bones, the ground truth for "animate B with A's video". `poses`: POSE_KEYPOINT frames (pixels,
    COCO-18 body only) shared by both; `reference_pose` the standing pose of the references."""

    seed: int
    motion: str
    scene: Scene
    performance: Performance
    poses: list[PoseFrame]
    reference_pose: PoseFrame
    main: Rendering
    cross: Rendering | None

    @property
    def frames(self) -> np.ndarray:
        return self.main.frames

    @property
    def character_mask(self) -> np.ndarray:
        return self.main.character_mask

    @property
    def object_mask(self) -> np.ndarray | None:
        return self.main.object_mask

    @property
    def depth(self) -> np.ndarray:
        return self.main.depth

    @property
    def reference(self) -> np.ndarray:
        return self.main.reference

    @property
    def background(self) -> np.ndarray:
        """The clean background, uint8 `[H, W, 3]`: the scene without character or object."""
        return self.scene.background

    @property
    def background_depth(self) -> np.ndarray:
        return self.scene.near

    def pose_keypoints(self) -> list[dict]:
        """The clip's keypoints as ComfyUI POSE_KEYPOINT (pixels of the frame)."""
        return write_pose_keypoints(self.poses)


def make_clip(seed: int, frames: int = 16, size: int = 64, motion: str | None = None,
              cross_identity: bool = True) -> SynthClip:
    """Generate clip `seed`: `frames` frames of `size × size` pixels. `motion` None takes
    `MOTIONS[seed % len(MOTIONS)]`, so consecutive seeds cycle through the motions."""
    if frames < 1 or size < 32:
        raise ValueError(f"a SynthWorld clip needs frames >= 1 and size >= 32; got {frames}, {size}")
    motion = MOTIONS[seed % len(MOTIONS)] if motion is None else motion
    scene = make_scene(_rng(seed, "scene"), size)
    character = random_character(_rng(seed, "character"))
    performance = perform(motion, _rng(seed, "motion"), character.bones, frames)
    poses = [_pose_frame(character, state, scene) for state in performance.states]
    reference_state = standing()
    main = render(scene, character, performance)
    cross = None
    if cross_identity:
        other = random_character(_rng(seed, "cross"), bones=character.bones, unlike=character.look)
        cross = render(scene, other, performance)
    return SynthClip(seed, motion, scene, performance, poses, _pose_frame(character, reference_state, scene), main, cross)


def frame_parts(scene: Scene, character: Character, performance: Performance, index: int) -> list[Part]:
    """Everything drawn in frame `index`: the character's parts, then the object's."""
    parts = character_parts(character, performance.states[index], scene.camera)
    parts += [cuboid(scene.camera, box.centre, box.half, box.yaw, box.colour, box.name)
              for box in performance.objects[index]]
    return parts


def render(scene: Scene, character: Character, performance: Performance) -> Rendering:
    """`character` performing `performance` in `scene`, with its masks, depth and reference."""
    frames, characters, objects, depths = [], [], [], []
    for index in range(len(performance.states)):
        parts = frame_parts(scene, character, performance, index)
        frame, near, shown = composite(parts, scene.background, scene.near)
        frames.append(frame), depths.append(near)
        characters.append(_shown(parts, shown, CHARACTER)), objects.append(_shown(parts, shown, OBJECT))
    parts = character_parts(character, standing(), scene.camera)
    reference, _, shown = composite(parts, scene.background, scene.near)
    has_object = any(performance.objects)
    return Rendering(character, np.stack(frames), np.stack(characters), np.stack(objects) if has_object else None,
                     np.stack(depths), reference, _shown(parts, shown, CHARACTER))


def split_seeds(split: Split, count: int, start: int = 0) -> list[int]:
    """`count` clip seeds of a split, from the `start`-th on. Training and held-out seeds never meet."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout'; got {split!r}")
    if start < 0 or count < 0 or (split == "train" and start + count > HELDOUT_SEED_BASE):
        raise ValueError(f"training seeds are 0..{HELDOUT_SEED_BASE - 1}; got start {start}, count {count}")
    base = HELDOUT_SEED_BASE if split == "heldout" else 0
    return [base + start + i for i in range(count)]


def split_of(seed: int) -> Split:
    return "heldout" if seed >= HELDOUT_SEED_BASE else "train"


def split_motions(split: Split, heldout_motions: Sequence[str] = ()) -> tuple[str, ...]:
    """The motions of a split when `heldout_motions` are kept out of training: training gets the
    others, the held-out split all of them (seen and unseen motions, both with unseen characters)."""
    unknown = set(heldout_motions) - set(MOTIONS)
    if unknown:
        raise ValueError(f"unknown motions {sorted(unknown)}; SynthWorld has {MOTIONS}")
    if split == "heldout":
        return MOTIONS
    kept = tuple(m for m in MOTIONS if m not in heldout_motions)
    if not kept:
        raise ValueError("every motion is held out; training would have none")
    return kept


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAMS[stream]])


def _pose_frame(character: Character, state, scene: Scene) -> PoseFrame:
    size = scene.camera.size
    return PoseFrame(size, size, [PersonPose(body=keypoints(character, state, scene.camera))])


def _shown(parts: list[Part], shown: np.ndarray, kind: str) -> np.ndarray:
    indices = [i for i, p in enumerate(parts) if p.kind == kind]
    return np.isin(shown, indices)
