"""Two reference samplers in k-diffusion's calling convention.

`sample(model, x, sigmas, extra_args=None, callback=None, disable=None)` with `model(x, sigma) -> x0`
is the convention ComfyUI's samplers follow, so any of theirs can drive an AA2 `Denoiser`. These two
are here so the convention is exercised without ComfyUI (tests, CLI `--sampler k_euler`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def _loop(model, x, sigmas, extra_args, callback, step: Callable) -> torch.Tensor:
    extra_args = extra_args or {}
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = step(x, denoised, sigmas[i], sigmas[i + 1], i)
    return x


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args: dict[str, Any] | None = None, callback=None, disable=None):
    """Euler's method on the probability-flow ODE, dx/dsigma = (x - x0) / sigma."""

    def step(x, denoised, sigma, sigma_next, i):
        return x + (x - denoised) / sigma * (sigma_next - sigma)

    return _loop(model, x, sigmas, extra_args, callback, step)


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args: dict[str, Any] | None = None, callback=None, disable=None):
    """DPM-Solver++(2M) (Lu et al. 2022), in log-sigma time."""
    previous: list[torch.Tensor] = []

    def step(x, denoised, sigma, sigma_next, i):
        if sigma_next == 0:
            return denoised
        t, t_next = -sigma.log(), -sigma_next.log()
        h = t_next - t
        if previous and i > 0:
            h_last = t - (-sigmas[i - 1].log())
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous[-1]
        else:
            d = denoised
        previous[:] = [denoised]
        return (sigma_next / sigma) * x - (-h).expm1() * d

    return _loop(model, x, sigmas, extra_args, callback, step)


K_SAMPLERS = {"k_euler": sample_euler, "k_dpmpp_2m": sample_dpmpp_2m}
