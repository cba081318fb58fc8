"""The model as a k-diffusion-style denoiser: `denoised = D(x, sigma)`.

k-diffusion's convention (which ComfyUI adopted) lets any sampler function of the form
`sample(model, x, sigmas, extra_args, callback)` drive the network with its own sigmas. Here `x` is
the latent in the variance-exploding parameterisation, `x = x0 + sigma * noise`; the network sees
`x / sqrt(sigma^2 + 1)` at the (fractional) training timestep whose sigma matches. The schedule and
the epsilon/v conversion are the checkpoint's `NoiseSchedule`, the one training uses.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..config import SchedulerSettings
from ..errors import AA2InputError
from .noise_schedule import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`model_fn(scaled_x, timestep) -> epsilon or v`, as the checkpoint predicts."""


class Denoiser:
    """Wraps a noise/velocity predictor into `D(x, sigma) -> x0` for k-diffusion-style samplers.

    `noise_schedule` is public: sampler functions that step a diffusers scheduler read it, as
    ComfyUI's samplers read `model_sampling` off their model.
    """

    def __init__(self, model_fn: ModelFn, schedule: NoiseSchedule | SchedulerSettings) -> None:
        self.model_fn = model_fn
        self.noise_schedule = schedule if isinstance(schedule, NoiseSchedule) else NoiseSchedule(schedule)

    # k-diffusion's DiscreteSchedule names, which samplers and schedulers of that family read
    @property
    def sigmas(self) -> torch.Tensor:
        return self.noise_schedule.sigmas

    @property
    def log_sigmas(self) -> torch.Tensor:
        return self.noise_schedule.log_sigmas

    @property
    def sigma_min(self) -> float:
        return self.noise_schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.noise_schedule.sigma_max

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.noise_schedule.sigma_to_t(sigma)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **_: object) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        if sigma.ndim > 1:
            raise AA2InputError("sigma must be a number or one value per batch entry")
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        c_in = 1 / (s**2 + 1).sqrt()
        prediction = self.model_fn(x * c_in, self.sigma_to_t(sigma))
        return self.noise_schedule.x0_from_prediction(x, s, prediction)
