"""Sigma schedules over the checkpoint's own noise levels, for k-diffusion-style samplers.

`SIGMAS` made here plug into any sampler of that convention (ComfyUI's SamplerCustom included)
and stay inside the range the weights were trained on — for zero-terminal-SNR weights the top
sigma is ~4096, far beyond SD1.5's ~14.6, which a generic scheduler node does not know.
"""

from __future__ import annotations

import math

import torch

from ..config import SchedulerSettings
from ..errors import AA2InputError
from .noise_schedule import NoiseSchedule

SCHEDULES = ("normal", "karras", "exponential")


def schedule_sigmas(settings: SchedulerSettings, schedule: str, steps: int, rho: float = 7.0) -> torch.Tensor:
    """`[steps + 1]` decreasing sigmas ending in 0.

    normal: evenly spaced training timesteps (trailing: the last one included, as zero-SNR needs);
    karras: Karras et al. 2022's rho-spaced sigmas; exponential: evenly spaced in log-sigma.
    """
    if steps < 1:
        raise AA2InputError(f"steps must be at least 1, got {steps}")
    table = NoiseSchedule(settings).sigmas
    low, high = float(table[0]), float(table[-1])
    if schedule == "normal":
        timesteps = torch.linspace(len(table) - 1, 0, steps + 1)[:-1]
        index = timesteps.round().long()
        sigmas = table[index]
    elif schedule == "karras":
        ramp = torch.linspace(0, 1, steps)
        sigmas = (high ** (1 / rho) + ramp * (low ** (1 / rho) - high ** (1 / rho))) ** rho
    elif schedule == "exponential":
        sigmas = torch.linspace(math.log(high), math.log(low), steps).exp()
    else:
        raise AA2InputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return torch.cat([sigmas.float(), sigmas.new_zeros(1)])


def check_sigmas(sigmas: torch.Tensor) -> None:
    """Refuse custom sigmas no sampler can walk, before any model work: torch would otherwise fail
    deep in the sampler (an empty or 2-D tensor), or a single value would run no step at all and
    return the starting noise as if it were the result."""
    shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise AA2InputError(f"SIGMAS must be a 1-D list of at least two noise levels (one step), got {shape}: "
                            "connect a scheduler node (AA2 Sigmas, BasicScheduler, KarrasScheduler) with steps >= 1")
    if not torch.isfinite(sigmas).all() or bool((sigmas < 0).any()):
        raise AA2InputError(f"SIGMAS must be finite and >= 0, got {sigmas.tolist()}: check the node that made them")
