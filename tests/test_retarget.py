"""Pose retargeting: driving motion with the reference character's bone lengths and place.

Coordinates are float64 and the transforms are sums and products of a few terms, so identities
hold to 1e-9 pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from aa2.conditioning.retarget import bone_lengths, retarget_poses
from aa2.conditioning.skeleton import BODY_LIMBS, PersonPose, PoseFrame, read_pose_keypoints, write_pose_keypoints
from aa2.errors import AA2InputError

H, W = 256, 192
TOL = 1e-9

# A standing figure in OpenPose order (pixels).
STAND = np.array([
    [96, 40], [96, 60], [76, 60], [70, 90], [66, 118], [116, 60], [122, 90], [126, 118],
    [84, 120], [82, 160], [80, 200], [108, 120], [110, 160], [112, 200],
    [92, 36], [100, 36], [88, 38], [104, 38],
], dtype=np.float64)


def person(xy: np.ndarray, hands: bool = False) -> PersonPose:
    p = PersonPose(np.concatenate([xy, np.ones((18, 1))], axis=1))
    if hands:
        rng = np.random.default_rng(3)
        for side, wrist in (("left_hand", 7), ("right_hand", 4)):
            hand = np.concatenate([xy[wrist] + rng.normal(0, 6, (21, 2)), np.ones((21, 1))], axis=1)
            hand[0, :2] = xy[wrist]
            setattr(p, side, hand)
    return p


def driving_clip(frames: int = 5, seed: int = 0, hands: bool = False) -> list[dict]:
    """The standing figure swinging its limbs and walking sideways."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(frames):
        xy = STAND + rng.normal(0, 4, STAND.shape) + [3 * f, 0]
        out.append(PoseFrame(H, W, [person(xy, hands)]))
    return write_pose_keypoints(out)


def bodies(pose_json: list[dict]) -> list[np.ndarray]:
    return [f.people[0].body for f in read_pose_keypoints(pose_json, coords="pixels")]


def bone_vectors(body: np.ndarray) -> np.ndarray:
    return np.array([body[b, :2] - body[a, :2] for a, b in BODY_LIMBS])


def test_retargeting_onto_itself_is_identity():
    drive = driving_clip(hands=True)
    out = retarget_poses(drive, [drive[0]], coords="pixels")
    for a, b in zip(read_pose_keypoints(drive, "pixels"), read_pose_keypoints(out, "pixels")):
        for part in ("body", "left_hand", "right_hand"):
            assert np.allclose(getattr(a.people[0], part), getattr(b.people[0], part), atol=TOL)


def test_twice_as_large_reference_doubles_every_bone_and_keeps_directions():
    drive = driving_clip()
    ref_body = 2.0 * bodies(drive)[0][:, :2] + [-50, 10]
    reference = write_pose_keypoints([PoseFrame(2 * H, 2 * W, [person(ref_body)])])
    out = retarget_poses(drive, reference, coords="pixels")
    for d, o in zip(bodies(drive), bodies(out)):
        assert np.allclose(bone_vectors(o), 2.0 * bone_vectors(d), atol=TOL)
    # Written on the reference's canvas, with the figure where the reference stands.
    assert out[0]["canvas_width"] == 2 * W and out[0]["canvas_height"] == 2 * H
    assert np.allclose(bodies(out)[0][:, :2], ref_body, atol=TOL)


def test_bones_take_the_references_lengths_and_the_drivers_directions():
    drive = driving_clip(seed=1)
    rng = np.random.default_rng(7)
    # A character of other proportions: every bone stretched by its own factor, bent differently.
    ref = STAND.copy()
    ref_bones = bone_vectors(np.concatenate([STAND, np.ones((18, 1))], 1)) * rng.uniform(0.6, 1.6, (17, 1))
    ref[1] = (100, 70)
    for (a, b), v in zip(BODY_LIMBS, ref_bones):
        ref[b] = ref[a] + v
    reference = write_pose_keypoints([PoseFrame(H, W, [person(ref)])])
    measured = 2
    out = bodies(retarget_poses(drive, reference, driving_frame=measured, coords="pixels"))
    drv = bodies(drive)
    ref_len = bone_lengths(reference_body := read_pose_keypoints(reference)[0].people[0].body)
    ratio = ref_len / bone_lengths(drv[measured])
    for d, o in zip(drv, out):
        assert np.allclose(bone_lengths(o), ratio * bone_lengths(d), rtol=1e-9)
        vo, vd = bone_vectors(o), bone_vectors(d)
        cos = (vo * vd).sum(1) / np.linalg.norm(vo, axis=1) / np.linalg.norm(vd, axis=1)
        assert np.allclose(cos, 1.0, atol=1e-12)
    assert np.allclose(bone_lengths(out[measured]), ref_len, rtol=1e-9)
    assert np.allclose(out[measured][1, :2], reference_body[1, :2], atol=TOL)  # neck on neck


def test_root_motion_is_scaled_by_the_global_ratio():
    drive = driving_clip(frames=4)
    ref_body = 0.5 * bodies(drive)[0][:, :2] + [20, 20]
    out = bodies(retarget_poses(drive, write_pose_keypoints([PoseFrame(H, W, [person(ref_body)])]), coords="pixels"))
    drv = bodies(drive)
    for d, o in zip(drv, out):
        assert np.allclose(o[1, :2] - out[0][1, :2], 0.5 * (d[1, :2] - drv[0][1, :2]), atol=TOL)


def test_missing_keypoints_stay_missing_and_orphans_are_still_placed():
    drive = driving_clip(frames=3)
    drive[1]["people"][0]["pose_keypoints_2d"][3 * 3 : 3 * 3 + 3] = [0.0, 0.0, 0.0]  # right elbow gone
    out = bodies(retarget_poses(drive, [drive[0]], coords="pixels"))
    assert out[1][3, 2] == 0 and np.all(out[1][3, :2] == 0)
    # The wrist, whose parent is missing, keeps its place (self-retargeting is the identity).
    assert out[1][4, 2] > 0 and np.allclose(out[1][4, :2], bodies(drive)[1][4, :2], atol=TOL)


def test_frames_without_the_person_give_empty_frames():
    drive = driving_clip(frames=3)
    drive[2]["people"] = []
    out = retarget_poses(drive, [drive[0]], coords="pixels")
    assert out[2]["people"] == [] and len(out) == 3


def test_clear_errors_for_unusable_reference_or_frame():
    drive = driving_clip(frames=2)
    empty = [{"people": [], "canvas_width": W, "canvas_height": H}]
    with pytest.raises(AA2InputError, match="reference"):
        retarget_poses(drive, empty)
    with pytest.raises(AA2InputError, match="driving_frame"):
        retarget_poses(drive, [drive[0]], driving_frame=5)
    only_head = np.zeros((18, 3))
    only_head[0] = (10, 10, 1)
    with pytest.raises(AA2InputError, match="share no visible bone"):
        retarget_poses(drive, write_pose_keypoints([PoseFrame(H, W, [PersonPose(only_head)])]))
