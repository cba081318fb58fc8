"""Denoising one clip: classifier-free guidance, latents held fixed, and the one sampler loop.

Every sampler is a function in k-diffusion's convention, `sample(model, x, sigmas, extra_args,
callback)`, over the guided model as a denoiser `D(x, sigma) -> x0`: a name from
`aa2.sampling.registry.SAMPLERS` (diffusers' schedulers wrapped, `k_` samplers written out), or any
such function, ComfyUI's samplers included.

*Known latents* are regions held fixed while the rest is denoised: the motion frames carried over
from the previous clip, and — for weights that never learned the environment input — the
environment outside the character mask. At every model call the known region of `x` is replaced by
the known latents noised to that call's sigma, `known + sigma * noise`, and the region of the
denoised result by the known latents themselves; the sampler's result keeps them exactly (the usual
latent inpainting scheme; the known region is re-noised with the clip's initial noise, so the
replacement is consistent from step to step and the initial latents alone decide a deterministic
sampler's result). Samplers only combine `x` and `x0` element by element, so holding what the
denoiser sees is the same as holding the sampler's state, whichever sampler it is.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AA2Cancelled
from ..models.aa2_model import AA2Model
from ..models.denoising_net import DenoisingConditions
from ..sampling.denoiser import Denoiser
from ..sampling.noise_schedule import NoiseSchedule
from ..sampling.registry import SamplerFunction, sampler_function, sampler_sigmas
from .reference import EncodedReference

StepCallback = Callable[[torch.Tensor], None]  # called after every step with the current x0 estimate


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


class HeldDenoiser:
    """`D(x, sigma) -> x0` for one clip: the guided model's denoiser with the known region held (going in
    at `known + sigma * noise`, coming out at `known`) and the run's cancel checked at every call.

    `noise_schedule` is the denoiser's, for samplers that step a diffusers scheduler.
    """

    def __init__(self, denoiser: Denoiser, known: KnownLatents | None, cancel: Callable[[], bool] | None) -> None:
        self.denoiser, self.known, self.cancel = denoiser, known, cancel
        self.noise_schedule: NoiseSchedule = denoiser.noise_schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        _check(self.cancel)
        known = self.known
        if known is None:
            return self.denoiser(x, sigma)
        s = torch.as_tensor(sigma).reshape(-1)[0]
        denoised = self.denoiser(known.hold(x, known.latents + s * known.noise), sigma)
        return known.hold(denoised, known.latents)


def denoise_clip(
    guided: GuidedModel,
    noise: torch.Tensor,
    *,
    steps: int,
    sampler: str | SamplerFunction,
    generator: torch.Generator,
    known: KnownLatents | None = None,
    sigmas: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Denoise `noise [1, 4, F, h, w]` (unit variance) into clean latents of the same shape.

    `sampler`: a registry name or a function in k-diffusion's convention; `sigmas`: its noise levels
    (default: the sampler's own for `steps`). `generator` seeds samplers that draw noise.
    """
    function = sampler_function(sampler) if isinstance(sampler, str) else sampler
    denoiser = Denoiser(guided, guided.model.config.scheduler)
    sigmas = sampler_sigmas(function, denoiser.noise_schedule, steps, sigmas).to(noise.device)
    model = HeldDenoiser(denoiser, known, cancel)

    def callback(info: dict) -> None:
        if on_step is not None:
            on_step(info["denoised"])

    with guided.bound():
        x = function(model, noise * sigmas[0], sigmas, extra_args={"generator": generator}, callback=callback,
                     disable=True)
    return x if known is None else known.hold(x, known.latents)


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise AA2Cancelled("sampling was cancelled; the models are unchanged and can be used again")
