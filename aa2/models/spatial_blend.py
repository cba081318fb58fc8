"""Spatial blending (Animate Anyone 2, section 3.2).

After every spatial attention of the DenoisingNet's mid and up blocks, the object guider's features
of the same scale are mixed into the hidden states with a learned per-pixel weight:
`a = sigmoid(conv(cat(z, z_obj)))`, `z = a * z_obj + (1 - a) * z`.

Departure: a learnable scalar gate `g` per layer, starting at 0, gives
`z + g * a * (z_obj - z)`, which is the paper's formula at `g = 1`. The paper's layer is not an
identity at initialisation (`sigmoid(0) = 0.5` would replace half of every hidden state by object
features and wreck a loaded UNet); with `g = 0` the output is exactly `z`, bit for bit, while `g`
still receives gradient (`a * (z_obj - z)` is not zero), so training opens the gate. The conv is
zero-initialised as well, so `a` starts at a uniform 0.5.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from ..config import UNetShape
from ..errors import AA2InputError
from .object_guider import decoder_scales


class BlendLayer(nn.Module):
    """`forward(z [N, C, h, w], z_obj [N or B, C, h, w]) -> [N, C, h, w]`.

    N = batch * frames with rows ordered (batch, frame). `z_obj` with B rows (one object image per
    clip) is repeated over each clip's N / B frames.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor, z_obj: torch.Tensor) -> torch.Tensor:
        z_obj = self._match(z, z_obj)
        a = torch.sigmoid(self.conv(torch.cat([z, z_obj], dim=1)))
        return z + self.gate * a * (z_obj - z)

    def _match(self, z: torch.Tensor, z_obj: torch.Tensor) -> torch.Tensor:
        channels = self.conv.out_channels
        if z.ndim != 4 or z.shape[1] != channels:
            raise AA2InputError(f"hidden states must be [N, {channels}, h, w], got {tuple(z.shape)}")
        if z_obj.ndim != 4 or z_obj.shape[1:] != z.shape[1:]:
            raise AA2InputError(
                f"object features {tuple(z_obj.shape)} do not match the hidden states {tuple(z.shape)} in channels "
                "or size: compute them with the ObjectGuider of this model from latents of the same size"
            )
        rows, have = z.shape[0], z_obj.shape[0]
        if have == rows:
            return z_obj
        if have == 0 or rows % have:
            raise AA2InputError(
                f"object features have {have} rows for {rows} rows of hidden states; give one row per clip "
                "or one per (clip, frame)"
            )
        return repeat(z_obj, "b c h w -> (b f) c h w", f=rows // have)


def attention_paths(unet: UNetShape, layers_per_block: int | None = None) -> list[str]:
    """Module paths of the decoder's spatial attentions in forward order (SD1.5: 1 + 3 * 3)."""
    layers = unet.layers_per_block if layers_per_block is None else layers_per_block
    ups = range(1, len(unet.block_out_channels))  # up_blocks.0 has no attention in the SD1.5 layout
    # an up block has one more layer than a down block: it also consumes the skip of the downsampler
    return ["mid_block.attentions.0"] + [f"up_blocks.{i}.attentions.{j}" for i in ups for j in range(layers + 1)]


def scale_of(path: str) -> str:
    """`"mid_block.attentions.0"` -> `"mid"`, `"up_blocks.2.attentions.1"` -> `"up2"` (ObjectGuider's keys)."""
    parts = path.split(".")
    if parts[0] == "mid_block":
        return "mid"
    if parts[0] == "up_blocks" and len(parts) > 1 and parts[1].isdigit():
        return f"up{parts[1]}"
    raise AA2InputError(f"{path!r} is not a mid or up block attention: spatial blending happens only there")


class SpatialBlend(nn.Module):
    """One `BlendLayer` per decoder spatial attention, in `layers` keyed by path with dots as `_`.

    `forward(path, z, z_obj)` blends at the attention `path` (e.g. `"up_blocks.1.attentions.0"`).
    `layers_per_block` defaults to `unet.layers_per_block`.
    """

    def __init__(self, unet: UNetShape, layers_per_block: int | None = None) -> None:
        super().__init__()
        scales = decoder_scales(unet)
        self.attention_paths = attention_paths(unet, layers_per_block)
        self.layers = nn.ModuleDict(
            {self.key(path): BlendLayer(scales[scale_of(path)].channels) for path in self.attention_paths}
        )

    @staticmethod
    def key(path: str) -> str:
        return path.replace(".", "_")

    @staticmethod
    def scale_of(path: str) -> str:
        return scale_of(path)

    def layer(self, path: str) -> BlendLayer:
        if self.key(path) not in self.layers:
            raise AA2InputError(f"no blend layer for {path!r}; the layers are at {self.attention_paths}")
        return self.layers[self.key(path)]

    def forward(self, path: str, z: torch.Tensor, z_obj: torch.Tensor) -> torch.Tensor:
        return self.layer(path)(z, z_obj)
