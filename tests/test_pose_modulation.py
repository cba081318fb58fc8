"""Depth-wise pose modulation: Animate Anyone 1 guider weights load and pass through unchanged,
the zero-initialised depth and time branches are really wired, and bad inputs are refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from aa2.config import PoseShape, tiny
from aa2.errors import AA2InputError
from aa2.models.pose_modulation import DepthCrossAttention, PoseGuider, PoseModulation

# Moore-AnimateAnyone's pose_guider.pth for PoseGuider(320, block_out_channels=(16, 32, 96, 256)),
# written out by hand from their src/models/pose_guider.py: conv_in, pairs of (keep, widen /2), conv_out.
MOORE_POSE_GUIDER_SHAPES = {
    "conv_in.weight": (16, 3, 3, 3), "conv_in.bias": (16,),
    "blocks.0.weight": (16, 16, 3, 3), "blocks.0.bias": (16,),
    "blocks.1.weight": (32, 16, 3, 3), "blocks.1.bias": (32,),
    "blocks.2.weight": (32, 32, 3, 3), "blocks.2.bias": (32,),
    "blocks.3.weight": (96, 32, 3, 3), "blocks.3.bias": (96,),
    "blocks.4.weight": (96, 96, 3, 3), "blocks.4.bias": (96,),
    "blocks.5.weight": (256, 96, 3, 3), "blocks.5.bias": (256,),
    "conv_out.weight": (320, 256, 3, 3), "conv_out.bias": (320,),
}


@pytest.fixture(scope="session")
def moore_pose_guider_file(tmp_path_factory):
    """A random AA1 pose guider saved as Moore saves it (a torch.save'd state dict)."""
    g = torch.Generator().manual_seed(0)
    # He-like scale (fan-in of a 3x3 conv) keeps activations O(1) through eight layers, as trained ones are
    state = {k: torch.randn(shape, generator=g) * (2 / (9 * shape[1] if len(shape) > 1 else 9 * 16)) ** 0.5
             for k, shape in MOORE_POSE_GUIDER_SHAPES.items()}
    path = tmp_path_factory.mktemp("moore") / "pose_guider.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def sd15_modulation_with_aa1(moore_pose_guider_file):
    torch.manual_seed(1)
    modulation = PoseModulation(PoseShape(), 320)
    state = torch.load(moore_pose_guider_file, weights_only=True)
    modulation.skeleton_guider.load_state_dict(state, strict=True)
    return modulation, state


def _video(channels: int, frames: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, channels, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_pose_guider_has_moores_keys_and_shapes():
    state = PoseGuider(3, (16, 32, 96, 256), 320).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == MOORE_POSE_GUIDER_SHAPES


def test_pose_guider_equals_moores_inflated_conv3d_forward(sd15_modulation_with_aa1):
    """Moore's InflatedConv3d is a Conv2d per frame; a (1, 3, 3) Conv3d over the clip is the same map."""
    modulation, state = sd15_modulation_with_aa1
    x = _video(3)

    def conv(name: str, h: torch.Tensor, stride: int = 1) -> torch.Tensor:
        weight = rearrange(state[f"{name}.weight"], "o i kh kw -> o i 1 kh kw")
        return F.conv3d(h, weight, state[f"{name}.bias"], stride=(1, stride, stride), padding=(0, 1, 1))

    h = F.silu(conv("conv_in", x))
    for i in range(6):
        h = F.silu(conv(f"blocks.{i}", h, stride=2 if i % 2 else 1))
    reference = conv("conv_out", h)
    ours = modulation.skeleton_guider(x)
    assert ours.shape == (1, 320, 3, 2, 2)
    # different conv kernels (2-D vs 3-D) sum in different orders: float32 rounding only
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_fresh_pose_guider_starts_at_zero_like_controlnet():
    out = PoseGuider(3, (8, 8, 16, 16), 32)(_video(3))
    assert out.shape == (1, 32, 3, 2, 2) and not out.any()


def test_aa1_guider_passes_through_bit_identical_with_and_without_depth(sd15_modulation_with_aa1):
    modulation, _ = sd15_modulation_with_aa1
    skeleton, depth = _video(3, seed=1), _video(1, seed=2)
    expected = modulation.skeleton_guider(skeleton)
    assert expected.abs().sum() > 0  # a non-trivial guider, so equality means something
    assert torch.equal(modulation(skeleton), expected)
    assert torch.equal(modulation(skeleton, depth), expected)


def _tiny_modulation(seed: int = 0) -> PoseModulation:
    torch.manual_seed(seed)
    modulation = PoseModulation(tiny().pose, 32)
    torch.nn.init.normal_(modulation.skeleton_guider.conv_out.weight, std=0.1)  # as if AA1 weights were loaded
    return modulation


def test_depth_branch_changes_output_once_its_projection_is_nonzero():
    modulation = _tiny_modulation()
    skeleton, depth = _video(3), _video(1, seed=3)
    before = modulation(skeleton, depth)
    torch.nn.init.normal_(modulation.depth_attention.to_out.weight, std=0.1)
    after = modulation(skeleton, depth)
    assert (after - before).abs().max() > 1e-4
    assert torch.equal(modulation(skeleton), before)  # depth=None still skips the branch


def test_three_channel_grey_depth_equals_one_channel():
    modulation = _tiny_modulation()
    torch.nn.init.normal_(modulation.depth_attention.to_out.weight, std=0.1)
    skeleton, depth = _video(3), _video(1, seed=3)
    torch.testing.assert_close(modulation(skeleton, depth.expand(-1, 3, -1, -1, -1)), modulation(skeleton, depth))


def test_depth_cross_attention_matches_hand_written_attention_and_mixes_positions():
    torch.manual_seed(0)
    attention = DepthCrossAttention(8, heads=2)
    torch.nn.init.normal_(attention.to_out.weight)
    skeleton, depth = torch.randn(2, 6, 8), torch.randn(2, 6, 8)

    q = attention.to_q(F.layer_norm(skeleton, (8,), attention.norm_skeleton.weight, attention.norm_skeleton.bias))
    d = F.layer_norm(depth, (8,), attention.norm_depth.weight, attention.norm_depth.bias)
    k, v = attention.to_k(d), attention.to_v(d)
    heads = []
    for h in range(2):
        cols = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ v[..., cols])
    reference = attention.to_out(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attention(skeleton, depth), reference, rtol=1e-5, atol=1e-5)

    moved = depth.clone()
    moved[:, 0] += torch.randn(8)  # depth at position 0 only (not a constant shift: LayerNorm removes that)
    changed = (attention(skeleton, moved) - attention(skeleton, depth)).abs()
    assert changed[:, 3].max() > 1e-4  # ...reaches the skeleton token at position 3


def test_temporal_conv_mixes_frames_only_once_trained():
    modulation = _tiny_modulation()
    skeleton = _video(3)
    moved = skeleton.clone()
    moved[:, :, 0] = torch.rand_like(moved[:, :, 0])  # change frame 0 only
    # at init every frame is encoded on its own: frame 1 does not see frame 0
    assert torch.equal(modulation(moved)[:, :, 1], modulation(skeleton)[:, :, 1])
    torch.nn.init.normal_(modulation.temporal_conv.weight, std=1.0)
    assert (modulation(moved)[:, :, 1] - modulation(skeleton)[:, :, 1]).abs().max() > 1e-4
    assert torch.equal(modulation(moved)[:, :, 2], modulation(skeleton)[:, :, 2])  # kernel 3: reach of one frame


def test_output_layout_is_b_c_f_h8_w8():
    out = _tiny_modulation()(torch.rand(2, 3, 4, 24, 16), torch.rand(2, 1, 4, 24, 16))
    assert out.shape == (2, 32, 4, 3, 2)


@pytest.mark.parametrize(
    ("skeleton", "depth", "message"),
    [
        (torch.rand(3, 3, 16, 16), None, r"\[B, C, F, H, W\]"),
        (torch.rand(1, 4, 2, 16, 16), None, "channels"),
        (torch.rand(1, 3, 2, 20, 16), None, "divisible by 8"),
        (torch.rand(1, 3, 2, 16, 16) * 2 - 1, None, r"0\.\.1"),
        (torch.rand(1, 3, 2, 16, 16), torch.rand(1, 1, 3, 16, 16), "frame count"),
        (torch.rand(1, 3, 2, 16, 16), torch.rand(1, 1, 2, 16, 24), "frame count and size"),
        (torch.rand(1, 3, 2, 16, 16), torch.rand(1, 2, 2, 16, 16), "1 or 3"),
        (torch.rand(1, 3, 2, 16, 16), torch.rand(2, 16, 16), "depth must be"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(skeleton, depth, message):
    with pytest.raises(AA2InputError, match=message):
        _tiny_modulation()(skeleton, depth)


def test_depth_without_a_depth_guider_is_refused():
    modulation = PoseModulation(PoseShape(block_out_channels=(8, 8, 16, 16), use_depth=False), 32)
    assert modulation.depth_guider is None
    with pytest.raises(AA2InputError, match="use_depth"):
        modulation(_video(3), _video(1))
