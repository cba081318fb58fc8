"""The shape-agnostic mask (paper §3.2, eq. 2), the environment frames and the latent mask.

The reference for eq. 2 is a naive per-block max written with numpy loops, independent of the
torch implementation's scatter. All comparisons are exact: masks are 0/1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aa2.conditioning.masks import (
    draw_block_counts,
    environment_frames,
    latent_mask,
    mask_boxes,
    shape_agnostic_mask,
)
from aa2.errors import AA2InputError


# --- an independent reference -------------------------------------------------------------


def naive_box(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(frame)
    if len(ys) == 0:
        return None
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def naive_edges(size: int, blocks: int) -> list[int]:
    return [b * size // blocks for b in range(blocks + 1)]


def naive_agnostic(frame: np.ndarray, kh: int, kw: int, box=None) -> np.ndarray:
    """Eq. 2 with loops: split the box into kh × kw blocks, fill each block with its max."""
    out = np.zeros_like(frame)
    box = box or naive_box(frame)
    if box is None:
        return out
    top, bottom, left, right = box
    h, w = bottom - top, right - left
    kh, kw = min(kh, h), min(kw, w)
    ye, xe = naive_edges(h, kh), naive_edges(w, kw)
    for by in range(kh):
        for bx in range(kw):
            y0, y1 = top + ye[by], top + ye[by + 1]
            x0, x1 = left + xe[bx], left + xe[bx + 1]
            out[y0:y1, x0:x1] = frame[y0:y1, x0:x1].max()
    return out


def blobs(frames: int = 3, height: int = 37, width: int = 29, seed: int = 0) -> torch.Tensor:
    """Irregular float masks: an ellipse that moves, plus salt, with soft values around 0.5."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = np.zeros((frames, height, width), np.float32)
    for f in range(frames):
        cy, cx = height * (0.35 + 0.1 * f), width * (0.5 - 0.07 * f)
        ellipse = ((yy - cy) / (height * 0.25)) ** 2 + ((xx - cx) / (width * 0.2)) ** 2 < 1
        salt = rng.random((height, width)) > 0.97
        out[f] = np.where(ellipse | salt, rng.uniform(0.5, 1, (height, width)),
                          rng.uniform(0, 0.49, (height, width)))
    return torch.from_numpy(out)


def binary(mask: torch.Tensor) -> np.ndarray:
    return (mask >= 0.5).numpy().astype(np.float32)


# --- eq. 2 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kh,kw", [(1, 1), (2, 3), (3, 7), (5, 5), (13, 4), (40, 40)])
def test_agnostic_mask_equals_naive_block_max(kh, kw):
    mask = blobs()
    out = shape_agnostic_mask(mask, kh, kw).numpy()
    for f, frame in enumerate(binary(mask)):
        np.testing.assert_array_equal(out[f], naive_agnostic(frame, kh, kw))


@pytest.mark.parametrize("h,w,kh,kw", [(60, 30, 6, 3), (65, 34, 7, 3), (4, 9, 1, 1)])
def test_default_blocks_are_about_ten_pixels(h, w, kh, kw):
    # §3.2: kh = h/10, kw = w/10 blocks (halves round up), i.e. blocks of about 10 pixels.
    rng = np.random.default_rng(h)
    frame = np.zeros((80, 50), np.float32)
    frame[10:10 + h, 10:10 + w] = rng.random((h, w)) > 0.985  # sparse, so block counts show
    frame[10, 10] = frame[10 + h - 1, 10 + w - 1] = 1  # pins the box
    out = shape_agnostic_mask(torch.from_numpy(frame)[None]).numpy()[0]
    np.testing.assert_array_equal(out, naive_agnostic(frame, kh, kw))
    if kh > 1:
        assert not np.array_equal(out, naive_agnostic(frame, kh + 1, kw))
        assert not np.array_equal(out, naive_agnostic(frame, kh - 1, kw))


def test_blocks_tile_the_box_exactly_when_size_is_not_divisible():
    for size in range(1, 40):
        for blocks in range(1, size + 1):
            edges = naive_edges(size, blocks)
            widths = np.diff(edges)
            assert edges[0] == 0 and edges[-1] == size
            assert widths.min() >= 1 and widths.max() - widths.min() <= 1
    # a single pixel in the last row of a box whose height 37 is not divisible by 5
    mask = torch.zeros(1, 37, 10)
    mask[0, 0, 0] = mask[0, 36, 9] = 1
    out = shape_agnostic_mask(mask, 5, 1)
    assert out[0, 29:, :].all() and not out[0, 8:29, :].any()


