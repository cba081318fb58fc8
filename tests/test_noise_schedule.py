"""One NoiseSchedule for training and sampling: training keeps diffusers' DDPMScheduler numbers bit for
bit, and the sampling-side conversions invert each other."""

import pytest
import torch
from diffusers import DDPMScheduler

from aa2.config import MOORE_SCHEDULER, SchedulerSettings
from aa2.sampling.noise_schedule import NoiseSchedule

SETTINGS = {
    "epsilon": SchedulerSettings(),
    "v_prediction": SchedulerSettings(prediction_type="v_prediction"),
    "v_zero_snr": SchedulerSettings(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                    timestep_spacing="trailing"),
    "moore_linear": MOORE_SCHEDULER,
}


def _ddpm(settings: SchedulerSettings) -> DDPMScheduler:
    """What train/objective.py built before the NoiseSchedule: diffusers' own scheduler."""
    return DDPMScheduler(num_train_timesteps=settings.num_train_timesteps, beta_start=settings.beta_start,
                         beta_end=settings.beta_end, beta_schedule=settings.beta_schedule,
                         prediction_type=settings.prediction_type,
                         rescale_betas_zero_snr=settings.rescale_betas_zero_snr)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_training_draws_diffusers_noisy_latents_and_targets_bit_for_bit(name):
    from train.config import LossSettings
    from train.objective import DiffusionObjective

    settings = SETTINGS[name]
    objective = DiffusionObjective(settings, LossSettings(snr_gamma=5.0))
    latents = torch.randn(6, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    noisy, timesteps, target, weights = objective.draw(latents, torch.Generator().manual_seed(7))

    # the same draws, in draw()'s order, stepped through diffusers' DDPMScheduler
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(latents.shape, generator=generator)
    expected_t = torch.randint(0, 1000, (6,), generator=generator)
    ddpm = _ddpm(settings)
    assert torch.equal(timesteps, expected_t)
    assert torch.equal(noisy, ddpm.add_noise(latents, noise, expected_t))
    expected = ddpm.get_velocity(latents, noise, expected_t) if settings.prediction_type == "v_prediction" else noise
    assert torch.equal(target, expected)
    alphas = ddpm.alphas_cumprod.double()
    snr = (alphas / (1 - alphas)).float()[expected_t]
    divisor = snr + 1 if settings.prediction_type == "v_prediction" else snr.clamp_min(1e-12)
    expected_weights = torch.where(snr > 0, snr.clamp(max=5.0) / divisor, torch.ones_like(snr))
    assert torch.equal(weights, expected_weights)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sampling_sigmas_are_diffusers_alphas_with_a_finite_zero_snr_top(name):
    settings = SETTINGS[name]
    schedule = NoiseSchedule(settings)
    alphas = _ddpm(settings).alphas_cumprod.double()
    assert torch.equal(schedule.alphas_cumprod, _ddpm(settings).alphas_cumprod)
    if settings.rescale_betas_zero_snr:
        assert alphas[-1] == 0 and schedule.snr[-1] == 0  # training keeps the pure-noise step
        alphas[-1] = 2.0**-24  # diffusers' Euler cap: sigma ~4096 instead of infinity
        assert 4000 < schedule.sigma_max < 4200
    assert torch.equal(schedule.sigmas, ((1 - alphas) / alphas).sqrt().float())


@pytest.mark.parametrize("name", list(SETTINGS))
def test_prediction_from_x0_inverts_x0_from_prediction(name):
    schedule = NoiseSchedule(SETTINGS[name])
    x = torch.randn(3, 4, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    prediction = torch.randn(3, 4, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    for t in (0, 500, 999):
        sigma = schedule.sigmas[t].reshape(1, 1, 1, 1, 1)
        x_ve = x * (sigma**2 + 1).sqrt()
        x0 = schedule.x0_from_prediction(x_ve, sigma, prediction)
        back = schedule.prediction_from_x0(x_ve, sigma, x0)
        # float32 round trip; at the smallest sigma (~0.03) x0 carries the prediction at 1/30 of its size
        torch.testing.assert_close(back, prediction, rtol=1e-4, atol=1e-4)


def test_sigma_of_a_training_timestep_maps_back_to_exactly_that_timestep():
    schedule = NoiseSchedule(MOORE_SCHEDULER)
    timesteps = torch.tensor([0, 1, 19, 500, 998, 999])
    assert torch.equal(schedule.sigma_to_t(schedule.sigmas[timesteps]), timesteps.float())
