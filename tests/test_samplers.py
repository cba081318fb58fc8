"""Schedulers by name, their k-diffusion-style wrappers, and the denoiser they all drive."""

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from aa2.config import MOORE_SCHEDULER, SchedulerSettings
from aa2.errors import AA2InputError
from aa2.sampling.denoiser import Denoiser
from aa2.sampling.noise_schedule import NoiseSchedule
from aa2.sampling.registry import SAMPLERS, sampler_sigmas
from aa2.sampling.schedulers import DIFFUSERS_SCHEDULERS, make_scheduler, step_kwargs


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for the network: depends on the input and on the timestep."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return 0.3 * x * torch.cos(t / 300) + t / 2000


@pytest.mark.parametrize("name", list(DIFFUSERS_SCHEDULERS))
@pytest.mark.parametrize("settings", [SchedulerSettings(), MOORE_SCHEDULER], ids=["sd15", "moore"])
def test_every_named_sampler_runs_under_the_checkpoint_schedule(name, settings):
    scheduler = make_scheduler(name, settings)
    assert scheduler.config.prediction_type == settings.prediction_type
    assert scheduler.config.rescale_betas_zero_snr == settings.rescale_betas_zero_snr
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 4, 4, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(toy_model(model_input, t), t, x, **step_kwargs(scheduler, generator)).prev_sample
    assert torch.isfinite(x).all()
    assert x.shape == (1, 4, 2, 4, 4)


def _last_ddim_step(settings: SchedulerSettings, steps: int):
    scheduler = make_scheduler("ddim", settings)
    scheduler.set_timesteps(steps)
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    t = scheduler.timesteps[-1]
    return scheduler, scheduler.step(toy_model(x, t), t, x)


@pytest.mark.parametrize("steps", [1, 4])
def test_moore_ddim_last_step_lands_on_a_clean_sample(steps):
    # Moore's configs/inference/inference_v2.yaml leaves DDIM's set_alpha_to_one at diffusers' True:
    # its last step goes to ᾱ = 1, where DDIM's update returns its x0 estimate itself.
    scheduler, out = _last_ddim_step(MOORE_SCHEDULER, steps)
    assert float(scheduler.final_alpha_cumprod) == 1.0
    torch.testing.assert_close(out.prev_sample, out.pred_original_sample, rtol=0, atol=1e-6)


def test_sd15_ddim_last_step_stops_at_the_first_training_alpha():
    # SD1.5's scheduler_config.json and CompVis' DDIMSampler: the last step goes to ᾱ₀ = 0.99915,
    # leaving sqrt(1 - ᾱ₀) ≈ 0.029 of the predicted noise in the sample.
    scheduler, out = _last_ddim_step(SchedulerSettings(), 4)
    assert math.isclose(float(scheduler.final_alpha_cumprod), float(scheduler.alphas_cumprod[0]))
    assert 0.998 < float(scheduler.final_alpha_cumprod) < 1.0
    assert (out.prev_sample - out.pred_original_sample).abs().max() > 1e-3


def test_unknown_sampler_names_the_choices():
    with pytest.raises(AA2InputError, match="euler_ancestral"):
        make_scheduler("heun++", SchedulerSettings())


@pytest.mark.parametrize("settings", [SchedulerSettings(timestep_spacing="trailing"), MOORE_SCHEDULER],
                         ids=["epsilon", "v_prediction"])
def test_denoiser_driven_by_plain_euler_matches_diffusers_euler(settings):
    scheduler = EulerDiscreteScheduler(**{k: v for k, v in settings.diffusers_config().items()
                                          if k not in ("clip_sample", "set_alpha_to_one")})
    scheduler.set_timesteps(6)
    sigmas = scheduler.sigmas
    noise = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    x_ref = noise * sigmas[0]
    for t in scheduler.timesteps:
        x_ref = scheduler.step(toy_model(scheduler.scale_model_input(x_ref, t), t), t, x_ref).prev_sample

    denoiser = Denoiser(toy_model, settings)
    x = noise * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):  # k-diffusion's sample_euler, written out
        derivative = (x - denoiser(x, sigma)) / sigma
        x = x + derivative * (sigma_next - sigma)
    # The two differ only in float32 rounding of the timestep lookup; 1e-4 relative is ~100x that.
    torch.testing.assert_close(x, x_ref, rtol=1e-4, atol=1e-4)


def test_sigma_to_t_inverts_the_training_table():
    denoiser = Denoiser(toy_model, SchedulerSettings())
    for t in (0, 1, 250, 999):
        assert math.isclose(float(denoiser.sigma_to_t(denoiser.sigmas[t])), t, abs_tol=1e-3)
    halfway = (denoiser.log_sigmas[10] + denoiser.log_sigmas[11]) / 2
    assert math.isclose(float(denoiser.sigma_to_t(halfway.exp())), 10.5, abs_tol=1e-3)


