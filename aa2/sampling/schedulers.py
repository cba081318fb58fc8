"""diffusers' schedulers as sampler functions in k-diffusion's convention.

A name picks the integration method; the checkpoint's `SchedulerSettings` (prediction type,
zero-terminal SNR, timestep spacing) are always kept. Moore-AnimateAnyone's weights, for example, are
v-prediction with zero-terminal SNR and trailing spacing and give noise otherwise. DDIM's last step
(`set_alpha_to_one`) is part of those settings too, so "ddim" samples a checkpoint as its authors did.

The schedulers stay diffusers-driven — their own timesteps, their own update rule, their own noise
draws — and `SchedulerSampler` only translates at the seam, so every sampler in
`aa2.sampling.registry` is the same kind of function over the same denoiser `D(x, sigma) -> x0`:

* diffusers steps a variance-preserving sample `z` (DDIM, DPM-Solver, UniPC, LCM) or, for the Euler
  family, a variance-exploding one; `scale_model_input(z, t)` is in both cases what the network
  sees, `x / sqrt(sigma^2 + 1)` in the convention's `x = x0 + sigma noise`;
* the denoiser answers with `x0`; the scheduler wants the network's epsilon or v back, which
  `NoiseSchedule.prediction_from_x0` recovers exactly (float rounding aside);
* sigma at step i is the training sigma of diffusers' timestep t_i, so the denoiser runs the network
  at t_i itself.
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import torch

from ..config import SchedulerSettings
from ..errors import AA2InputError
from .noise_schedule import NoiseSchedule

# name -> (diffusers class, extra options)
DIFFUSERS_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),  # set_alpha_to_one comes from the checkpoint's SchedulerSettings
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    # LCM's own default; its last step returns x0 directly, so ᾱ_final only shapes the re-noising.
    "lcm": ("LCMScheduler", {"set_alpha_to_one": True}),
}


def make_scheduler(name: str, settings: SchedulerSettings) -> Any:
    """A fresh diffusers scheduler for sampler `name` under the checkpoint's noise schedule."""
    if name not in DIFFUSERS_SCHEDULERS:
        raise AA2InputError(f"unknown scheduler {name!r}; choose one of {', '.join(DIFFUSERS_SCHEDULERS)}")
    class_name, extra = DIFFUSERS_SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    config = settings.diffusers_config()
    if settings.rescale_betas_zero_snr and class_name in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"):
        # Zero terminal SNR makes the first sigma infinite; diffusers caps it (~4096) and these
        # samplers then need trailing spacing to start from it.
        config["timestep_spacing"] = "trailing"
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in {**config, **extra}.items() if k in accepted})


def step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    """The seeded generator goes to the schedulers that draw noise while stepping (ancestral, LCM)."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def euler_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """The checkpoint's own schedule as sigmas (diffusers Euler's discretisation of its timesteps),
    `[steps + 1]` ending at 0: the default noise levels of a sampler with none of its own."""
    scheduler = make_scheduler("euler", schedule.settings)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float()


class SchedulerSampler:
    """`sample(model, x, sigmas, extra_args, callback, disable)` stepping diffusers' scheduler `name`.

    `model` is a denoiser with a `noise_schedule` (`aa2.sampling.denoiser.Denoiser`); `sigmas` must be
    this scheduler's own (`self.sigmas`): it steps on diffusers' timesteps and nothing else, so other
    sigmas are refused. `x` is pure noise at `sigmas[0]`; the scheduler starts from its own
    `init_noise_sigma * noise`, as in diffusers' pipelines (k-diffusion starts at `sigma * noise`,
    diffusers' VP schedulers at `sqrt(sigma^2 + 1) * noise`: 0.3% apart at SD1.5's first DDIM step).
    `extra_args["generator"]` seeds the schedulers that draw noise (ancestral, LCM).
    """

    def __init__(self, name: str) -> None:
        if name not in DIFFUSERS_SCHEDULERS:
            raise AA2InputError(f"unknown scheduler {name!r}; choose one of {', '.join(DIFFUSERS_SCHEDULERS)}")
        self.name = name
        self.__name__ = f"sample_{name}"

    def __repr__(self) -> str:
        return f"SchedulerSampler({self.name!r})"

    def _scheduler(self, schedule: NoiseSchedule, steps: int, device: torch.device | str = "cpu") -> Any:
        scheduler = make_scheduler(self.name, schedule.settings)
        scheduler.set_timesteps(steps, device=device)
        return scheduler

    @staticmethod
    def _own_sigmas(scheduler: Any, schedule: NoiseSchedule) -> torch.Tensor:
        sigmas = schedule.t_to_sigma(scheduler.timesteps.cpu())
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def sigmas(self, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
        """`[steps + 1]`: the training sigma of each timestep diffusers chooses for `steps`, then 0."""
        return self._own_sigmas(self._scheduler(schedule, steps), schedule)

    @torch.no_grad()
    def __call__(self, model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
                 callback=None, disable=None) -> torch.Tensor:
        extra_args = extra_args or {}
        schedule = _noise_schedule_of(model)
        scheduler = self._scheduler(schedule, len(sigmas) - 1, x.device)
        own = self._own_sigmas(scheduler, schedule)
        if len(sigmas) < 2 or not torch.allclose(sigmas.detach().float().cpu(), own, rtol=1e-5, atol=0):
            raise AA2InputError(
                f"the {self.name} sampler steps on diffusers' own timesteps and cannot follow custom sigmas: "
                "use a k-diffusion-style sampler (k_euler, k_dpmpp_2m, or a ComfyUI SAMPLER) with them")
        options = step_kwargs(scheduler, extra_args.get("generator"))
        sample = x / sigmas[0] * scheduler.init_noise_sigma
        ones = x.new_ones(x.shape[0])
        for i, t in enumerate(scheduler.timesteps):
            sigma = sigmas[i]
            x = scheduler.scale_model_input(sample, t) * (sigma**2 + 1).sqrt()  # what the network sees, in VE
            denoised = model(x, sigma * ones, **extra_args)
            if callback is not None:
                callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
            prediction = schedule.prediction_from_x0(x, sigma, denoised)
            sample = scheduler.step(prediction, t, sample, **options).prev_sample
        # diffusers' last sample is its result, even where its last step stops short of sigma 0
        # (DDIM without set_alpha_to_one: ᾱ₀ = 0.99915, as SD1.5 and CompVis sample)
        return sample


def _noise_schedule_of(model: Any) -> NoiseSchedule:
    schedule = getattr(model, "noise_schedule", None)
    if not isinstance(schedule, NoiseSchedule):
        raise AA2InputError("a diffusers scheduler sampler needs the model as an aa2 Denoiser (it reads the "
                            "checkpoint's noise_schedule off it)")
    return schedule
