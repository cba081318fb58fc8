"""The weights each offload mode keeps on the compute device, phase by phase, counted without a GPU.

The model is assembled on the meta device — every shape real, no byte allocated — through the same
`assemble` the loaders use, so the count includes exactly what a loaded model holds (the widened
`conv_in`, the ReferenceNet without its unread tail, the motion modules' positional tables).
Weights only: activations depend on the frame size, the clip length and the attention kernels, and
are measured on a GPU (bench/).
"""

from __future__ import annotations

import torch

from ..config import AA2Config
from .offload import OFFLOAD_MODES, part_bytes, resident_bytes


def meta_model(config: AA2Config, dtype: torch.dtype = torch.float16):
    """An `AA2Model` of `config`'s shapes on the meta device, cast to `dtype` (int buffers keep theirs)."""
    from ..models.aa2_model import assemble
    from ..weights.tiny import random_parts

    with torch.device("meta"):  # random_parts' "random" tensors are then shapes only
        model = assemble(config, random_parts(config, perturb=False))
    return model.to(dtype=dtype)


def weight_footprint(config: AA2Config, dtype: torch.dtype = torch.float16) -> dict[str, dict[str, int]]:
    """`{mode: {phase: bytes of weights on the compute device}}` for every offload mode, plus
    `{"parts": {part: bytes}}`."""
    parts = part_bytes(meta_model(config, dtype))
    return {"parts": parts, **{mode: resident_bytes(parts, mode) for mode in OFFLOAD_MODES}}


def footprint_table(config: AA2Config, dtype: torch.dtype = torch.float16) -> str:
    """`weight_footprint` as a Markdown table in MiB (the README's)."""
    footprint = weight_footprint(config, dtype)
    mib = lambda n: f"{n / 2**20:,.0f}"  # noqa: E731
    lines = ["| phase | part it runs | none (MiB) | model (MiB) |", "|---|---|---:|---:|"]
    from .offload import PHASE_PART

    for phase, part in PHASE_PART.items():
        lines.append(f"| {phase} | {part} | {mib(footprint['none'][phase])} | {mib(footprint['model'][phase])} |")
    peak = {mode: max(footprint[mode].values()) for mode in OFFLOAD_MODES}
    lines.append(f"| **peak** | | **{mib(peak['none'])}** | **{mib(peak['model'])}** |")
    return "\n".join(lines)
