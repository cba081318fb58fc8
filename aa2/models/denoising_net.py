"""The DenoisingNet: SD1.5 UNet + AnimateDiff motion modules + Animate Anyone 2's inputs.

Paper section 3.1. The base is diffusers' `UNetMotionModel`, left untouched; AA2's parts are joined
on by composition, each at a seam diffusers offers, and removed again by `detach()`:

* environment: `conv_in` takes noise (4) + environment latents (4) + shape-agnostic mask (1). The
  extra input channels start at zero, so a loaded SD1.5 / Animate Anyone 1 UNet is unchanged.
* pose: the depth-wise pose modulation's features are added to `conv_in`'s output (forward hook).
* reference: ReferenceNet tokens join the spatial self-attention (attention processors).
* objects: spatial blending after every spatial attention of the mid and up blocks (forward hooks
  on those `Transformer2DModel`s), skipped entirely when there is no object input. With
  `config.object_injection = "conv_in"` (the paper's "w/o spatial blending" ablation) the guider's
  full-resolution features are added to `conv_in`'s output instead, beside the pose features.

Per-call inputs reach the hooks through `DenoisingConditions`, set for the duration of `forward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch
from einops import rearrange, repeat
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..config import AA2Config, ObjectInjection
from ..errors import AA2InputError
from .object_guider import ObjectGuider
from .pose_modulation import PoseModulation
from .spatial_blend import SpatialBlend


OBJECT_INJECTIONS = get_args(ObjectInjection)


@dataclass
class DenoisingConditions:
    """What stays fixed for a clip while it is denoised: computed once per clip, not per step.

    Shapes use the clip's batch B (CFG doubling is broadcast, not copied, by `forward`).
    """

    environment: torch.Tensor | None = None  # [B, 5, F, h, w]: env latents (4) + agnostic mask (1)
    pose_features: torch.Tensor | None = None  # [B, C0, F, h, w], C0 = first block's channels
    object_features: dict[str, torch.Tensor] | None = None  # scale -> [(B F), C, h_s, w_s]


class DenoisingNet(nn.Module):
    """`forward(latents [B, 4, F, h, w], timestep, context [B, tokens, C], conditions)` -> [B, 4, F, h, w]."""

    def __init__(self, config: AA2Config, unet: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.unet = unet
        first_channels = config.unet.block_out_channels[0]
        self.pose_modulation = PoseModulation(config.pose, first_channels)
        if config.object_injection not in OBJECT_INJECTIONS:
            raise AA2InputError(f"object_injection is one of {', '.join(OBJECT_INJECTIONS)}; "
                                f"got {config.object_injection!r}")
        blend = config.object_injection == "blend"
        self.object_guider = (ObjectGuider(config.unet, finest_only=not blend) if config.use_object_guider
                              else None)
        self.spatial_blend = (
            SpatialBlend(config.unet, config.unet.layers_per_block) if config.use_object_guider and blend else None
        )
        self._conditions: DenoisingConditions | None = None
        self._frames = 1
        self._handles: list[RemovableHandle] = []
        self.attach()

    # -- attaching -------------------------------------------------------------------------------
    def attach(self) -> None:
        """Install the pose and blending hooks (the reference processors belong to `AA2Model`)."""
        if self._handles:
            return
        self._handles.append(self.unet.conv_in.register_forward_hook(self._add_pose))
        if self.object_guider is not None and self.spatial_blend is None:
            self._handles.append(self.unet.conv_in.register_forward_hook(self._add_objects))
        if self.spatial_blend is not None:
            for path in self.spatial_blend.attention_paths:
                module = self.unet.get_submodule(path)
                self._handles.append(module.register_forward_hook(self._blender(path)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _add_pose(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        pose = None if self._conditions is None else self._conditions.pose_features
        if pose is None:
            return output
        pose = _fold_frames(_match_batch(pose, output.shape[0] // self._frames))
        return output + pose.to(output.dtype)

    def _add_objects(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        objects = None if self._conditions is None else self._conditions.object_features
        if not objects:
            return output  # no object input: bit-identical, as with blending
        features = _match_rows(objects[self.object_guider.finest], output.shape[0], self._frames)
        return output + features.to(output.dtype)

    def _blender(self, path: str):
        layer = self.spatial_blend.layer(path)
        scale = self.spatial_blend.scale_of(path)

        def blend(module: nn.Module, args: tuple, output):
            objects = None if self._conditions is None else self._conditions.object_features
            if not objects:
                return output  # no object input: the layer is skipped, bit-identical
            z = output[0] if isinstance(output, tuple) else output.sample
            z_obj = _match_rows(objects[scale], z.shape[0], self._frames)
            z = layer(z, z_obj.to(z.dtype))
            return (z, *output[1:]) if isinstance(output, tuple) else type(output)(sample=z)

        return blend

    # -- running ---------------------------------------------------------------------------------
    def encode_objects(self, object_latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Object latents [B, 4, F, h, w] -> the object guider's scales (four, or the finest alone for
        `object_injection="conv_in"`), each [(B F), C, h_s, w_s]."""
        if self.object_guider is None:
            raise AA2InputError("this model has no object guider (config.use_object_guider is False)")
        return self.object_guider(_fold_frames(object_latents))

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor,
        conditions: DenoisingConditions | None = None,
    ) -> torch.Tensor:
        conditions = conditions or DenoisingConditions()
        batch, _, frames = latents.shape[:3]
        sample = torch.cat([latents, self._environment(conditions, latents)], dim=1)
        # UNetMotionModel wants the context once per frame: rows ordered (batch, frame).
        context = repeat(_match_batch(context, batch), "b n c -> (b f) n c", f=frames).contiguous()
        self._conditions, self._frames = conditions, frames
        try:
            return self.unet(sample, timestep, encoder_hidden_states=context).sample
        finally:
            self._conditions, self._frames = None, 1

    def _environment(self, conditions: DenoisingConditions, latents: torch.Tensor) -> torch.Tensor:
        extra = self.unet.conv_in.in_channels - latents.shape[1]
        env = conditions.environment
        if env is None:
            return latents.new_zeros(latents.shape[0], extra, *latents.shape[2:])
        if extra == 0:
            raise AA2InputError(
                "these weights have no environment input (a 4-channel conv_in, as Animate Anyone 1 / "
                "Moore-AnimateAnyone): use the pipeline's environment blending mode instead"
            )
        if env.shape[1] != extra or env.shape[2:] != latents.shape[2:]:
            raise AA2InputError(
                f"environment must be [B, {extra}, F, h, w] = {tuple(latents.shape[2:])} to match the "
                f"latents, got {tuple(env.shape)}"
            )
        return _match_batch(env, latents.shape[0]).to(latents.dtype)


def _fold_frames(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c f h w -> (b f) c h w")


def _match_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a per-clip condition over the batch (classifier-free guidance doubles the batch)."""
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise AA2InputError(f"a condition has batch {x.shape[0]}, which does not divide the batch {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


def _match_rows(x: torch.Tensor, rows: int, frames: int) -> torch.Tensor:
    """Object features come as (batch, frame) rows; repeat them when CFG doubles the batch."""
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise AA2InputError(f"object features have {x.shape[0]} rows, expected a divisor of {rows}")
    return x.repeat(rows // x.shape[0], 1, 1, 1)


def widen_conv_in(unet: nn.Module, in_channels: int) -> None:
    """Give `conv_in` more input channels whose weights are zero: the output is unchanged."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return
    if old.in_channels > in_channels:
        raise AA2InputError(f"conv_in already has {old.in_channels} inputs, more than {in_channels}")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
