"""Structured depth (paper §3.4): depth kept on the skeleton only, normalised per frame.

Normalisation is one subtraction and one division in float32 on values of order 1..100, so
results are compared to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from aa2.conditioning.structured_depth import skeleton_mask, structured_depth
from aa2.errors import AA2InputError

F, H, W = 3, 24, 32
TOL = 1e-5


@pytest.fixture(scope="module")
def skeleton() -> torch.Tensor:
    """Coloured strokes on black, different per frame, plus faint noise below the threshold."""
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.uniform(0, 3 / 255, (F, 3, H, W)).astype(np.float32))
    for f in range(F):
        img[f, 0, 4 + f : 8 + f, 3:29] = 0.6
        img[f, 2, 10:22, 10 + 2 * f] = 1.0
    return img


@pytest.fixture(scope="module")
def depth() -> torch.Tensor:
    rng = np.random.default_rng(1)
    d = rng.uniform(1, 10, (F, H, W)) * np.array([1, 5, 20])[:, None, None]  # frames of different range
    return torch.from_numpy(d.astype(np.float32))


def test_zero_outside_the_skeleton_and_three_equal_channels(skeleton, depth):
    out = structured_depth(skeleton, depth, convention="depth")
    mask = skeleton_mask(skeleton)
    assert out.shape == (F, 3, H, W)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert (out[:, 0][~mask] == 0).all()
    assert mask.sum() < mask.numel() / 2  # the noise floor did not enter the mask


def test_each_frame_spans_zero_to_one_inside_the_mask(skeleton, depth):
    out = structured_depth(skeleton, depth, convention="depth")[:, 0]
    mask = skeleton_mask(skeleton)
    for f in range(F):
        kept = out[f][mask[f]]
        assert abs(kept.min()) < TOL and abs(kept.max() - 1) < TOL


def test_near_is_bright_and_inverse_convention_flips_the_order(skeleton, depth):
    mask = skeleton_mask(skeleton)
    as_depth = structured_depth(skeleton, depth, convention="depth")[:, 0]
    as_inverse = structured_depth(skeleton, depth, convention="inverse")[:, 0]
    for f in range(F):
        d = depth[f][mask[f]]
        assert as_depth[f][mask[f]][d.argmin()] == pytest.approx(1.0, abs=TOL)  # nearest is brightest
        assert as_inverse[f][mask[f]][d.argmax()] == pytest.approx(1.0, abs=TOL)
    # Linear normalisation of x and of -x over the same pixels: the two sum to 1 inside the mask.
    assert torch.allclose((as_depth + as_inverse)[mask], torch.ones(int(mask.sum())), atol=TOL)


def test_every_depth_layout_gives_the_same_result(skeleton, depth):
    ref = structured_depth(skeleton, depth, convention="inverse")
    assert torch.equal(ref, structured_depth(skeleton, depth[:, None], convention="inverse"))
    grey = depth[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(ref, structured_depth(skeleton, grey, convention="inverse"))
    two = torch.stack([torch.zeros_like(depth), depth], dim=1)
    assert torch.equal(ref, structured_depth(skeleton, two, convention="inverse", channel=1))


def test_dilation_grows_a_dot_into_a_square():
    dot = torch.zeros(1, 3, 9, 9)
    dot[0, 1, 4, 4] = 1.0
    assert skeleton_mask(dot).sum() == 1
    grown = skeleton_mask(dot, dilate=2)
    assert grown.sum() == 25 and grown[0, 2:7, 2:7].all()


def test_floor_keeps_the_farthest_bone_visible(skeleton, depth):
    out = structured_depth(skeleton, depth, convention="depth", floor=0.1)[:, 0]
    mask = skeleton_mask(skeleton)
    assert out[mask].min() == pytest.approx(0.1, abs=TOL) and (out[~mask] == 0).all()


def test_flat_depth_is_all_near_and_empty_skeleton_all_black(skeleton):
    flat = structured_depth(skeleton, torch.full((F, H, W), 3.0), convention="depth")[:, 0]
    assert (flat[skeleton_mask(skeleton)] == 1).all()
    black = structured_depth(torch.zeros(F, 3, H, W), torch.rand(F, H, W), convention="depth")
    assert (black == 0).all() and torch.isfinite(black).all()


def test_mismatches_name_both_shapes_and_resize_is_offered(skeleton, depth):
    with pytest.raises(AA2InputError, match=r"\(3, 3, 24, 32\).*\(2, 24, 32\)"):
        structured_depth(skeleton, depth[:2], convention="depth")
    small = depth[:, ::2, ::2]
    with pytest.raises(AA2InputError, match=r"\(12, 16\).*resize=True"):
        structured_depth(skeleton, small, convention="depth")
    resized = structured_depth(skeleton, small, convention="depth", resize=True)
    assert resized.shape == (F, 3, H, W) and (resized[:, 0][~skeleton_mask(skeleton)] == 0).all()
    # resizing keeps the picture; another aspect ratio would stretch depth off the joints
    with pytest.raises(AA2InputError, match=r"depth maps are 24×24 \(width × height\).*aspect ratio"):
        structured_depth(skeleton, depth[..., :24], convention="depth", resize=True)
    with pytest.raises(AA2InputError, match="aspect ratio"):
        structured_depth(skeleton, depth[..., :, :30], convention="depth", resize=True)
    rounded = nnf.interpolate(depth[:, None], size=(H * 2 + 1, W * 2), mode="bilinear")[:, 0]  # within 3 %
    assert structured_depth(skeleton, rounded, convention="depth", resize=True).shape == (F, 3, H, W)
    with pytest.raises(AA2InputError, match="larger = nearer"):
        structured_depth(skeleton, depth, convention="disparity")
    with pytest.raises(AA2InputError, match="channel 3"):
        structured_depth(skeleton, depth[:, None].expand(-1, 3, -1, -1), convention="depth", channel=3)