def test_agnostic_mask_contains_the_original_mask():
    mask = blobs(frames=4, seed=3)
    for kh, kw in [(1, 1), (3, 2), (9, 9), (None, None)]:
        for dilate in (0, 2):
            out = shape_agnostic_mask(mask, kh, kw, dilate=dilate)
            grown = shape_agnostic_mask(mask, 10_000, 10_000, dilate=dilate)  # one-pixel blocks
            assert (out >= grown).all()
            assert (out >= torch.from_numpy(binary(mask))).all()


def test_one_block_fills_the_bounding_box():
    mask = blobs()
    out = shape_agnostic_mask(mask, 1, 1).numpy()
    for f, frame in enumerate(binary(mask)):
        top, bottom, left, right = naive_box(frame)
        expected = np.zeros_like(frame)
        expected[top:bottom, left:right] = 1
        np.testing.assert_array_equal(out[f], expected)


def test_one_pixel_blocks_give_the_mask_back():
    mask = blobs()
    for f, frame in enumerate(binary(mask)):
        top, bottom, left, right = naive_box(frame)
        out = shape_agnostic_mask(mask[f:f + 1], bottom - top, right - left)
        np.testing.assert_array_equal(out[0].numpy(), frame)


def test_bool_and_float_inputs_agree_and_keep_device_and_dtype():
    mask = blobs()
    from_float = shape_agnostic_mask(mask.double(), 4, 3)
    from_bool = shape_agnostic_mask(mask >= 0.5, 4, 3)
    assert from_float.dtype == torch.float64 and from_bool.dtype == torch.float32
    assert from_float.device == mask.device
    assert set(from_float.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(from_float.float(), from_bool, rtol=0, atol=0)


# --- training draw -------------------------------------------------------------------------


def test_training_draw_is_reproducible_from_the_generator():
    mask = blobs(frames=4, height=64, width=48, seed=5)
    def seeded(seed):
        return torch.Generator().manual_seed(seed)

    first = shape_agnostic_mask(mask, random_blocks=True, generator=seeded(7))
    again = shape_agnostic_mask(mask, random_blocks=True, generator=seeded(7))
    torch.testing.assert_close(first, again, rtol=0, atol=0)

    draws = {draw_block_counts(64, 48, torch.Generator().manual_seed(s)) for s in range(20)}
    assert len(draws) > 10  # different seeds give different kh/kw in general
    assert all(1 <= kh <= 64 and 1 <= kw <= 48 for kh, kw in draws)
    masks = {shape_agnostic_mask(mask, random_blocks=True,
                                 generator=torch.Generator().manual_seed(s)).sum().item()
             for s in range(8)}
    assert len(masks) > 1


def test_training_draw_is_one_grid_for_the_whole_clip():
    # same shape in every frame, same box → with one draw per clip, every frame is identical
    frame = blobs(frames=1, height=50, width=40, seed=2)[0]
    mask = frame.expand(5, -1, -1).clone()
    for seed in range(5):
        rng = torch.Generator().manual_seed(seed)
        out = shape_agnostic_mask(mask, random_blocks=True, generator=rng)
        assert all(torch.equal(out[0], out[f]) for f in range(1, 5))
        kh, kw = draw_block_counts(*_box_size(binary(mask)[0]), torch.Generator().manual_seed(seed))
        np.testing.assert_array_equal(out[0].numpy(), naive_agnostic(binary(mask)[0], kh, kw))


def _box_size(frame: np.ndarray) -> tuple[int, int]:
    top, bottom, left, right = naive_box(frame)
    return bottom - top, right - left


# --- box, dilation, empty frames -----------------------------------------------------------


def test_clip_box_uses_one_box_for_all_frames():
    mask = blobs(frames=3)
    frames = binary(mask)
    boxes = [naive_box(f) for f in frames]
    union = (min(b[0] for b in boxes), max(b[1] for b in boxes),
             min(b[2] for b in boxes), max(b[3] for b in boxes))
    out = shape_agnostic_mask(mask, 4, 3, box="clip").numpy()
    for f, frame in enumerate(frames):
        np.testing.assert_array_equal(out[f], naive_agnostic(frame, 4, 3, box=union))
    # with one block the clip box is filled in every frame
    whole = shape_agnostic_mask(mask, 1, 1, box="clip")
    assert all(torch.equal(whole[0], whole[f]) for f in range(3))


def test_dilation_grows_the_mask():
    mask = torch.zeros(1, 20, 20)
    mask[0, 10, 10] = 1
    grown = shape_agnostic_mask(mask, 10_000, 10_000, dilate=2)
    expected = torch.zeros(20, 20)
    expected[8:13, 8:13] = 1
    torch.testing.assert_close(grown[0], expected, rtol=0, atol=0)
    mask = blobs()
    assert (shape_agnostic_mask(mask, 3, 3, dilate=3) >= shape_agnostic_mask(mask, 3, 3)).all()
    assert shape_agnostic_mask(mask, 3, 3, dilate=3).sum() > shape_agnostic_mask(mask, 3, 3).sum()


def _with_empty_frames() -> torch.Tensor:
    mask = blobs(frames=5)
    mask[[0, 2, 3]] = 0.2  # below threshold: no character
    return mask


def test_empty_keep_leaves_empty_frames_empty():
    out = shape_agnostic_mask(_with_empty_frames(), 3, 3, empty="keep")
    assert not out[[0, 2, 3]].any() and out[1].any() and out[4].any()


def test_empty_previous_copies_the_nearest_frame():
    mask = _with_empty_frames()
    out = shape_agnostic_mask(mask, 3, 3, empty="previous")
    assert torch.equal(out[0], out[1])  # nearest is the later frame 1
    assert torch.equal(out[2], out[1])  # 1 and 4: frame 1 is nearer
    assert torch.equal(out[3], out[4])  # 2 and 4 apart from 1 and 4: frame 4 is nearer
    assert not torch.equal(out[1], out[4])
    assert not shape_agnostic_mask(torch.zeros(3, 8, 8), empty="previous").any()


def test_empty_previous_breaks_ties_toward_the_earlier_frame():
    mask = blobs(frames=3)
    mask[1] = 0
    mask[2] = blobs(frames=3, seed=9)[0]
    out = shape_agnostic_mask(mask, 2, 2, empty="previous")
    assert torch.equal(out[1], out[0]) and not torch.equal(out[0], out[2])


def test_empty_error_names_the_frames():
    mask = blobs(frames=5)
    mask[[0, 3]] = 0
    with pytest.raises(AA2InputError, match=r"2 of 5 frames \(frame indices 0, 3\)"):
        shape_agnostic_mask(mask, empty="error")
    with pytest.raises(AA2InputError, match=r"3 of 3 frames"):
        shape_agnostic_mask(torch.zeros(3, 8, 8), empty="error")


# --- environment frames --------------------------------------------------------------------


def test_environment_frames_fill_inside_and_leave_outside_untouched():
    frames = torch.rand(3, 3, 37, 29)
    agnostic = shape_agnostic_mask(blobs(), 4, 4)
    env = environment_frames(frames, agnostic, fill=0.5)
    inside = agnostic.bool()[:, None].expand_as(frames)
    assert torch.equal(env[~inside], frames[~inside])  # exact, not approximately
    assert (env[inside] == 0.5).all()
    assert environment_frames(frames, agnostic, fill=0.0)[inside].eq(0).all()


def test_environment_frames_rejects_mismatched_inputs():
    frames = torch.rand(3, 3, 16, 16)
    with pytest.raises(AA2InputError, match=r"\(2, 16, 16\).*2 frames.*\(3, 3, 16, 16\).*3 frames"):
        environment_frames(frames, torch.zeros(2, 16, 16))
    with pytest.raises(AA2InputError, match="same frame count and the same height and width"):
        environment_frames(frames, torch.zeros(3, 16, 8))
    with pytest.raises(AA2InputError, match="channels-last"):
        environment_frames(torch.rand(3, 16, 16, 3), torch.zeros(3, 16, 16))
    with pytest.raises(AA2InputError, match=r"\[F, 3, H, W\]"):
        environment_frames(torch.rand(3, 16, 16), torch.zeros(3, 16, 16))
    with pytest.raises(AA2InputError, match="float"):
        environment_frames(torch.zeros(3, 3, 16, 16, dtype=torch.uint8), torch.zeros(3, 16, 16))
    with pytest.raises(AA2InputError, match="0..1"):
        environment_frames(frames, torch.zeros(3, 16, 16), fill=2.0)


# --- latent mask ---------------------------------------------------------------------------


def test_latent_mask_shape_and_any_pixel_marks_the_cell():
    mask = torch.zeros(2, 32, 24)
    mask[0, 9, 17] = 1  # one pixel in cell (1, 2)
    lat = latent_mask(mask)
    assert lat.shape == (2, 1, 4, 3)
    expected = torch.zeros(2, 1, 4, 3)
    expected[0, 0, 1, 2] = 1
    torch.testing.assert_close(lat, expected, rtol=0, atol=0)
    # the upsampled latent mask covers the pixel mask
    agnostic = shape_agnostic_mask(torch.nn.functional.pad(blobs(), (0, 3, 0, 3)), 3, 3)
    up = latent_mask(agnostic).repeat_interleave(8, 2).repeat_interleave(8, 3)[:, 0]
    assert (up >= agnostic).all()
    assert latent_mask(agnostic, factor=4).shape == (3, 1, 10, 8)


def test_latent_mask_rejects_sizes_off_the_latent_grid():
    with pytest.raises(AA2InputError, match=r"29×37 \(width × height\).*multiple of 8"):
        latent_mask(blobs())
    with pytest.raises(AA2InputError, match="factor"):
        latent_mask(torch.zeros(1, 8, 8), factor=0)


# --- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: shape_agnostic_mask(torch.zeros(8, 8)), r"\[F, H, W\].*mask\[None\]"),
        (lambda: shape_agnostic_mask(torch.zeros(2, 1, 8, 8)), r"mask\[:, 0\]"),
        (lambda: shape_agnostic_mask(np.zeros((2, 8, 8))), "torch tensor"),
        (lambda: shape_agnostic_mask(torch.zeros(0, 8, 8)), "empty axis"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), 0, 2), r"kh .*≥ 1.*0"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), 2, -1), r"kw .*≥ 1"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), 2.5, 2), r"kh .*whole number"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), 2, 2, random_blocks=True), "not both"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), box="union"), "per_frame"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), empty="skip"), "previous"),
        (lambda: shape_agnostic_mask(torch.ones(2, 8, 8), dilate=-1), "dilate"),
        (lambda: latent_mask(torch.zeros(8, 8)), r"\[F, H, W\]"),
        (lambda: draw_block_counts(0, 5), "empty box"),
    ],
)
def test_bad_inputs_raise_a_helpful_error(call, message):
    with pytest.raises(AA2InputError, match=message):
        call()


