"""The diffusion objective (paper §3.1, eq. 1): predict the added noise (or velocity) of a noised clip.

Built on `aa2.sampling.noise_schedule.NoiseSchedule`, the object the sampler's denoiser uses, made from
the noise schedule the base checkpoint was trained with (`aa2.config.SchedulerSettings`), so training
and sampling share one schedule and one v/epsilon parametrisation:

* target: the noise for `epsilon`, `alpha_t * noise - sigma_t * x0` for `v_prediction`;
* zero-terminal SNR (Lin et al. 2024) rescales the betas when the settings ask for it — the last
  timestep is then pure noise, which only v-prediction can learn from;
* noise offset (a per-sample, per-channel constant added to the noise, the same for every frame
  and pixel) lets the model move a clip's overall brightness;
* min-SNR-gamma weighting (Hang et al. 2023) weights each sample by `min(SNR, gamma) / SNR`
  (epsilon) or `min(SNR, gamma) / (SNR + 1)` (v), which evens out the timesteps' pull. For v the
  latter falls to 0 as the noise grows (below 0.13 from SNR 0.15 on, 40 % of a zero-terminal-SNR
  schedule), so the steps where the picture must come from the conditions alone hardly train.
  `snr_weighting: min_snr_plus_one` is Moore-AnimateAnyone's v weight, `min(SNR + 1, gamma) / (SNR + 1)`:
  the same down-weighting of low noise, weight 1 at high noise. Measured on SynthWorld (bench/README.md):
  with `min_snr` the trained model ignored its reference image.

Everything random is drawn from the caller's generator, so a step is reproducible from its seed.
"""

from __future__ import annotations

import dataclasses

import torch

from aa2.config import SchedulerSettings
from aa2.sampling.noise_schedule import NoiseSchedule

from .config import LossSettings


def training_schedule(base: SchedulerSettings, loss: LossSettings) -> SchedulerSettings:
    """The base checkpoint's schedule with the recipe's prediction type / zero-SNR choices applied.

    The exported checkpoint carries this, so sampling uses what the weights were trained for.
    """
    changes = {}
    if loss.prediction_type is not None:
        changes["prediction_type"] = loss.prediction_type
    if loss.zero_terminal_snr is not None:
        changes["rescale_betas_zero_snr"] = loss.zero_terminal_snr
        if loss.zero_terminal_snr:
            changes["timestep_spacing"] = "trailing"  # sampling must start at the pure-noise step
    return dataclasses.replace(base, **changes)


class DiffusionObjective:
    """`noisy, timesteps, target, weights = objective.draw(latents, generator)`, then `objective.loss(...)`."""

    def __init__(self, settings: SchedulerSettings, loss: LossSettings) -> None:
        self.settings, self.options = settings, loss
        self.schedule = NoiseSchedule(settings)
        self.snr = self.schedule.snr  # inf-free: alphas_cumprod < 1 at every step

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def draw(self, latents: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """latents `[B, 4, F, h, w]` (clean, scaled) -> noisy latents, timesteps `[B]`, target, weights `[B]`."""
        batch = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
        if self.options.noise_offset:
            offset = torch.randn(batch, latents.shape[1], 1, 1, 1, generator=generator)
            noise = noise + self.options.noise_offset * offset
        timesteps = torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        noise = noise.to(latents.device)
        latents = latents.float()
        noisy = self.schedule.add_noise(latents, noise, timesteps.to(latents.device))
        target = self.schedule.training_target(latents, noise, timesteps.to(latents.device))
        return noisy, timesteps.to(latents.device), target, self.weights(timesteps).to(latents.device)

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weights `[B]`: ones, or min-SNR-gamma."""
        gamma = self.options.snr_gamma
        if gamma is None:
            return torch.ones(timesteps.shape[0])
        snr = self.snr[timesteps.cpu()]
        clipped = snr.clamp(max=gamma)
        if self.settings.prediction_type == "v_prediction":
            if self.options.snr_weighting == "min_snr_plus_one":
                return (snr + 1).clamp(max=gamma) / (snr + 1)
            return clipped / (snr + 1)
        # epsilon at zero SNR has no defined weight (and nothing to learn): weight 1 there
        return torch.where(snr > 0, clipped / snr.clamp_min(1e-12), torch.ones_like(snr))

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted mean squared error, in float32 whatever the network's precision."""
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
        return (per_sample * weights).mean()
