"""The noise schedule a checkpoint was trained with, in the two parametrisations that use it.

Training (paper §3.1, eq. 1) noises a clean latent in diffusers' variance-preserving form,
`z_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise`, and teaches the network to predict the noise (epsilon)
or the velocity `v = sqrt(ᾱ_t) noise - sqrt(1 - ᾱ_t) x0`. Sampling in k-diffusion's convention works
in the variance-exploding form `x = x0 + sigma noise` with `sigma = sqrt((1 - ᾱ_t) / ᾱ_t)`, the same
point scaled by `1 / sqrt(ᾱ_t)`. One `NoiseSchedule`, built from the checkpoint's `SchedulerSettings`,
holds ᾱ and both conversions, so the trainer, the denoiser, the sigma schedules and the wrapped
diffusers schedulers cannot disagree about v/epsilon or zero-terminal SNR.

ᾱ itself is diffusers' (a `DDPMScheduler` built from the settings): every beta schedule it knows,
and the zero-terminal-SNR rescale (Lin et al. 2024) exactly as the diffusers samplers apply it.
"""

from __future__ import annotations

import inspect

import torch

from ..config import SchedulerSettings

ZERO_SNR_ALPHA = 2.0**-24
"""ᾱ used for sigma at a zero-terminal-SNR schedule's last step, as diffusers' Euler does: the sigma
stays finite (~4096) where it would be infinite. Training keeps the true ᾱ = 0 there."""


def diffusers_alphas_cumprod(settings: SchedulerSettings) -> torch.Tensor:
    """ᾱ of every training timestep, `[num_train_timesteps]` float32, exactly as diffusers builds it."""
    from diffusers import DDPMScheduler

    accepted = inspect.signature(DDPMScheduler.__init__).parameters
    ddpm = DDPMScheduler(**{k: v for k, v in settings.diffusers_config().items() if k in accepted})
    return ddpm.alphas_cumprod.clone()


class NoiseSchedule:
    """ᾱ, the training sigmas, the prediction type, and the conversions between them.

    Training side (variance-preserving, timesteps): `add_noise`, `training_target`, `snr`.
    Sampling side (variance-exploding, sigmas): `sigmas`, `sigma_to_t`, `x0_from_prediction` and its
    inverse `prediction_from_x0`.
    """

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.prediction_type = settings.prediction_type
        self.alphas_cumprod = diffusers_alphas_cumprod(settings)  # [T] float32
        alphas = self.alphas_cumprod.double()
        self.snr = (alphas / (1 - alphas)).float()  # [T]; 0 at a zero-terminal-SNR schedule's last step
        if settings.rescale_betas_zero_snr:
            alphas[-1] = ZERO_SNR_ALPHA
        self.sigmas = ((1 - alphas) / alphas).sqrt().float()  # [T], increasing
        self.log_sigmas = self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    # ------------------------------------------------------------------ training (variance-preserving)

    def _root_alphas(self, x: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The arithmetic of diffusers' DDPMScheduler.add_noise / get_velocity, operation for operation,
        # so training draws bit-identical noisy latents and targets (tests/test_noise_schedule.py).
        alphas = self.alphas_cumprod.to(device=x.device, dtype=x.dtype)
        timesteps = timesteps.to(x.device)
        shape = (-1, *([1] * (x.ndim - 1)))
        root_alpha = (alphas[timesteps] ** 0.5).flatten().reshape(shape)
        root_one_minus_alpha = ((1 - alphas[timesteps]) ** 0.5).flatten().reshape(shape)
        return root_alpha, root_one_minus_alpha

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """`z_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise`, one timestep per batch entry `[B]`."""
        root_alpha, root_one_minus_alpha = self._root_alphas(x0, timesteps)
        return root_alpha * x0 + root_one_minus_alpha * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict: the noise, or `v = sqrt(ᾱ_t) noise - sqrt(1 - ᾱ_t) x0`."""
        if self.prediction_type == "epsilon":
            return noise
        root_alpha, root_one_minus_alpha = self._root_alphas(x0, timesteps)
        return root_alpha * noise - root_one_minus_alpha * x0

    # ------------------------------------------------------------------ sampling (variance-exploding)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep by linear interpolation in log-sigma (k-diffusion's rule); a sigma taken
        from `sigmas` gives its own timestep exactly."""
        log_sigma = sigma.float().clamp(min=self.sigma_min, max=self.sigma_max).log().cpu()
        index = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.sigmas) - 1)
        low, high = self.log_sigmas[index - 1], self.log_sigmas[index]
        fraction = (log_sigma - low) / (high - low)
        return (index - 1 + fraction).to(sigma.device)

    def t_to_sigma(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Sigma of (fractional) timesteps, interpolated in log-sigma so that `sigma_to_t` inverts it;
        a whole timestep gives its table entry exactly."""
        t = timesteps.float().cpu()
        low = t.floor().long().clamp(0, self.num_timesteps - 1)
        high = t.ceil().long().clamp(0, self.num_timesteps - 1)
        weight = t - low
        between = ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()
        return torch.where(weight == 0, self.sigmas[low], between)

    def x0_from_prediction(self, x: torch.Tensor, sigma: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The clean latents from the network's epsilon or v at `x = x0 + sigma noise`; `sigma`
        broadcasts against `x` (`[B, 1, ...]`). The network saw `x / sqrt(sigma^2 + 1)`."""
        if self.prediction_type == "epsilon":
            return x - sigma * prediction
        c_in = 1 / (sigma**2 + 1).sqrt()
        # v-prediction: x0 = alpha * z - sigma_vp * v with z = x * c_in, alpha = c_in, sigma_vp = sigma * c_in
        return x * c_in**2 - prediction * sigma * c_in

    def prediction_from_x0(self, x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The epsilon or v that `x0_from_prediction` turns into `x0` (sigma > 0): what a diffusers
        scheduler expects from the network, given a denoiser's `x0`."""
        if self.prediction_type == "epsilon":
            return (x - x0) / sigma
        c_in = 1 / (sigma**2 + 1).sqrt()
        return (x * c_in**2 - x0) / (sigma * c_in)
