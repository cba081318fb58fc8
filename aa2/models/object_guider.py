"""Object guider (Animate Anyone 2, section 3.2).

A light fully-convolutional net over the VAE latents of the object image (what the character
holds or touches). It returns one feature map per scale at which the DenoisingNet's decoder has a
spatial attention, with that attention's channel count and size, for `SpatialBlend` to mix in.

The scales follow the SD1.5 layout that `UNetShape.diffusers_config` builds: the mid block and
`up_blocks.1..n-1` carry attentions (`up_blocks.0` is a plain `UpBlock2D`). `up_blocks.i` runs at
the resolution of `down_blocks.(n-1-i)` with `reversed(block_out_channels)[i]` channels; the mid
block runs at the lowest resolution with the last width. So level k (downsampled k times) has
`block_out_channels[k]` channels, and the guider is an encoder with one stride-2 conv per level.

`finest_only=True` builds only the full-resolution level, for the ablation "without spatial
blending" (`AA2Config.object_injection = "conv_in"`): its features are added to the DenoisingNet's
`conv_in` output like the pose features, and its projection starts at zero so that this is an
identity until trained.

Departure: the paper gives no layer list. We use one 3x3 conv per level (stride 2 from level 1 on,
padding 1, so odd sizes go to ceil(h/2) exactly as the UNet's own downsamplers do) and a linear 1x1
projection per scale, so the blended features can take either sign like the UNet's hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetShape
from ..errors import AA2InputError


@dataclass(frozen=True)
class ObjectScale:
    """One decoder scale: features `[N, channels, ceil(h / downsample), ceil(w / downsample)]`."""

    channels: int
    downsample: int  # relative to the latent size, a power of two


def decoder_scales(unet: UNetShape) -> dict[str, ObjectScale]:
    """Scale name -> (channels, downsample) of the decoder's spatial attentions, in forward order.

    SD1.5: `{"mid": (1280, 8), "up1": (1280, 4), "up2": (640, 2), "up3": (320, 1)}`.
    """
    widths = unet.block_out_channels
    last = len(widths) - 1
    scales = {"mid": ObjectScale(widths[last], 2 ** last)}
    for i in range(1, len(widths)):  # up_blocks.i sits at level last - i
        scales[f"up{i}"] = ObjectScale(widths[last - i], 2 ** (last - i))
    return scales


def _level_name(level: int, last: int) -> str:
    return "mid" if level == last else f"up{last - level}"


class ObjectGuider(nn.Module):
    """`forward(object_latents [N, 4, h, w]) -> {"mid", "up1", "up2", "up3"}: [N, C_s, h_s, w_s]`.

    N is whatever rows the caller has (B, or B*F for per-frame objects); latents are the *scaled*
    VAE latents. The dict is ordered as the decoder runs (mid first); `scales` gives each entry's
    expected channels and downsample factor.
    """

    def __init__(self, unet: UNetShape, latent_channels: int = 4, *, finest_only: bool = False) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        widths = unet.block_out_channels
        self._last = len(widths) - 1
        levels = 1 if finest_only else len(widths)
        self.scales = {name: scale for name, scale in decoder_scales(unet).items()
                       if name in {_level_name(k, self._last) for k in range(levels)}}
        self.conv_in = nn.Conv2d(latent_channels, widths[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList(
            [nn.Conv2d(widths[0], widths[0], kernel_size=3, padding=1)]
            + [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2)
               for c_in, c_out in zip(widths[:levels - 1], widths[1:levels])]
        )
        self.proj_out = nn.ModuleDict(
            {_level_name(k, self._last): nn.Conv2d(widths[k], widths[k], kernel_size=1) for k in range(levels)}
        )
        if finest_only:  # added straight onto conv_in's output: start as an identity, as the pose features do
            nn.init.zeros_(self.proj_out[_level_name(0, self._last)].weight)
            nn.init.zeros_(self.proj_out[_level_name(0, self._last)].bias)

    @property
    def finest(self) -> str:
        """The full-resolution scale's name (`up3` for SD1.5's four widths)."""
        return _level_name(0, self._last)

    def forward(self, object_latents: torch.Tensor) -> dict[str, torch.Tensor]:
        if object_latents.ndim != 4 or object_latents.shape[1] != self.latent_channels:
            raise AA2InputError(
                f"object latents must be [N, {self.latent_channels}, h, w] (N = batch or batch*frames), got "
                f"{tuple(object_latents.shape)}; fold a [B, C, F, h, w] clip with "
                "rearrange(x, 'b c f h w -> (b f) c h w')"
            )
        h = F.silu(self.conv_in(object_latents))
        features: dict[str, torch.Tensor] = {}
        for level, block in enumerate(self.blocks):
            h = F.silu(block(h))
            features[_level_name(level, self._last)] = self.proj_out[_level_name(level, self._last)](h)
        return {name: features[name] for name in self.scales}
