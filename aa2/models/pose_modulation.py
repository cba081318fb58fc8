"""Depth-wise pose modulation (Animate Anyone 2, section 3.4).

Animate Anyone 1 encodes each skeleton frame with a small conv net, the pose guider, and adds its
features to the DenoisingNet's latents after `conv_in`. Animate Anyone 2 adds a second guider over
the driving person's structured depth map: skeleton features query depth features by
cross-attention (so the pose signal knows which limb is in front), and a Conv3D models time.

Where this departs from the paper's figure, and why:

* Fusion happens at the guiders' last hidden features, before the skeleton guider's `conv_out`.
  Loaded Animate Anyone 1 weights then carry the depth signal into the UNet through the `conv_out`
  that already speaks the UNet's language, and the depth guider needs no zero `conv_out` of its own
  (a zero layer ahead of the attention would keep its keys and values at zero for the first steps).
* Both new branches are zero-initialised residuals (attention `to_out`, `temporal_conv`): with an
  Animate Anyone 1 guider in `skeleton_guider` the output is that guider's, bit for bit, with or
  without depth, until training moves them.
* `temporal_conv` is 3x1x1: the guider's 3x3 convs already mix space; time is the missing axis, and
  a 1x1 spatial kernel costs a third of 3x3x3.
* The depth guider takes one channel. Depth is a scalar field; a 3-channel grey depth image (what
  ComfyUI depth preprocessors return) is averaged to one. Pass grey depth, not a colour-mapped one.
* No positional encoding on the attention tokens: skeleton and depth are pixel-aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import PoseShape
from ..errors import AA2InputError, size_text


class PoseGuider(nn.Module):
    """Animate Anyone 1's pose guider, with Moore-AnimateAnyone's parameter names.

    Their `pose_guider.pth` loads with strict=True. They wrap each conv in `InflatedConv3d`, which is
    an `nn.Conv2d` run over `(b f)`: the weights have Conv2d shapes, so plain Conv2d over folded
    frames is the same network. `conv_out` starts at zero (ControlNet's trick, as theirs does);
    `out_channels=None` leaves it out (the depth guider, fused before `conv_out`).

    `forward(frames [B, C, F, H, W] in 0..1) -> [B, out_channels, F, H/8, W/8]` (8 = `downsample_factor`
    for four widths). 0..1 because Moore's `cond_image_processor` has `do_normalize=False`.
    """

    def __init__(self, conditioning_channels: int = 3, block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
                 out_channels: int | None = 320) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.conv_out: nn.Conv2d | None = None
        if out_channels is not None:
            self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, kernel_size=3, padding=1)
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)
        self.downsample_factor = 2 ** (len(block_out_channels) - 1)

    def hidden(self, frames: torch.Tensor) -> torch.Tensor:
        """`[N, C, H, W]` -> the features before `conv_out`, `[N, block_out_channels[-1], H/8, W/8]`."""
        h = F.silu(self.conv_in(frames))
        for block in self.blocks:
            h = F.silu(block(h))
        return h

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        count = frames.shape[2]
        h = self.hidden(rearrange(frames, "b c f h w -> (b f) c h w"))
        if self.conv_out is not None:
            h = self.conv_out(h)
        return rearrange(h, "(b f) c h w -> b c f h w", f=count)


class DepthCrossAttention(nn.Module):
    """Skeleton tokens `[N, L, C]` attend to depth tokens `[N, L, C]` of the same frame -> `[N, L, C]`.

    Pre-norm multi-head attention; `to_out` starts at zero so the residual it feeds is a no-op.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"pose features have {channels} channels, not divisible by {heads} heads")
        self.heads = heads
        self.norm_skeleton, self.norm_depth = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels, bias=False) for _ in range(3))
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, skeleton: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        s, d = self.norm_skeleton(skeleton), self.norm_depth(depth)
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=self.heads)
                   for t in (self.to_q(s), self.to_k(d), self.to_v(d)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))