def test_mask_boxes_are_the_pixel_boxes_around_each_frame_and_scale_to_other_sizes():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(3, 20, 30, generator=g) > 0.97
    mask[1] = False
    boxes = mask_boxes(mask)
    for frame, box in zip(mask, boxes):
        ys, xs = frame.nonzero(as_tuple=True)
        want = None if len(xs) == 0 else (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        assert box == want
    assert boxes[1] is None and boxes[0] is not None
    assert mask_boxes(mask.float()) == boxes  # float masks: >= 0.5 is in
    doubled = mask_boxes(mask, size=(40, 60))
    assert doubled[0] == tuple(2 * v for v in boxes[0])
    with pytest.raises(AA2InputError, match=r"\[F, H, W\]"):
        mask_boxes(mask[0])


def test_environment_mask_formulations_are_the_mask_its_box_and_eq2_between():
    from aa2.conditioning.masks import environment_mask

    mask = torch.zeros(2, 64, 64)
    mask[:, 10:50, 20:30] = 1
    mask[:, 12:20, 30:44] = 1  # an arm: the box is wider than the body
    precise, box = environment_mask(mask, "precise"), environment_mask(mask, "box")
    agnostic = environment_mask(mask, "agnostic")
    assert torch.equal(precise, mask)
    assert box.sum() == 2 * 40 * 24 and torch.equal(box[:, 10:50, 20:44], torch.ones(2, 40, 24))
    assert bool((agnostic >= mask).all()) and bool((agnostic <= box).all())
    assert mask.sum() < agnostic.sum() < box.sum()


def test_environment_mask_names_the_choices_for_an_unknown_formulation():
    from aa2.conditioning.masks import environment_mask

    with pytest.raises(AA2InputError, match="agnostic, precise, box"):
        environment_mask(torch.ones(1, 8, 8), "outline")
