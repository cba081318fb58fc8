"""Denoising one clip: classifier-free guidance, latents held fixed, and the sampler loop.

Two kinds of sampler drive the same guided model:

* a diffusers scheduler by name (`aa2.sampling.schedulers.SAMPLERS`), always under the noise
  schedule the checkpoint was trained with;
* any function in k-diffusion's convention, `sample(model, x, sigmas, extra_args, callback)`, over
  the model as a denoiser `D(x, sigma) -> x0` (ComfyUI's samplers are such functions).

*Known latents* are regions held fixed while the rest is denoised: the motion frames carried over
from the previous clip, and — for weights that never learned the environment input — the
environment outside the character mask. At every step the known region is replaced by the known
latents noised to that step's level, and the result keeps them exactly (the usual latent
inpainting scheme; the known region is re-noised with the clip's initial noise, so the replacement
is consistent from step to step and the initial latents alone decide a deterministic sampler's result).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AA2Cancelled, AA2InputError
from ..models.aa2_model import AA2Model
from ..models.denoising_net import DenoisingConditions
from ..sampling.denoiser import Denoiser
from ..sampling.schedulers import DIFFUSERS_SCHEDULERS as SAMPLERS, make_scheduler, step_kwargs
from .reference import EncodedReference

StepCallback = Callable[[torch.Tensor], None]  # called after every step with the current x0 estimate
KSampler = Callable[..., torch.Tensor]


@dataclass
class KnownLatents:
    """`latents [1, 4, F, h, w]` kept where `mask [1, 1, F, h, w]` is 1; `noise` re-noises them."""

    latents: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor

    def hold(self, x: torch.Tensor, noisy_known: torch.Tensor) -> torch.Tensor:
        return torch.lerp(x, noisy_known, self.mask)


class GuidedModel:
    """`prediction = guided(x [1, 4, F, h, w], t)`: the checkpoint's epsilon or v, with guidance.

    The unconditional and conditional branches run as one batch `[uncond, cond]`. The unconditional
    one has a zero CLIP context and no reference features (as Animate Anyone was trained); pose,
    environment and objects are shared by both, as Moore-AnimateAnyone feeds its pose to both.
    Latents stay float32 for the sampler's arithmetic; the network runs in its own dtype.
    """

    def __init__(self, model: AA2Model, reference: EncodedReference, conditions: DenoisingConditions,
                 cfg: float) -> None:
        self.model, self.reference, self.conditions, self.cfg = model, reference, conditions, cfg
        param = next(model.denoising_net.parameters())
        self.device, self.dtype = param.device, param.dtype
        if cfg == 1.0:
            self.context = reference.context
        else:
            self.context = torch.cat([reference.unconditional_context, reference.context])
        self.context = self.context.to(self.device, self.dtype)

    @contextmanager
    def bound(self):
        """Bind the reference features for the duration of a clip; always unbind (also on cancel)."""
        bank = {k: v.to(self.device, self.dtype) for k, v in self.reference.bank.items()}
        self.model.bind_reference(bank, unconditional_half=self.cfg != 1.0)
        try:
            yield self
        finally:
            self.model.bind_reference(None)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.device).reshape(-1)[:1].float()
        sample = x.to(self.device, self.dtype)
        if self.cfg != 1.0:
            sample = torch.cat([sample, sample])
        out = self.model.denoising_net(sample, t, self.context, self.conditions).float()
        if self.cfg == 1.0:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.cfg * (cond - uncond)


def denoise_clip(
    guided: GuidedModel,
    noise: torch.Tensor,
    *,
    steps: int,
    sampler: str | KSampler,
    generator: torch.Generator,
    known: KnownLatents | None = None,
    sigmas: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Denoise `noise [1, 4, F, h, w]` (unit variance) into clean latents of the same shape."""
    settings = guided.model.config.scheduler
    with guided.bound():
        if callable(sampler):
            return _k_diffusion_loop(guided, noise, sampler, steps, sigmas, known, on_step, cancel)
        if sampler not in SAMPLERS:
            raise AA2InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if sigmas is not None:
            raise AA2InputError("custom sigmas need a k-diffusion-style sampler function, not a named scheduler")
        scheduler = make_scheduler(sampler, settings)
        scheduler.set_timesteps(steps, device=noise.device)
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            _check(cancel)
            if known is not None:
                x = known.hold(x, scheduler.add_noise(known.latents, known.noise, t.reshape(1)))
            prediction = guided(scheduler.scale_model_input(x, t), t)
            out = scheduler.step(prediction, t, x, **step_kwargs(scheduler, generator))
            x = out.prev_sample
            if on_step is not None:
                estimate = getattr(out, "pred_original_sample", None)
                on_step(estimate if estimate is not None else x)
        return x if known is None else known.hold(x, known.latents)


def default_sigmas(guided: GuidedModel, steps: int) -> torch.Tensor:
    """The checkpoint's own schedule as sigmas (Euler's discretisation of its timesteps), ending at 0."""
    scheduler = make_scheduler("euler", guided.model.config.scheduler)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float()


def _k_diffusion_loop(guided, noise, sampler, steps, sigmas, known, on_step, cancel) -> torch.Tensor:
    denoiser = Denoiser(guided, guided.model.config.scheduler)
    sigmas = (default_sigmas(guided, steps) if sigmas is None else sigmas.float()).to(noise.device)

    def model(x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        _check(cancel)
        if known is not None:
            s = sigma.reshape(-1)[0]
            x = known.hold(x, known.latents + s * known.noise)
        denoised = denoiser(x, sigma)
        return denoised if known is None else known.hold(denoised, known.latents)

    def callback(info: dict) -> None:
        if on_step is not None:
            on_step(info["denoised"])

    x = sampler(model, noise * sigmas[0], sigmas, extra_args={}, callback=callback, disable=True)
    return x if known is None else known.hold(x, known.latents)


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise AA2Cancelled("sampling was cancelled; the models are unchanged and can be used again")