class PoseModulation(nn.Module):
    """`forward(skeleton [B, C, F, H, W], depth [B, 1|3, F, H, W] | None) -> [B, out_channels, F, H/8, W/8]`.

    Inputs in 0..1. The output is added to the DenoisingNet's `conv_in` output. `depth=None` skips
    the depth branch (and is the only choice when `pose.use_depth` is False).
    """

    def __init__(self, pose: PoseShape, out_channels: int = 320) -> None:
        super().__init__()
        self.pose = pose
        width = pose.block_out_channels[-1]
        self.skeleton_guider = PoseGuider(pose.conditioning_channels, pose.block_out_channels, out_channels)
        self.depth_guider = PoseGuider(1, pose.block_out_channels, None) if pose.use_depth else None
        self.depth_attention = DepthCrossAttention(width, pose.attention_heads) if pose.use_depth else None
        self.temporal_conv = nn.Conv3d(width, width, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal_conv.weight)
        nn.init.zeros_(self.temporal_conv.bias)

    def forward(self, skeleton: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        self._check(skeleton, depth)
        batch = skeleton.shape[0]
        s = self.skeleton_guider.hidden(rearrange(skeleton, "b c f h w -> (b f) c h w"))
        if depth is not None:
            if depth.shape[1] == 3:
                depth = depth.mean(dim=1, keepdim=True)
            d = self.depth_guider.hidden(rearrange(depth, "b c f h w -> (b f) c h w"))
            height = s.shape[2]
            fused = self.depth_attention(rearrange(s, "n c h w -> n (h w) c"), rearrange(d, "n c h w -> n (h w) c"))
            s = s + rearrange(fused, "n (h w) c -> n c h w", h=height)
        s = rearrange(s, "(b f) c h w -> b c f h w", b=batch)
        s = s + self.temporal_conv(s)
        out = self.skeleton_guider.conv_out(rearrange(s, "b c f h w -> (b f) c h w"))
        return rearrange(out, "(b f) c h w -> b c f h w", b=batch)

    def _check(self, skeleton: torch.Tensor, depth: torch.Tensor | None) -> None:
        _check_video("skeleton", skeleton, (self.pose.conditioning_channels,), self.skeleton_guider.downsample_factor)
        if depth is None:
            return
        if self.depth_guider is None:
            raise AA2InputError("this pose modulation has no depth guider (pose.use_depth is False): pass depth=None")
        _check_video("depth", depth, (1, 3), self.skeleton_guider.downsample_factor)
        if depth.shape[0] != skeleton.shape[0] or depth.shape[2:] != skeleton.shape[2:]:
            raise AA2InputError(
                f"depth [B, C, F, H, W] = {tuple(depth.shape)} must match skeleton {tuple(skeleton.shape)} in "
                "batch, frame count and size: extract both from the same driving frames at the same resolution"
            )


def _check_video(name: str, video: torch.Tensor, channels: tuple[int, ...], factor: int) -> None:
    if video.ndim != 5:
        raise AA2InputError(f"{name} must be [B, C, F, H, W] (batch, channels, frames, height, width), got shape "
                            f"{tuple(video.shape)}; for a single clip add the batch axis with .unsqueeze(0)")
    if video.shape[1] not in channels:
        raise AA2InputError(f"{name} has {video.shape[1]} channels, expected {' or '.join(map(str, channels))}: "
                            "is the channel axis second ([B, C, F, H, W])?")
    if video.shape[3] % factor or video.shape[4] % factor:
        raise AA2InputError(f"{name} is {size_text(video.shape[3], video.shape[4])}; both must be divisible by {factor} "
                            "to line up with the latents: resize or crop the driving video")
    low, high = float(video.min()), float(video.max())
    if low < -0.1 or high > 1.1:  # slack for resampling overshoot; [-1, 1] or 0..255 input fails
        raise AA2InputError(f"{name} values span {low:.2f}..{high:.2f}; expected images in 0..1 (the range the "
                            "pose guider was trained on): use (x + 1) / 2 for [-1, 1] or x / 255 for bytes")
