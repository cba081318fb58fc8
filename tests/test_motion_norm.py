"""The motion modules normalise per frame, as AnimateDiff trained them."""

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn

from aa2.config import tiny
from aa2.models.motion_norm import FrameGroupNorm, use_frame_norm


def test_frame_group_norm_takes_statistics_per_frame():
    torch.manual_seed(0)
    norm = FrameGroupNorm(4, 8, affine=True)
    nn.init.normal_(norm.weight)
    x = torch.randn(2, 8, 3, 5, 5) * torch.tensor([1.0, 10.0, 0.1]).view(1, 1, 3, 1, 1)
    out = norm(x)
    for frame in range(3):
        expected = nn.functional.group_norm(x[:, :, frame], 4, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(out[:, :, frame], expected)
    joint = nn.functional.group_norm(x, 4, norm.weight, norm.bias, norm.eps)
    assert not torch.allclose(out, joint, atol=1e-2)


def test_swap_keeps_weights_and_names_and_changes_only_the_statistics():
    config = tiny()
    torch.manual_seed(0)
    unet = UNetMotionModel.from_unet2d(
        UNet2DConditionModel(**config.unet.diffusers_config()), MotionAdapter(**config.motion.adapter_config(config.unet))
    ).eval()
    for module in unet.modules():  # motion modules start as identities; make them act
        if isinstance(module, nn.Linear) and module.weight.abs().sum() == 0:
            nn.init.normal_(module.weight, std=0.2)
    keys = dict(unet.state_dict())
    x, ctx = torch.randn(1, 4, 3, 8, 8) * torch.tensor([1.0, 4.0, 0.25]).view(1, 1, 3, 1, 1), torch.randn(3, 1, 32)
    one_frame = x[:, :, :1]
    with torch.no_grad():
        joint = unet(x, 10, encoder_hidden_states=ctx).sample
        joint_one = unet(one_frame, 10, encoder_hidden_states=ctx[:1]).sample
        swapped = use_frame_norm(unet)
        per_frame = unet(x, 10, encoder_hidden_states=ctx).sample
        per_frame_one = unet(one_frame, 10, encoder_hidden_states=ctx[:1]).sample
    assert swapped == 2 * 4 + 1 + 3 * 4  # v2: two per down block, one mid, three per up block
    state = unet.state_dict()
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)
    assert not torch.allclose(joint, per_frame, atol=1e-4)
    # a single frame has the same statistics either way (float32 reduction order: 1e-5)
    torch.testing.assert_close(joint_one, per_frame_one, atol=1e-5, rtol=0)
