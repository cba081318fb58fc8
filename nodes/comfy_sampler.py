"""Let ComfyUI's own sampler functions (the SAMPLER type) drive the AA2 denoiser.

A ComfyUI SAMPLER (`comfy.samplers.KSAMPLER`) wraps a k-diffusion-style function
`sampler_function(model, x, sigmas, extra_args, callback, disable, **extra_options)`; aa2's pipeline
calls such functions with the model as `D(x, sigma) -> x0`. What remains is what some of those
functions look up on `model` besides calling it: the host's `model_sampling` object (to tell
rectified-flow models from diffusion ones, and for SDE noise scaling), reached as
`model.inner_model.inner_model.model_sampling` or through `model.inner_model.model_patcher`.
We give them a `model_sampling` of the host's own classes, set to the checkpoint's sigmas.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import torch

from ..aa2.config import SchedulerSettings
from ..aa2.sampling.noise_schedule import NoiseSchedule
from . import host


def model_sampling(settings: SchedulerSettings) -> Any:
    """The host's `model_sampling` for these weights (a plain stand-in without ComfyUI)."""
    sigmas = NoiseSchedule(settings).sigmas
    comfy_sampling = host.comfy_model_sampling
    if comfy_sampling is None:
        return SimpleNamespace(sigmas=sigmas, sigma_min=sigmas[0], sigma_max=sigmas[-1])
    kind = comfy_sampling.V_PREDICTION if settings.prediction_type == "v_prediction" else comfy_sampling.EPS

    class AA2ModelSampling(comfy_sampling.ModelSamplingDiscrete, kind):
        pass

    sampling = AA2ModelSampling()
    sampling.set_sigmas(sigmas)
    return sampling


class _HostModelView:
    """`model(x, sigma, **extra) -> x0` with the attributes ComfyUI's sampler functions read."""

    def __init__(self, denoise: Callable[..., torch.Tensor], sampling: Any) -> None:
        self._denoise = denoise
        patcher = SimpleNamespace(get_model_object=lambda name: sampling)
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=sampling), model_patcher=patcher)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        return self._denoise(x, sigma)


def host_sampler(sampler: Any, settings: SchedulerSettings, seed: int) -> Callable[..., torch.Tensor]:
    """A k-diffusion-style function for aa2's pipeline, running the host SAMPLER `sampler`."""
    sampling = model_sampling(settings)
    function = sampler.sampler_function
    options = dict(getattr(sampler, "extra_options", {}) or {})

    def run(model, x, sigmas, extra_args=None, callback=None, disable=None):
        # SDE/ancestral samplers seed their noise from the seed; aa2's own generator is no host key
        extra = {"seed": seed, **{k: v for k, v in (extra_args or {}).items() if k != "generator"}}
        return function(_HostModelView(model, sampling), x, sigmas, extra_args=extra, callback=callback,
                        disable=True, **options)

    return run
