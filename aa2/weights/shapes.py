"""Configs read off tensor shapes of diffusers-named state dicts.

A file rarely says what it is; its shapes do. Head counts and norm groups cannot be read from
shapes, and every SD1.5-family model keeps SD1.5's (8 heads, 32 groups), so those stay default.
"""

from __future__ import annotations

import re

import torch

from ..config import PoseShape, UNetShape
from ..errors import AA2WeightsError

StateDict = dict[str, torch.Tensor]


def infer_unet_shape(state: StateDict, source: str) -> tuple[UNetShape, int]:
    """`(UNetShape, conv_in input channels)` of a diffusers `UNet2DConditionModel` state dict."""
    if "conv_in.weight" not in state:
        raise AA2WeightsError(f"{source} has no UNet weights (no conv_in.weight): is it the right file?")
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"down_blocks\.(\d+)\.resnets\.0\.conv1\.weight$", k))})
    if not levels:
        raise AA2WeightsError(f"{source}: no down blocks found; expected an SD1.5-style UNet")
    channels = tuple(int(state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels)
    layers = len({k.split(".")[3] for k in state if k.startswith("down_blocks.0.resnets.")})
    cross = [v for k, v in state.items() if k.endswith("attn2.to_k.weight")]
    if not cross:
        raise AA2WeightsError(f"{source}: no cross-attention layers; expected an SD1.5-style UNet")
    cross_dim = int(cross[0].shape[1])
    if cross_dim != 768 and channels[0] == 320:
        kind = {1024: "SD2.x", 2048: "SDXL"}.get(cross_dim, f"a model with {cross_dim}-wide text context")
        raise AA2WeightsError(
            f"{source} looks like {kind} (cross-attention width {cross_dim}); Animate Anyone 2 is built on "
            "SD1.5 (width 768). Use an SD1.5-based file."
        )
    shape = UNetShape(block_out_channels=channels, layers_per_block=layers, cross_attention_dim=cross_dim)
    return shape, int(state["conv_in.weight"].shape[1])


def infer_pose_shape(state: StateDict, source: str) -> PoseShape:
    """PoseShape of an Animate Anyone 1 pose guider (`conv_in`, `blocks.N`, `conv_out`)."""
    if "conv_in.weight" not in state or "conv_out.weight" not in state:
        raise AA2WeightsError(f"{source} is not a pose guider (it needs conv_in, blocks.* and conv_out)")
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    # blocks come in pairs (keep width, then widen with stride 2); the widths are conv_in's and
    # every second block's outputs
    widths = [int(state["conv_in.weight"].shape[0])] + [
        int(state[f"blocks.{i}.weight"].shape[0]) for i in blocks[1::2]
    ]
    return PoseShape(conditioning_channels=int(state["conv_in.weight"].shape[1]), block_out_channels=tuple(widths))
