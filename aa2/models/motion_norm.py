"""Per-frame GroupNorm for the AnimateDiff motion modules.

AnimateDiff (and Moore-AnimateAnyone, which trained on it) normalises the motion module's input one
frame at a time: it folds frames into the batch before its GroupNorm. diffusers'
`AnimateDiffTransformer3D` applies the same GroupNorm to the 5-D `[B, C, F, H, W]` tensor, whose
statistics then span all frames. The weights are the same; the numbers are not (a few percent of
the module's update on random weights). `use_frame_norm` swaps in this module, keeping the
parameter names, so released motion modules run as they were trained.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken per frame of a `[B, C, F, H, W]` input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        frames = x.shape[2]
        folded = rearrange(x, "b c f h w -> (b f) c h w")
        return rearrange(super().forward(folded), "(b f) c h w -> b c f h w", f=frames)


def use_frame_norm(unet: nn.Module) -> int:
    """Replace the GroupNorm of every motion module by a `FrameGroupNorm`; returns how many.

    Works on meta-device modules too (call it before loading weights).
    """
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    count = 0
    for module in unet.modules():
        if isinstance(module, AnimateDiffTransformer3D) and type(module.norm) is nn.GroupNorm:
            old = module.norm
            new = FrameGroupNorm(old.num_groups, old.num_channels, old.eps, old.affine,
                                 device=old.weight.device, dtype=old.weight.dtype)
            if old.weight.device.type != "meta":
                new.load_state_dict(old.state_dict())
            module.norm = new
            count += 1
    return count
