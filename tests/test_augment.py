"""Training-side augmentations (paper §3.2): random scale and the training reference image."""

from __future__ import annotations

import pytest
import torch

from aa2.conditioning.augment import (character_box, draw_scale, portrait, random_scale, scale_about,
                                      training_reference)
from aa2.errors import AA2InputError


def clip(frames: int = 3, height: int = 64, width: int = 48, seed: int = 0):
    """Random frames; a character rectangle (moving right by 2 px a frame) and a held object."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, 3, height, width, generator=g)
    character = torch.zeros(frames, height, width)
    objects = torch.zeros(1, frames, height, width)
    for f in range(frames):
        character[f, 12:52, 10 + 2 * f : 30 + 2 * f] = 1
        objects[0, f, 30:38, 30 + 2 * f : 36 + 2 * f] = 1
    return video, character, objects


def test_scale_one_is_the_identity():
    """Sampling at pixel centres with s = 1 hits every pixel exactly; float rounding of the
    grid's normalisation moves it by ~1e-7 of a pixel, hence atol 1e-5 on values in 0..1."""
    frames, character, objects = clip()
    out, char, obj, s = random_scale(frames, character, objects, scale=1.0)
    assert s == 1.0
    torch.testing.assert_close(out, frames, rtol=0, atol=1e-5)
    assert torch.equal(char, character) and torch.equal(obj, objects)


def test_pose_maps_scaled_about_the_box_centre_stay_on_the_scaled_character():
    """Training scales the skeleton with `scale_about` about the character's union box centre; a map
    drawn where the character is must land where random_scale puts the character."""
    frames, character, _ = clip()
    _, scaled, _, s = random_scale(frames, character, scale=0.6)
    ys, xs = character.amax(0).nonzero(as_tuple=True)
    centre = ((int(ys.min()) + int(ys.max()) + 1) / 2, (int(xs.min()) + int(xs.max()) + 1) / 2)
    maps = scale_about(character[:, None].repeat(1, 3, 1, 1), s, centre)
    assert torch.equal((maps[:, 0] >= 0.5).float(), scaled)
    assert float(scaled.sum()) < 0.5 * float(character.sum())


@pytest.mark.parametrize("scale", [0.5, 0.75])
def test_scaling_down_shrinks_the_masks_by_the_square(scale):
    """Area ratio ≈ s²; the rectangles' edges round to whole pixels, so allow one pixel of
    perimeter: |Δarea| ≤ perimeter of the scaled box."""
    frames, character, objects = clip()
    _, char, obj, _ = random_scale(frames, character, objects, scale=scale)
    for f in range(3):
        before, after = character[f].sum(), char[f].sum()
        perimeter = 2 * (40 + 20) * scale
        assert abs(after - scale**2 * before) <= perimeter
        assert abs(obj[0, f].sum() - scale**2 * objects[0, f].sum()) <= 2 * (8 + 6) * scale + 2


