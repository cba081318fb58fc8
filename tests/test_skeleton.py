"""Skeleton maps from POSE_KEYPOINT (paper §3.4's pose input), drawn as DWPose draws them.

Colours are compared exactly: limbs and dots are drawn without anti-aliasing, so a pixel inside a
limb has exactly the limb colour at 60% (truncated to an integer, as OpenPose does).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aa2.conditioning.skeleton import (
    BODY_LIMBS,
    HAND_EDGE_COLORS,
    HAND_EDGES,
    LIMB_COLORS,
    PersonPose,
    PoseFrame,
    prepare_skeleton_images,
    read_pose_keypoints,
    render_skeleton,
    write_pose_keypoints,
)
from aa2.errors import AA2InputError

H, W = 64, 96


def body_with(points: dict[int, tuple[float, float]]) -> np.ndarray:
    body = np.zeros((18, 3))
    for i, (x, y) in points.items():
        body[i] = (x, y, 1.0)
    return body


def pose_json(people: list[PersonPose], height: int = H, width: int = W) -> list[dict]:
    return write_pose_keypoints([PoseFrame(height, width, people)])


def rgb(image: torch.Tensor, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in (image[:, y, x] * 255).round())


def lit(image: torch.Tensor) -> torch.Tensor:
    return image.amax(dim=0) > 0


@pytest.mark.parametrize("limb", [2, 8, 12])
def test_limb_lights_its_segment_in_its_colour(limb):
    a, b = BODY_LIMBS[limb]
    out = render_skeleton(pose_json([PersonPose(body_with({a: (20, 30), b: (70, 30)}))]))[0]
    limb_colour = tuple(int(c * 0.6) for c in LIMB_COLORS[limb])
    for x in range(30, 61, 5):  # inside the segment, clear of the end dots (radius 4)
        assert rgb(out, x, 30) == limb_colour
    assert rgb(out, 20, 30) == LIMB_COLORS[a]  # end dots: each keypoint's own colour, full
    assert rgb(out, 70, 30) == LIMB_COLORS[b]
    # Nothing far from the segment: the limb is 2 × stick_width = 8 px thick.
    assert not lit(out)[:20].any() and not lit(out)[41:].any()


def test_normalised_and_pixel_coordinates_give_the_same_image():
    rng = np.random.default_rng(0)
    body = np.concatenate([rng.uniform([5, 5], [W - 5, H - 5], (18, 2)), np.ones((18, 1))], axis=1)
    pixels = pose_json([PersonPose(body)])
    normalised = pose_json([PersonPose(body / [W, H, 1])])
    a = render_skeleton(pixels)
    assert torch.equal(a, render_skeleton(normalised))
    assert torch.equal(a, render_skeleton(normalised, coords="normalized"))
    assert lit(a[0]).sum() > 200


def test_missing_keypoints_draw_nothing():
    body = body_with({2: (20, 30), 3: (70, 30)})
    body[3, 2] = 0.0  # the elbow is missing: only the shoulder's dot may remain
    out = render_skeleton(pose_json([PersonPose(body)]))[0]
    ys, xs = torch.nonzero(lit(out), as_tuple=True)
    assert xs.max() <= 24 and xs.min() >= 16  # within the shoulder dot's radius
    empty = render_skeleton(pose_json([PersonPose(np.zeros((18, 3)))]))
    assert empty.abs().sum() == 0


def test_confidence_threshold_decides_what_is_missing():
    body = body_with({2: (20, 30), 3: (70, 30)})
    body[3, 2] = 0.2
    low = render_skeleton(pose_json([PersonPose(body)]), min_confidence=0.3)
    high = render_skeleton(pose_json([PersonPose(body)]), min_confidence=0.1)
    assert lit(high[0]).sum() > lit(low[0]).sum()


def test_output_size_rescales_keypoints_from_the_canvas():
    body = body_with({0: (30, 20)})
    out = render_skeleton(pose_json([PersonPose(body)]), height=2 * H, width=3 * W)[0]
    ys, xs = torch.nonzero(lit(out), as_tuple=True)
    assert out.shape == (3, 2 * H, 3 * W)
    assert abs(xs.float().mean() - 90) <= 0.5 and abs(ys.float().mean() - 40) <= 0.5


def test_person_selector_picks_largest_index_or_all():
    small = PersonPose(body_with({2: (5, 5), 3: (15, 5)}))
    big = PersonPose(body_with({8: (40, 10), 9: (40, 60)}))
    data = pose_json([small, big])
    largest = lit(render_skeleton(data, person="largest")[0])
    first = lit(render_skeleton(data, person=0)[0])
    both = lit(render_skeleton(data, person="all")[0])
    assert largest[10:50, 40].all() and not largest[5, 10]
    assert first[5, 10] and not first[30, 40]
    assert torch.equal(both, largest | first)
    # An index past the people of a frame draws nothing rather than failing the clip.
    assert render_skeleton(data, person=5).abs().sum() == 0


def test_hands_and_face_drawn_in_their_colours_and_switchable():
    hand = np.zeros((21, 3))
    hand[0], hand[1] = (10, 50, 1), (40, 50, 1)  # wrist → first thumb joint: edge 0
    face = np.zeros((70, 3))
    face[5] = (80, 10, 1)
    data = pose_json([PersonPose(np.zeros((18, 3)), left_hand=hand, face=face)])
    out = render_skeleton(data)[0]
    assert HAND_EDGES[0] == (0, 1)
    assert rgb(out, 25, 50) == HAND_EDGE_COLORS[0]
    assert rgb(out, 10, 50) == (0, 0, 255) and rgb(out, 80, 10) == (255, 255, 255)
    assert render_skeleton(data, hands=False, face=False).abs().sum() == 0


def test_body25_is_reduced_to_the_18_keypoint_body():
    body18 = body_with({8: (40, 10), 9: (40, 60), 1: (60, 10)})
    body25 = np.zeros((25, 3))
    body25[[9, 10, 1]] = body18[[8, 9, 1]]
    body25[8] = (50, 50, 1)  # MidHip: not part of the 18-keypoint body
    frame = {"people": [{"pose_keypoints_2d": body25.reshape(-1).tolist()}], "canvas_width": W, "canvas_height": H}
    assert torch.equal(render_skeleton([frame]), render_skeleton(pose_json([PersonPose(body18)])))


def test_json_round_trip_and_text_input():
    body = body_with({0: (12.5, 20.25), 5: (30, 40)})
    data = pose_json([PersonPose(body)])
    again = read_pose_keypoints(json.dumps(data))[0]
    assert np.allclose(again.people[0].body, body)
    assert again.height == H and again.width == W


@pytest.mark.parametrize(
    "frame, words",
    [
        ({"people": []}, "canvas_height"),
        ({"people": [{"pose_keypoints_2d": [1.0] * 30}], "canvas_width": 8, "canvas_height": 8}, "10 keypoints"),
        ({"people": [{"pose_keypoints_2d": [1.0] * 31}], "canvas_width": 8, "canvas_height": 8}, "triples"),
        ({"people": [], "canvas_width": 0, "canvas_height": 8}, "empty canvas"),
    ],
)
def test_malformed_pose_keypoints_are_named(frame, words):
    with pytest.raises(AA2InputError, match=words):
        render_skeleton([frame])
    with pytest.raises(AA2InputError, match="non-empty list"):
        render_skeleton([])


def test_prepared_images_validated_converted_and_resized():
    rng = np.random.default_rng(1)
    u8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 24), dtype=np.uint8))
    as_float = prepare_skeleton_images(u8.float() / 255)
    assert torch.allclose(prepare_skeleton_images(u8), as_float)
    assert prepare_skeleton_images(u8, 8, 12).shape == (2, 3, 8, 12)
    grey = prepare_skeleton_images(as_float[:, :1])
    assert grey.shape == (2, 3, 16, 24) and torch.equal(grey[:, 0], grey[:, 2])
    with pytest.raises(AA2InputError, match="0..1"):
        prepare_skeleton_images(u8.float())
    with pytest.raises(AA2InputError, match=r"\[B, H, W, C\]"):
        prepare_skeleton_images(as_float.permute(0, 2, 3, 1))
