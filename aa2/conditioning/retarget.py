"""Pose retargeting: the driving skeleton redrawn with the reference character's proportions.

The paper (§4, limitations, and its comparison with shape-mismatched driving) names the failure:
the pose guider reproduces the skeleton it is given, so a tall driver's skeleton stretches a
short character, and long driver arms pull the character's arms long. Animate Anyone 2 itself
does not say how it aligns poses; this module does what pose-transfer pipelines usually do
(e.g. the "align" step of MimicMotion/UniAnimate-style preprocessors), written from the idea:

1. Measure every bone of the 18-keypoint OpenPose body on the reference pose and on one driving
   frame (`driving_frame`, the first by default), where both ends are visible: the bone ratio
   `r = |bone_ref| / |bone_drv|`. The global scale `s` is the ratio of the summed lengths of the
   bones seen in both (robust to one bad bone); a bone seen in only one of them uses `s`.
2. For every driving frame, walk the kinematic tree from the root (the neck, OpenPose's centre):
   each child joint is its parent's *new* position plus the driving bone vector times `r`. So
   bone directions (the motion) come from the driver, bone lengths from the reference.
3. Global placement: the root follows `G(x) = ref_anchor + s · (x − drv_anchor)`, with the anchor
   the neck on the measured frames (or the mean of the keypoints visible in both, if a neck is
   missing). On the measured frame the figure therefore stands where the reference figure stands,
   and later frames move by the driver's displacement scaled by `s`. A joint whose parent is
   missing in a frame is placed by `G` directly.
4. Hands hang from the retargeted wrists and are scaled by the reference's own hand bones when
   both hands are visible (else by the forearm ratio); the face hangs from the nose, scaled by
   the head bones' ratio.

Missing keypoints (confidence not above `min_confidence`) stay missing, with their confidence
kept. Output coordinates are pixels of the *reference's* canvas: the character is animated in
the reference image's frame, so that is where its skeleton must sit.

Off by default upstream: for same-person driving, retargeting only adds the detector's noise.
"""

from __future__ import annotations

import numpy as np

from ..errors import AA2InputError
from .skeleton import (
    BODY_LIMBS,
    HAND_EDGES,
    Coords,
    PersonChoice,
    PersonPose,
    PoseFrame,
    _as_frames,
    select_people,
    write_pose_keypoints,
)

NECK, NOSE = 1, 0
_WRIST_ELBOW = {"left_hand": (7, 6), "right_hand": (4, 3)}
_HEAD_BONES = [i for i, (a, b) in enumerate(BODY_LIMBS) if {a, b} & {0, 14, 15, 16, 17}]


def retarget_poses(
    driving: object,
    reference: object,
    *,
    driving_frame: int = 0,
    person: PersonChoice = "largest",
    reference_person: PersonChoice = "largest",
    hands: bool = True,
    face: bool = True,
    coords: Coords = "auto",
    min_confidence: float = 0.0,
) -> list[dict]:
    """Align a driving keypoint sequence to the reference character's bone lengths and place.

    driving: POSE_KEYPOINT of the driving video (F frames), or a list of `PoseFrame`.
    reference: POSE_KEYPOINT of the reference image (its first frame is used).
    driving_frame: the driving frame whose bones are measured against the reference; pick one
        where the driver stands in a pose like the reference's (both fully visible).
    person / reference_person: which person to take in multi-person frames (see
        `skeleton.select_people`); the output has one person per frame (none where the driver
        is absent).
    Returns POSE_KEYPOINT (one dict per driving frame) on the reference's canvas, in pixels.
    Raises AA2InputError if the reference or the measured driving frame has no person, or they
    share no visible bone.
    """
    frames = _as_frames(driving, coords)
    ref_frame = _as_frames(reference, coords)[0]
    if not isinstance(driving_frame, int) or not 0 <= driving_frame < len(frames):
        raise AA2InputError(f"driving_frame must be an index in [0, {len(frames) - 1}]; got {driving_frame!r}.")
    ref = _one(ref_frame, reference_person, min_confidence, "the reference pose")
    drv0 = _one(frames[driving_frame], person, min_confidence, f"driving frame {driving_frame}")

    ratios, scale = _bone_ratios(ref.body, drv0.body, BODY_LIMBS, min_confidence)
    if scale is None:
        raise AA2InputError(
            f"The reference pose and driving frame {driving_frame} share no visible bone, so their "
            "proportions cannot be compared. Choose a driving_frame where the same limbs are visible."
        )
    body_r = [scale if r is None else r for r in ratios]
    ref_anchor, drv_anchor = _anchors(ref.body, drv0.body, min_confidence)

    def place(x: np.ndarray) -> np.ndarray:
        return ref_anchor + scale * (x - drv_anchor)

    head = [ratios[i] for i in _HEAD_BONES if ratios[i] is not None]
    face_scale = float(np.mean(head)) if head else scale
    hand_r = {}
    for side, (wrist, elbow) in _WRIST_ELBOW.items():
        forearm = body_r[BODY_LIMBS.index((elbow, wrist))]
        r_hand, s_hand = (None, None)
        if getattr(ref, side) is not None and getattr(drv0, side) is not None:
            r_hand, s_hand = _bone_ratios(getattr(ref, side), getattr(drv0, side), HAND_EDGES, min_confidence)
        s_hand = forearm if s_hand is None else s_hand
        hand_r[side] = (s_hand, [s_hand if r is None else r for r in (r_hand or [None] * len(HAND_EDGES))])

    out = []
    for frame in frames:
        people = select_people(frame, person, min_confidence)
        if not people:
            out.append(PoseFrame(ref_frame.height, ref_frame.width, []))
            continue
        drv = people[0]
        body = _walk(drv.body, NECK, BODY_LIMBS, body_r, min_confidence, place)
        new = PersonPose(body)
        for side, (wrist, _) in _WRIST_ELBOW.items():
            hand = getattr(drv, side)
            if not hands or hand is None:
                continue
            s_hand, r_hand = hand_r[side]
            setattr(new, side, _hang(hand, 0, HAND_EDGES, r_hand, s_hand, drv.body, body, wrist, min_confidence, place))
        if face and drv.face is not None:
            new.face = _hang(drv.face, None, (), [], face_scale, drv.body, body, NOSE, min_confidence, place)
        out.append(PoseFrame(ref_frame.height, ref_frame.width, [new]))
    return write_pose_keypoints(out)


