"""SynthWorld: Animate Anyone 2 in miniature, a procedural world whose ground truth is known.

No AA2 weights exist and nobody here trains SD1.5-sized ones, so small AA2 models are trained and
measured on this world instead (issue "SynthWorld"): articulated figures on the OpenPose 18-keypoint
skeleton walk, wave, turn with crossing arms, push and carry boxes and sit on chairs, in rooms and
outdoor scenes seen by a static camera. Every clip comes with what training and evaluation need:
frames, character mask, object mask, POSE_KEYPOINT, per-pixel nearness, the clean background, the
character's reference image, and the same motion and scene performed by a *different* character
(the ground truth for cross-identity animation, where shape leakage shows).

numpy and OpenCV only, deterministic from a seed, sized for 64×64 and 128×128 clips. Written to
disk in `train.prepare`'s layout by `python -m train.synthworld`.

Modules: `render` (camera, shapes, depth compositing), `scene` (backgrounds), `character` (bones,
looks, skeleton, body parts), `motion` (motions and objects), `clip` (`make_clip`, splits).
"""

from .character import PART_NAMES, Bones, Character, Look, random_character
from .clip import (HELDOUT_SEED_BASE, Rendering, SynthClip, frame_parts, make_clip, render, split_motions,
                   split_of, split_seeds)
from .motion import INTERACTIONS, MOTIONS

__all__ = [
    "HELDOUT_SEED_BASE", "INTERACTIONS", "MOTIONS", "PART_NAMES", "Bones", "Character", "Look", "Rendering",
    "SynthClip", "frame_parts", "make_clip", "random_character", "render", "split_motions", "split_of", "split_seeds",
]
