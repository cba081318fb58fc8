"""ShapeAgnosticMask and AA2MaskPreview with ComfyUI-shaped tensors, and the layout boundary."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from aa2.conditioning.masks import environment_frames, shape_agnostic_mask
from comfy_contract import contract_problems

F, H, W = 3, 40, 48


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.nodes.nodes_masks


@pytest.fixture
def errors(pack):
    return pack.aa2.errors


def _character(frames=F):
    """A ragged character: a body rectangle and a one-pixel-wide arm, moving right frame by frame."""
    mask = torch.zeros(frames, H, W)
    for i in range(frames):
        mask[i, 8:30, 10 + 2 * i:22 + 2 * i] = 1
        mask[i, 12, 22 + 2 * i:34 + 2 * i] = 1
    return mask


def _video(frames=F, seed=0):
    return torch.rand(frames, H, W, 3, generator=torch.Generator().manual_seed(seed))  # IMAGE layout


@pytest.mark.parametrize("node_id", ["ShapeAgnosticMask", "AA2MaskPreview"])
def test_mask_nodes_are_registered_and_meet_the_node_contract(pack, node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert contract_problems(cls) == [] and node_id in pack.NODE_DISPLAY_NAME_MAPPINGS


@pytest.mark.parametrize("blocks, box, dilate", [((0, 0), "per_frame", 0), ((3, 2), "clip", 2), ((1, 1), "per_frame", 0)])
def test_node_gives_aa2s_mask_and_environment_in_comfyui_layout(nodes, blocks, box, dilate):
    mask, video = _character(), _video()
    agnostic, environment = nodes.ShapeAgnosticMask().make(mask, *blocks, box, dilate, "keep", video, 0.5)
    assert agnostic.shape == (F, H, W) and environment.shape == (F, H, W, 3)
    assert agnostic.dtype == environment.dtype == torch.float32
    expected = shape_agnostic_mask(mask, blocks[0] or None, blocks[1] or None, box=box, dilate=dilate)
    assert torch.equal(agnostic, expected)  # 0 means the paper's h/10 setting, i.e. None in aa2
    assert bool((agnostic >= mask).all())  # contains the input mask
    frames = rearrange(video, "f h w c -> f c h w")
    assert torch.equal(environment, rearrange(environment_frames(frames, expected), "f c h w -> f h w c"))
    outside = agnostic == 0
    assert torch.equal(environment[outside], video[outside])  # the scene outside is untouched


def test_one_mask_serves_every_driving_frame(nodes):
    mask = _character(1)
    agnostic, environment = nodes.ShapeAgnosticMask().make(mask, 0, 0, "per_frame", 0, "keep", _video(4))
    assert agnostic.shape == (4, H, W) and environment.shape == (4, H, W, 3)
    assert torch.equal(agnostic[3], agnostic[0])


def test_without_driving_frames_the_environment_shows_the_mask_in_grey(nodes):
    agnostic, environment = nodes.ShapeAgnosticMask().make(_character(), 0, 0, "per_frame", 0, "keep", fill=0.25)
    assert torch.equal(environment, 0.25 * agnostic[..., None].expand(-1, -1, -1, 3))


def test_a_single_hw_mask_is_accepted(nodes):
    agnostic, _ = nodes.ShapeAgnosticMask().make(_character(1)[0], 0, 0, "per_frame", 0, "keep")
    assert agnostic.shape == (1, H, W)


def test_mask_and_frames_of_different_sizes_get_a_clear_error(nodes, errors):
    with pytest.raises(errors.AA2InputError, match="same frame count and the same height and width"):
        nodes.ShapeAgnosticMask().make(_character(), 0, 0, "per_frame", 0, "keep", torch.rand(F, H, W + 8, 3))


def test_channels_first_frames_are_refused_as_not_an_image(nodes, errors):
    with pytest.raises(errors.AA2InputError, match="ComfyUI IMAGE"):
        nodes.ShapeAgnosticMask().make(_character(), 0, 0, "per_frame", 0, "keep", torch.rand(F, 3, H, W))


def test_empty_frames_policy_reaches_the_core(nodes, errors):
    mask = _character()
    mask[1] = 0
    with pytest.raises(errors.AA2InputError, match="empty in 1 of 3 frames"):
        nodes.ShapeAgnosticMask().make(mask, 0, 0, "per_frame", 0, "error")
    agnostic, _ = nodes.ShapeAgnosticMask().make(mask, 0, 0, "per_frame", 0, "previous")
    assert torch.equal(agnostic[1], agnostic[0])  # ties go to the earlier frame


def test_overlay_tints_only_the_mask_by_its_opacity(nodes):
    video, mask = _video(), _character()
    (overlay,) = nodes.AA2MaskPreview().overlay(video, mask, "green", 0.5)
    inside, outside = mask > 0, mask == 0
    assert overlay.shape == video.shape
    assert torch.equal(overlay[outside], video[outside])
    tint = torch.tensor(nodes.TINTS["green"])
    # Halfway to the tint; 1e-6 covers float32 rounding of the blend.
    assert torch.allclose(overlay[inside], 0.5 * video[inside] + 0.5 * tint, atol=1e-6)
    (unchanged,) = nodes.AA2MaskPreview().overlay(video, mask, "red", 0.0)
    assert torch.equal(unchanged, video)


def test_overlay_refuses_a_mask_of_another_size(nodes, errors):
    with pytest.raises(errors.AA2InputError, match="resize one to the other"):
        nodes.AA2MaskPreview().overlay(_video(), torch.ones(F, H // 2, W // 2), "red", 0.5)


def test_boundary_round_trips_images_and_masks(pack):
    boundary = pack.nodes.boundary
    video = _video()
    frames = boundary.image_to_frames(video)
    assert frames.shape == (F, 3, H, W) and torch.equal(frames[:, 1], video[..., 1])
    assert torch.equal(boundary.frames_to_image(frames), video)
    rgba = torch.cat([video, torch.ones(F, H, W, 1)], dim=-1)
    assert torch.equal(boundary.image_to_frames(rgba), frames)  # alpha dropped
    mask = _character()
    assert torch.equal(boundary.frames_to_mask(boundary.mask_to_frames(mask)), mask)
    assert boundary.frames_to_mask(mask > 0.5).dtype == torch.float32
