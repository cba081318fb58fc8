"""Samplers by name, built from the noise schedule the checkpoint was trained with.

The checkpoint's `SchedulerSettings` (prediction type, zero-terminal SNR, timestep spacing) are
always kept: a sampler name only chooses the integration method. Moore-AnimateAnyone's weights, for
example, are v-prediction with zero-terminal SNR and trailing spacing and give noise otherwise.
DDIM's last step (`set_alpha_to_one`) is part of those settings too, so "ddim" samples a checkpoint
as its authors did.
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers

from ..config import SchedulerSettings
from ..errors import AA2InputError

# name -> (diffusers class, extra options)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
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
    if name not in SAMPLERS:
        raise AA2InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    class_name, extra = SAMPLERS[name]
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