def bone_lengths(body: np.ndarray, min_confidence: float = 0.0) -> np.ndarray:
    """Lengths of the 17 OpenPose limbs of a body `[18, 3]`; NaN where an end is missing."""
    present = body[:, 2] > min_confidence
    return np.array([
        np.hypot(*(body[b, :2] - body[a, :2])) if present[a] and present[b] else np.nan for a, b in BODY_LIMBS
    ])


def _one(frame: PoseFrame, choice: PersonChoice, min_confidence: float, what: str) -> PersonPose:
    people = select_people(frame, choice, min_confidence)
    if not people or not (people[0].body[:, 2] > min_confidence).any():
        raise AA2InputError(f"No person with visible body keypoints in {what} (person={choice!r}).")
    return people[0]


def _bone_ratios(ref: np.ndarray, drv: np.ndarray, edges, min_confidence: float):
    """Per-edge length ratios ref/drv (None where unseen) and the summed-length ratio (or None)."""
    ok_r, ok_d = ref[:, 2] > min_confidence, drv[:, 2] > min_confidence
    ratios, sum_r, sum_d = [], 0.0, 0.0
    for a, b in edges:
        lr = float(np.hypot(*(ref[b, :2] - ref[a, :2])))
        ld = float(np.hypot(*(drv[b, :2] - drv[a, :2])))
        # A zero-length driving bone has no direction to scale; its ratio falls back to the global one.
        if ok_r[a] and ok_r[b] and ok_d[a] and ok_d[b] and ld > 1e-6:
            ratios.append(lr / ld)
            sum_r, sum_d = sum_r + lr, sum_d + ld
        else:
            ratios.append(None)
    return ratios, (sum_r / sum_d if sum_d > 0 else None)


def _anchors(ref: np.ndarray, drv: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    both = (ref[:, 2] > min_confidence) & (drv[:, 2] > min_confidence)
    if both[NECK]:
        return ref[NECK, :2].copy(), drv[NECK, :2].copy()
    if both.any():
        return ref[both, :2].mean(0), drv[both, :2].mean(0)
    raise AA2InputError("The reference pose and the measured driving frame have no keypoint visible in both.")


def _walk(kp: np.ndarray, root: int, edges, ratios, min_confidence: float, place) -> np.ndarray:
    """New positions along a kinematic tree: root by `place`, children by scaled bone vectors."""
    present = kp[:, 2] > min_confidence
    new = np.zeros_like(kp)
    new[:, 2] = np.where(present, kp[:, 2], 0.0)
    done = np.zeros(len(kp), bool)
    if present[root]:
        new[root, :2], done[root] = place(kp[root, :2]), True
    for (a, b), r in zip(edges, ratios):
        if not present[b]:
            continue
        new[b, :2] = new[a, :2] + r * (kp[b, :2] - kp[a, :2]) if done[a] else place(kp[b, :2])
        done[b] = True
    # Present joints no edge reaches (none for the trees here) still get a place.
    rest = present & ~done
    new[rest, :2] = place(kp[rest, :2])
    return new


def _hang(part, root, edges, ratios, scale, drv_body, new_body, joint, min_confidence, place) -> np.ndarray:
    """A hand or face carried by a body joint: offset from the joint scaled, then its own tree."""
    attached = drv_body[joint, 2] > min_confidence and new_body[joint, 2] > min_confidence

    def carry(x: np.ndarray) -> np.ndarray:
        return new_body[joint, :2] + scale * (x - drv_body[joint, :2]) if attached else place(x)

    if root is None:  # the face: every point carried rigidly with the nose
        present = part[:, 2] > min_confidence
        new = np.zeros_like(part)
        new[present] = part[present]
        new[present, :2] = carry(part[present, :2])
        return new
    return _walk(part, root, edges, ratios, min_confidence, carry)
