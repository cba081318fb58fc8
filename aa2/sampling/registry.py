"""Every sampler by name: one registry of functions in k-diffusion's convention over one denoiser.

Each entry is `sample(model, x, sigmas, extra_args=None, callback=None, disable=None)` with `model` an
`aa2.sampling.denoiser.Denoiser`, `D(x, sigma) -> x0`, and `x` pure noise at `sigmas[0]` (ComfyUI's
samplers are functions of the same kind, so a host SAMPLER drives the same denoiser). `extra_args`
carries the run's seeded `generator` for samplers that draw noise while stepping, as ComfyUI's carry
their `seed`.

* diffusers' schedulers (`ddim`, `euler`, ...) stay diffusers-driven on their own timesteps,
  wrapped by `aa2.sampling.schedulers.SchedulerSampler`; `ddim` is the checkpoint's default;
* `k_euler`, `k_dpmpp_2m` are written out in `aa2.sampling.k_samplers` and follow any sigmas.

The node dropdown, the CLI's `--sampler` and `SamplingSettings.sampler` all offer `SAMPLER_CHOICES`.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import AA2InputError
from .k_samplers import K_SAMPLERS
from .noise_schedule import NoiseSchedule
from .schedulers import DIFFUSERS_SCHEDULERS, SchedulerSampler, euler_sigmas

SamplerFunction = Callable[..., torch.Tensor]
"""`sample(model, x, sigmas, extra_args=None, callback=None, disable=None) -> x at sigmas[-1]`."""

DEFAULT_SAMPLER = "ddim"  # Moore-AnimateAnyone's and SD1.5's own, under the checkpoint's schedule

SAMPLERS: dict[str, SamplerFunction] = {
    **{name: SchedulerSampler(name) for name in DIFFUSERS_SCHEDULERS},
    **K_SAMPLERS,
}

SAMPLER_CHOICES: tuple[str, ...] = ("default", *SAMPLERS)
"""What a user may name: "default" (the checkpoint's own, `DEFAULT_SAMPLER`) or any entry."""


# Samplers that cannot take every step count: diffusers' LCMScheduler picks its steps from the
# `original_inference_steps` (50) it was distilled with, and raises deep in sampling past them.
MAX_STEPS = {"lcm": 50}


def check_sampler_name(name: str) -> None:
    if name not in SAMPLER_CHOICES:
        raise AA2InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_CHOICES)}")


def check_sampler_steps(name: str, steps: int) -> None:
    """Refuse a step count the sampler cannot take, before any model work (`MAX_STEPS`)."""
    most = MAX_STEPS.get(name)
    if most is not None and steps > most:
        raise AA2InputError(f"the {name} sampler takes at most {most} steps (it picks them from the {most} it was "
                            f"distilled with), got {steps}: use {most} or fewer")


def sampler_function(name: str) -> SamplerFunction:
    """The registry's function for `name` ("default": the checkpoint's own sampler)."""
    check_sampler_name(name)
    return SAMPLERS[DEFAULT_SAMPLER if name == "default" else name]


def follows_custom_sigmas(sampler: SamplerFunction) -> bool:
    """Whether `sampler` walks any sigmas it is given (a diffusers scheduler keeps its own timesteps)."""
    return not isinstance(sampler, SchedulerSampler)


def check_custom_sigmas(sampler: SamplerFunction, sigmas: torch.Tensor | None) -> None:
    """Refuse custom sigmas for a sampler that keeps a diffusers scheduler's own timesteps."""
    if sigmas is not None and not follows_custom_sigmas(sampler):
        raise AA2InputError(f"custom sigmas need a k-diffusion-style sampler (k_euler, k_dpmpp_2m or a ComfyUI "
                            f"SAMPLER); {sampler.name} steps on its diffusers scheduler's own timesteps")


def sampler_sigmas(sampler: SamplerFunction, schedule: NoiseSchedule, steps: int,
                   sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """The noise levels `sampler` walks: `sigmas` if given, else its own for `steps` — a diffusers
    scheduler's timesteps, or diffusers Euler's discretisation of the checkpoint's schedule."""
    check_custom_sigmas(sampler, sigmas)
    if sigmas is not None:
        return sigmas.float()
    if isinstance(sampler, SchedulerSampler):
        return sampler.sigmas(schedule, steps)
    return euler_sigmas(schedule, steps)
