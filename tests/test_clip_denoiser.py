"""The one sampler loop: every registry sampler (and a host-style function) through `denoise_clip`,
with one known-latents rule, one cancel check and one step callback. A toy network stands in for the
DenoisingNet so every sampler runs in milliseconds."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from aa2.config import MOORE_SCHEDULER, SchedulerSettings
from aa2.errors import AA2Cancelled, AA2InputError
from aa2.pipeline.clip_denoiser import KnownLatents, denoise_clip
from aa2.sampling.k_samplers import sample_euler
from aa2.sampling.registry import SAMPLERS

SHAPE = (1, 4, 3, 4, 4)


class ToyGuided:
    """What `denoise_clip` needs of a GuidedModel: the model's scheduler settings, `bound()`, and
    `prediction = guided(x / sqrt(sigma^2 + 1), t)`; it records what the network sees."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.model = SimpleNamespace(config=SimpleNamespace(scheduler=settings))
        self.seen: list[torch.Tensor] = []

    @contextmanager
    def bound(self):
        yield self

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.3 * x * torch.cos(t / 300) + t / 2000


def _known() -> KnownLatents:
    g = torch.Generator().manual_seed(3)
    mask = torch.zeros(1, 1, *SHAPE[2:])
    mask[:, :, 0] = 1  # a carried motion frame
    mask[:, :, 1:, :2] = 1  # and environment outside a character
    return KnownLatents(torch.randn(SHAPE, generator=g), mask, torch.randn(SHAPE, generator=g))


def host_style_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A function of ComfyUI's kind: it knows nothing of aa2, only the convention."""
    return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)


@pytest.mark.parametrize("sampler", [*SAMPLERS, host_style_euler], ids=[*SAMPLERS, "host_function"])
@pytest.mark.parametrize("settings", [SchedulerSettings(), MOORE_SCHEDULER], ids=["sd15", "moore"])
def test_the_known_region_is_held_exactly_for_every_sampler(sampler, settings):
    known = _known()
    guided = ToyGuided(settings)
    steps = []
    clean = denoise_clip(guided, known.noise, steps=3, sampler=sampler, generator=torch.Generator().manual_seed(0),
                         known=known, on_step=steps.append)
    held = known.mask.expand(SHAPE).bool()
    assert torch.equal(clean[held], known.latents[held])
    assert torch.isfinite(clean).all() and not torch.allclose(clean[~held], known.latents[~held])
    assert len(steps) == 3 and all(torch.equal(x0[held], known.latents[held]) for x0 in steps)  # previews too


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_denoiser_sees_known_plus_sigma_noise_at_each_call(name, monkeypatch):
    """The one known-latents rule, in the variance-exploding form: x_known = known + sigma * noise."""
    from aa2.pipeline import clip_denoiser

    known = _known()
    guided = ToyGuided(SchedulerSettings())
    sigmas_seen = []
    real = clip_denoiser.Denoiser.__call__

    def spy(self, x, sigma, **extra):
        sigmas_seen.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
        return real(self, x, sigma, **extra)

    monkeypatch.setattr(clip_denoiser.Denoiser, "__call__", spy)
    denoise_clip(guided, known.noise, steps=2, sampler=name, generator=torch.Generator().manual_seed(0), known=known)
    assert len(sigmas_seen) == 2
    held = known.mask.expand(SHAPE).bool()
    for seen, sigma in zip(guided.seen, sigmas_seen):
        want = (known.latents + sigma * known.noise) / (sigma**2 + 1) ** 0.5
        torch.testing.assert_close(seen[held], want[held], rtol=1e-5, atol=1e-6)


def test_cancel_is_checked_at_every_model_call_and_stops_at_once():
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] >= 2

    guided = ToyGuided(SchedulerSettings())
    with pytest.raises(AA2Cancelled):
        denoise_clip(guided, torch.randn(SHAPE), steps=4, sampler="ddim", generator=torch.Generator(), cancel=cancel)
    assert len(guided.seen) == 1


def test_custom_sigmas_go_to_samplers_that_follow_them_only():
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    guided = ToyGuided(SchedulerSettings())
    out = denoise_clip(guided, torch.randn(SHAPE), steps=20, sampler="k_euler", generator=torch.Generator(),
                       sigmas=sigmas)
    assert torch.isfinite(out).all() and len(guided.seen) == 3
    with pytest.raises(AA2InputError, match="k-diffusion"):
        denoise_clip(guided, torch.randn(SHAPE), steps=20, sampler="ddim", generator=torch.Generator(), sigmas=sigmas)
