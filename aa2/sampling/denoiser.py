"""The model as a k-diffusion-style denoiser: `denoised = D(x, sigma)`.

k-diffusion's convention (which ComfyUI adopted) lets any sampler function of the form
`sample(model, x, sigmas, extra_args, callback)` drive the network with its own sigmas. Here `x` is
the latent in the variance-exploding parameterisation, `x = x0 + sigma * noise`; the network sees
`x / sqrt(sigma^2 + 1)` at the (fractional) training timestep whose sigma matches.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..config import SchedulerSettings
from ..errors import AA2InputError

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`model_fn(scaled_x, timestep) -> epsilon or v`, as the checkpoint predicts."""


def training_sigmas(settings: SchedulerSettings) -> torch.Tensor:
    """The sigma of every training timestep, `[num_train_timesteps]`, from the diffusers schedule."""
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler(
        num_train_timesteps=settings.num_train_timesteps,
        beta_start=settings.beta_start,
        beta_end=settings.beta_end,
        beta_schedule=settings.beta_schedule,
        rescale_betas_zero_snr=settings.rescale_betas_zero_snr,
    )
    alphas = ddpm.alphas_cumprod.double()
    if settings.rescale_betas_zero_snr:
        alphas[-1] = 2.0**-24  # as diffusers' Euler does: sigma stays finite (~4096)
    return ((1 - alphas) / alphas).sqrt().float()


class Denoiser:
    """Wraps a noise/velocity predictor into `D(x, sigma) -> x0` for k-diffusion-style samplers."""

    def __init__(self, model_fn: ModelFn, settings: SchedulerSettings) -> None:
        self.model_fn = model_fn
        self.prediction_type = settings.prediction_type
        self.sigmas = training_sigmas(settings)
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep by linear interpolation in log-sigma (k-diffusion's rule)."""
        log_sigma = sigma.float().clamp(min=self.sigma_min, max=self.sigma_max).log().cpu()
        index = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.sigmas) - 1)
        low, high = self.log_sigmas[index - 1], self.log_sigmas[index]
        fraction = (log_sigma - low) / (high - low)
        return (index - 1 + fraction).to(sigma.device)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        if sigma.ndim > 1:
            raise AA2InputError("sigma must be a number or one value per batch entry")
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        c_in = 1 / (s**2 + 1).sqrt()
        prediction = self.model_fn(x * c_in, self.sigma_to_t(sigma))
        if self.prediction_type == "epsilon":
            return x - s * prediction
        # v-prediction: x0 = alpha * z - sigma_vp * v with z = x * c_in, alpha = c_in, sigma_vp = s * c_in
        return x * c_in**2 - prediction * s * c_in
