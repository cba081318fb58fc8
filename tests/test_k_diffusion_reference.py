"""The pack's k-diffusion-convention samplers, sigma schedules and `Denoiser` against k-diffusion's own code.

`tests/fixtures/k_diffusion_golden/` holds what the references computed, recorded by
`tools/k_diffusion_golden.py` with their code run as it is: k-diffusion 0.1.1.post1 from PyPI (its
`sampling.py` and `external.py` are master 4601bf0's) and ComfyUI 0.3.64's copy in `comfy/k_diffusion`,
with ComfyUI's own `model_sampling` (versions and file hashes in `manifest.json`). k-diffusion itself is
not installed here: it imports torchsde, torchdiffeq and torchvision. The inputs are made from integers
(`start_noise`), the denoisers need no weights: the exact posterior mean of a Gaussian (the step math
alone) and `toy_network`, a fixed nonlinear predictor whose output moves with the timestep (the
denoiser wrapper: sigma to timestep, input scaling, epsilon and v).

Tolerances, with what was measured:
* Steps on the exact denoiser, every step of 10 (|x| <= 25): float64 within 1e-12, float32 within 1e-5.
  Euler came out bit-identical to both references in both precisions; DPM-Solver++(2M) within 7e-15
  and 2.9e-6, because the pack writes the step's `sigma_next / sigma` where k-diffusion takes
  `exp(-t_next) / exp(-t)` of `t = -log(sigma)`.
* The SD1.5 sigma table, relative 2e-5: ours (diffusers' float32 betas) is 8.7e-6 from the CompVis ᾱ
  k-diffusion is given and 1.3e-5 from ComfyUI's (float64 betas), which are 1.3e-5 apart themselves.
  Karras and exponential schedules follow it, relative 5e-6 (measured 8.5e-7).
* The denoiser at 17 sigmas, within 2e-5 (measured 2.6e-6 epsilon, 1.3e-6 v: the table's difference
  moving the timestep); sampling through it, 6 Karras steps to |x| ~30, within 1e-4 (measured 1.5e-5).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aa2.config import SchedulerSettings
from aa2.sampling.denoiser import Denoiser
from aa2.sampling.k_samplers import sample_dpmpp_2m, sample_euler
from aa2.sampling.sigmas import schedule_sigmas

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "k_diffusion_golden"
STEP_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
TABLE_RTOL, SCHEDULE_RTOL = 2e-5, 5e-6
DENOISED_TOLERANCE, SAMPLED_TOLERANCE = 2e-5, 1e-4
SAMPLERS = {"euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}
SETTINGS = {"eps": SchedulerSettings(), "v": SchedulerSettings(prediction_type="v_prediction")}


def _tool():
    """tools/k_diffusion_golden.py, loaded from its file (tools/ is no installed package)."""
    spec = importlib.util.spec_from_file_location("k_diffusion_golden", REPO / "tools" / "k_diffusion_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()
SOURCES = tool.SOURCES


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "golden.safetensors")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURE / "manifest.json").read_text())


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    nonzero = theirs != 0
    assert torch.equal(ours[~nonzero], theirs[~nonzero])
    return float(((ours[nonzero].double() - theirs[nonzero].double()) / theirs[nonzero].double()).abs().max())


def test_rebuilt_inputs_are_the_recorded_ones(golden, manifest):
    assert torch.equal(tool.start_noise(), golden["input.start_noise"])
    assert manifest["about"]["shape"] == list(tool.SHAPE) and manifest["about"]["exact_steps"] == tool.EXACT_STEPS


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_takes_k_diffusions_steps_on_an_exact_denoiser(golden, name, source, dtype):
    sigmas = golden["exact.sigmas"].to(getattr(torch, dtype))
    ours = tool._trajectory(SAMPLERS[name], tool.gaussian_denoiser, tool.start_noise(sigmas.dtype) * sigmas[0], sigmas)
    theirs = golden[f"exact.{name}.{source}.{dtype}"]
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    difference = float((ours - theirs).abs().max())
    assert difference <= STEP_TOLERANCE[dtype], f"{name} vs {source} ({dtype}): {difference:.2e}"


def test_golden_tells_the_samplers_apart(golden):
    """Euler and DPM-Solver++(2M) land far apart on 10 steps, so the step comparisons can fail."""
    euler, dpmpp = golden["exact.euler.k_diffusion.float64"][-1], golden["exact.dpmpp_2m.k_diffusion.float64"][-1]
    assert float((euler - dpmpp).abs().max()) > 1e4 * STEP_TOLERANCE["float32"]


@pytest.mark.parametrize("source", SOURCES)
def test_sd15_sigma_table_is_the_one_k_diffusion_wraps(golden, source):
    ours = Denoiser(tool.toy_network, SETTINGS["eps"]).sigmas
    assert _relative(ours, golden[f"sd15.sigmas.{source}"]) <= TABLE_RTOL


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("steps", tool.SCHEDULE_STEPS)
@pytest.mark.parametrize("schedule", ["karras", "exponential"])
def test_karras_and_exponential_sigmas_match_k_diffusion(golden, schedule, steps, source):
    ours = schedule_sigmas(SETTINGS["eps"], schedule, steps)
    assert _relative(ours, golden[f"schedule.{schedule}.{steps}.{source}"]) <= SCHEDULE_RTOL


@pytest.mark.parametrize("steps", tool.SCHEDULE_STEPS)
def test_normal_schedule_is_comfyuis_sgm_uniform_on_whole_steps(golden, steps):
    """The pack's "normal" spaces training steps evenly and leaves the last one out, as ComfyUI's
    `sgm_uniform` does, but rounds them to whole steps (measured 0.17% relative: half a step's sigma at
    most); ComfyUI's `normal` ends on sigma_min instead (0.029 where ours ends on 0.70 at 4 steps, more
    than 20x apart). README, departures."""
    ours = schedule_sigmas(SETTINGS["eps"], "normal", steps)
    assert _relative(ours, golden[f"schedule.sgm_uniform.{steps}.comfyui"]) <= 5e-3
    assert _relative(ours, golden[f"schedule.normal.{steps}.comfyui"]) > 0.1


def _probe_denoiser(prediction: str, sigmas: torch.Tensor) -> torch.Tensor:
    denoiser = Denoiser(tool.toy_network, SETTINGS[prediction])
    with torch.no_grad():
        return torch.cat([denoiser(tool.probe_input(float(s)), torch.tensor([float(s)])) for s in sigmas])


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoiser_matches_k_diffusions_discrete_ddpm_denoiser(golden, prediction):
    """On the table's own sigmas, between them (a Karras schedule) and outside its range."""
    ours = _probe_denoiser(prediction, golden["network.probe_sigmas"])
    difference = float((ours - golden[f"network.{prediction}.denoised.k_diffusion"]).abs().max())
    assert difference <= DENOISED_TOLERANCE, f"{prediction}: {difference:.2e}"


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoiser_interpolates_the_timestep_where_comfyui_rounds_it(golden, prediction):
    """On the table's sigmas ComfyUI's `model_sampling` and ours agree; between them ComfyUI feeds the
    network the nearest whole training step, the pack (like k-diffusion) the fractional one."""
    on_table = len(tool.TABLE_PROBES)
    ours = _probe_denoiser(prediction, golden["network.probe_sigmas"])
    comfy = golden[f"network.{prediction}.denoised.comfyui"]
    assert float((ours[:on_table] - comfy[:on_table]).abs().max()) <= DENOISED_TOLERANCE
    assert float((ours[on_table:] - comfy[on_table:]).abs().max()) > 10 * DENOISED_TOLERANCE


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_sampling_through_the_denoiser_matches_k_diffusion(golden, prediction, name):
    sigmas = golden["network.sigmas"]
    denoiser = Denoiser(tool.toy_network, SETTINGS[prediction])
    ours = SAMPLERS[name](denoiser, tool.start_noise() * sigmas[0], sigmas)
    difference = float((ours - golden[f"network.{prediction}.{name}.k_diffusion"]).abs().max())
    assert difference <= SAMPLED_TOLERANCE, f"{prediction} {name}: {difference:.2e}"