def test_zero_terminal_snr_keeps_the_largest_sigma_finite():
    denoiser = Denoiser(toy_model, MOORE_SCHEDULER)
    assert math.isfinite(denoiser.sigma_max) and denoiser.sigma_max > 1000


@pytest.mark.parametrize("schedule", ["normal", "karras", "exponential"])
@pytest.mark.parametrize("settings", [SchedulerSettings(), MOORE_SCHEDULER], ids=["sd15", "moore"])
def test_sigma_schedules_span_the_checkpoints_own_range(schedule, settings):
    from aa2.sampling.noise_schedule import NoiseSchedule
    from aa2.sampling.sigmas import schedule_sigmas

    sigmas = schedule_sigmas(settings, schedule, 10)
    table = NoiseSchedule(settings).sigmas
    assert sigmas.shape == (11,) and sigmas[-1] == 0
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    assert sigmas[0] == pytest.approx(float(table[-1]), rel=1e-4)  # starts at the schedule's top: pure noise
    assert float(sigmas[-2]) >= float(table[0]) * 0.999


# ---------------------------------------------------------------------------------- wrapped schedulers

def _plain_diffusers(name, settings, steps, noise, seed):
    """The scheduler stepped as a diffusers pipeline steps it, on the toy network."""
    scheduler = make_scheduler(name, settings)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(toy_model(scheduler.scale_model_input(x, t), t), t, x,
                           **step_kwargs(scheduler, generator)).prev_sample
    return x, scheduler.timesteps


@pytest.mark.parametrize("name", list(DIFFUSERS_SCHEDULERS))
@pytest.mark.parametrize("settings", [SchedulerSettings(), MOORE_SCHEDULER,
                                      SchedulerSettings(timestep_spacing="linspace")], ids=["sd15", "moore", "linspace"])
def test_wrapped_scheduler_samples_as_plain_diffusers_stepping(name, settings):
    noise = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    want, timesteps = _plain_diffusers(name, settings, 4, noise, seed=5)
    schedule = NoiseSchedule(settings)
    seen = []

    def network(x, t):
        seen.append(t)
        return toy_model(x, t)

    sigmas = sampler_sigmas(SAMPLERS[name], schedule, 4)
    got = SAMPLERS[name](Denoiser(network, schedule), noise * sigmas[0], sigmas,
                         extra_args={"generator": torch.Generator().manual_seed(5)})
    # the network runs at diffusers' own timesteps (exactly, fractional ones of linspace Euler included)
    torch.testing.assert_close(torch.cat(seen), timesteps.float(), rtol=0, atol=1e-3 if name.startswith("euler") else 0)
    # float32 rounding of the VE <-> diffusers-sample conversions and of eps/v -> x0 -> eps/v, at every
    # step; measured at most 4e-7 of the latents' largest value (the toy network lets them grow to ~60)
    torch.testing.assert_close(got, want, rtol=0, atol=4e-6 * float(want.abs().max()))


def test_wrapped_ddim_keeps_the_checkpoints_last_step():
    """Moore's set_alpha_to_one lands on a clean sample; SD1.5's stops at ᾱ₀ and the wrapper returns that
    sample as diffusers' pipelines do (the sigmas still end at 0)."""
    for settings, clean in ((MOORE_SCHEDULER, True), (SchedulerSettings(), False)):
        schedule = NoiseSchedule(settings)
        sigmas = SAMPLERS["ddim"].sigmas(schedule, 3)
        assert sigmas[-1] == 0
        noise = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(2))
        calls = []

        def callback(info):
            calls.append(info["denoised"])

        x = SAMPLERS["ddim"](Denoiser(toy_model, schedule), noise * sigmas[0], sigmas, callback=callback)
        assert len(calls) == 3
        assert torch.allclose(x, calls[-1], atol=1e-5) == clean


def test_the_seeded_generator_reaches_schedulers_that_draw_noise():
    schedule = NoiseSchedule(SchedulerSettings())
    noise = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for name in ("euler_ancestral", "lcm"):
        sigmas = sampler_sigmas(SAMPLERS[name], schedule, 3)

        def run(seed):
            return SAMPLERS[name](Denoiser(toy_model, schedule), noise * sigmas[0], sigmas,
                                  extra_args={"generator": torch.Generator().manual_seed(seed)})

        assert torch.equal(run(1), run(1))
        assert not torch.allclose(run(1), run(2))


def test_a_wrapped_scheduler_refuses_sigmas_that_are_not_its_own():
    schedule = NoiseSchedule(SchedulerSettings())
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    with pytest.raises(AA2InputError, match="k_euler"):
        SAMPLERS["ddim"](Denoiser(toy_model, schedule), torch.randn(1, 4, 1, 4, 4) * 14.6, sigmas)