def test_scaled_character_is_pasted_and_the_hole_keeps_the_original_frame():
    frames, character, objects = clip()
    out, char, obj, _ = random_scale(frames, character, objects, scale=0.5)
    pasted = (char + obj[0]) > 0
    # Outside the scaled character and objects the frames are untouched, including the part of
    # the old character the smaller one no longer covers (the target shows more than the mask).
    outside = ~pasted[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(out[outside], frames[outside])
    old_only = (character > 0) & ~pasted
    assert old_only.any()
    assert torch.equal(out.permute(0, 2, 3, 1)[old_only], frames.permute(0, 2, 3, 1)[old_only])
    # The scaled mask is centred where the character's clip box was centred (within a pixel).
    ys, xs = torch.nonzero(char[1], as_tuple=True)
    assert abs((ys.min() + ys.max() + 1) / 2 - 32) <= 1
    assert abs((xs.min() + xs.max() + 1) / 2 - 22) <= 1  # clip box x 10..34


def test_same_seed_same_result_and_draws_stay_in_range():
    frames, character, objects = clip()
    a = random_scale(frames, character, objects, generator=torch.Generator().manual_seed(7))
    b = random_scale(frames, character, objects, generator=torch.Generator().manual_seed(7))
    assert a[3] == b[3] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    draws = [draw_scale((0.6, 0.9), torch.Generator().manual_seed(i)) for i in range(50)]
    assert all(0.6 <= d <= 0.9 for d in draws) and len(set(draws)) > 40


def test_empty_character_is_left_alone_and_bad_shapes_are_refused():
    frames, character, _ = clip()
    out, char, obj, s = random_scale(frames, torch.zeros_like(character), scale=0.5)
    assert s == 1.0 and torch.equal(out, frames) and obj is None and not char.any()
    with pytest.raises(AA2InputError, match="must match"):
        random_scale(frames, character[:2], scale=0.5)
    with pytest.raises(AA2InputError, match="Object masks"):
        random_scale(frames, character, torch.zeros(1, 3, 10, 10), scale=0.5)
    with pytest.raises(AA2InputError, match="scale_range"):
        random_scale(frames, character, scale_range=(1.2, 0.8))


def test_reference_keeps_character_pixels_and_replaces_the_rest():
    frames, character, _ = clip(frames=4)
    backgrounds = [torch.full((3, 20, 30), 0.123), torch.full((3, 90, 60), 0.987)]  # any sizes
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        image, mask, index = training_reference(
            frames, character, aspect=0.5, backgrounds=backgrounds, generator=g
        )
        assert image.shape == (3, 64, 32) and mask.shape == (64, 32)  # centre crop, 1:2
        crop = frames[index, :, :, 8:40]
        keep = character[index, :, 8:40] > 0
        assert torch.equal(mask > 0, keep)
        assert torch.equal(image[:, keep], crop[:, keep])
        rest = image[:, ~keep]
        # Replaced by one flat colour or one of the flat backgrounds: a single value per channel,
        # none of them the frame's own (random) pixels.
        assert torch.allclose(rest, rest[:, :1].expand_as(rest), atol=1e-6)
        assert not torch.isclose(rest, crop[:, ~keep]).all()


def test_reference_is_seeded_and_skips_frames_without_the_character():
    frames, character, _ = clip(frames=4)
    character[0] = 0
    character[2] = 0
    picks = set()
    for seed in range(20):
        a = training_reference(frames, character, generator=torch.Generator().manual_seed(seed))
        b = training_reference(frames, character, generator=torch.Generator().manual_seed(seed))
        assert a[2] == b[2] and torch.equal(a[0], b[0])
        picks.add(a[2])
    assert picks == {1, 3}
    with pytest.raises(AA2InputError, match="empty in every frame"):
        training_reference(frames, torch.zeros_like(character))


def test_reference_resizes_to_the_requested_size():
    frames, character, _ = clip()
    image, mask, _ = training_reference(frames, character, aspect=0.75, size=(32, 24),
                                        generator=torch.Generator().manual_seed(0))
    assert image.shape == (3, 32, 24) and mask.shape == (32, 24)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_character_framing_crops_a_portrait_around_the_character():
    """framing="character": the crop is the character's box plus 10 % of its height each side, at the
    asked aspect, inside the frame; the character then fills far more of the reference than a centre crop."""
    frames, character, _ = clip(frames=1, height=128, width=128)
    character[:] = 0
    character[0, 40:80, 60:70] = 1  # 40 tall, 10 wide: a small figure in a big frame
    top, left, height, width = character_box(character[0], aspect=1.0)
    assert (height, width) == (48, 48)  # 40 + 2 * 4, widened to square
    assert top <= 40 and top + height >= 80 and left <= 60 and left + width >= 70
    image, mask, _ = training_reference(frames, character, aspect=1.0, size=(128, 128), framing="character",
                                        generator=torch.Generator().manual_seed(0))
    whole, whole_mask, _ = training_reference(frames, character, aspect=1.0, size=(128, 128),
                                              generator=torch.Generator().manual_seed(0))
    assert float(mask.mean()) > 5 * float(whole_mask.mean())
    # near the frame's edge the crop moves inside instead of leaving the frame
    character[:] = 0
    character[0, 0:40, 120:128] = 1
    top, left, height, width = character_box(character[0], aspect=1.0)
    assert top == 0 and left + width == 128 and height == width
    # the same crop as a function of an image and its mask (what evaluation and the demo use)
    cut = portrait(frames[0], character[0], aspect=1.0)
    assert torch.equal(cut, frames[0, :, top:top + height, left:left + width])
    assert portrait(frames[0], character[0], aspect=1.0, size=(32, 32)).shape == (3, 32, 32)
    with pytest.raises(AA2InputError, match="framing"):
        training_reference(frames, character, framing="portrait")
    with pytest.raises(AA2InputError, match="empty"):
        character_box(torch.zeros(16, 16), aspect=1.0)


def test_one_list_of_reference_framings_for_training_scoring_and_the_demo():
    """train.config's setting, train.synthworld_eval and the demo take the same names, from one place."""
    import typing

    from aa2.conditioning.augment import REFERENCE_FRAMINGS
    from aa2.demo import synthworld_scene
    from aa2.synthworld import make_clip
    from train.config import DataSettings

    assert set(typing.get_args(typing.get_type_hints(DataSettings)["reference_framing"])) == set(REFERENCE_FRAMINGS)
    clip = make_clip(5, frames=2, size=32, motion="walk", cross_identity=False)
    with pytest.raises(AA2InputError, match="--reference-framing is one of frame, character; got 'portrait'"):
        synthworld_scene(clip, "portrait")
    assert synthworld_scene(clip, "character").reference.shape == synthworld_scene(clip, "frame").reference.shape
