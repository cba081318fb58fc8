"""Record k-diffusion's own samplers, sigma schedules and denoiser wrappers as a golden fixture (a maintainer
tool; CI never runs it).

`aa2.sampling` follows k-diffusion's convention (`sample(model, x, sigmas, extra_args, callback)` over a
denoiser `D(x, sigma) -> x0`) so ComfyUI's samplers can drive the pack's model. This records what the
references compute, so `tests/test_k_diffusion_reference.py` can hold ours to them without installing
them (k-diffusion's `sampling.py` imports scipy, torchsde, torchdiffeq and, through `utils.py`,
torchvision; its package `__init__` the whole training stack).

Two references, both run as they are:
* k-diffusion itself, the PyPI wheel `k-diffusion==0.1.1.post1`. Its `sampling.py` and `external.py` are
  byte-identical to crowsonkb/k-diffusion master at 4601bf0 (Feb 2026), which the manifest notes by
  their sha256.
* ComfyUI's copy, `comfy/k_diffusion/sampling.py`, and its `model_sampling.py` / `samplers.py`: what
  ComfyUI users run (0.3.64 was used).

What is recorded, all on fixed inputs made from integers (no weights, no random numbers):
1. Sigma schedules: k-diffusion's `get_sigmas_karras` / `get_sigmas_exponential` (both copies) over
   SD1.5's noise range; ComfyUI's own SD1.5 sigma table (`ModelSamplingDiscrete`) and its `normal` and
   `sgm_uniform` schedules; the ᾱ table k-diffusion's wrappers are given for SD1.5 (CompVis' formula,
   float64 then float32, as `LatentDiffusion` registers it).
2. `sample_euler` and `sample_dpmpp_2m` (both copies) on an exact denoiser: the posterior mean of a
   Gaussian data distribution, so the step math is checked alone, in float64 and float32, every step.
3. A denoiser over a small fixed network (`toy_network`, no weights file): k-diffusion's
   `DiscreteEpsDDPMDenoiser` / `DiscreteVDDPMDenoiser` (unquantised, as `CompVisDenoiser` defaults) at
   sigmas on and between the table's levels and outside its range, and both samplers driving it over a
   Karras schedule; and ComfyUI's wrapper composed as `BaseModel._apply_model` composes it
   (`calculate_input`, `timestep`, the network, `calculate_denoised`), which rounds the timestep to the
   nearest training step.

Run from the repository root, with a Python that has torch, scipy, torchsde, tqdm, torchvision, Pillow
and safetensors (ComfyUI's own venv has all of them but torchdiffeq):

    KD=$(mktemp -d)   # scratch space for the two wheels
    pip download k-diffusion==0.1.1.post1 torchdiffeq==0.2.5 --no-deps -d "$KD"
    mkdir "$KD/site" && (cd "$KD" && for w in *.whl; do unzip -q -o "$w" -d site; done)
    OMP_NUM_THREADS=1 COMFYUI/venv/bin/python -m tools.k_diffusion_golden \
        --k-diffusion "$KD/site" --comfyui COMFYUI [--out tests/fixtures/k_diffusion_golden]

Two adaptations, local to this process and named in the manifest: k-diffusion's package `__init__` is not
run (its `sampling` and `external` modules are imported under an empty `k_diffusion` package), and
ComfyUI is told `--cpu` (`comfy.cli_args.args.cpu = True`) so that importing it looks for no GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import sys
import types
from pathlib import Path

import torch

SHAPE = (1, 4, 2, 2, 4)  # [B, C, F, h, w], the pack's latent layout
GAUSSIAN_MEAN = (0.5, -0.25, 0.125, 0.0)  # per channel
GAUSSIAN_VAR = 0.25
EXACT_STEPS = 10
NETWORK_STEPS = 6
SCHEDULE_STEPS = (4, 10)
SAMPLERS = ("euler", "dpmpp_2m")
SOURCES = ("k_diffusion", "comfyui")
PREDICTIONS = ("eps", "v")
TABLE_PROBES = (0, 1, 500, 998, 999)  # training steps whose own sigma is probed
OUTSIDE_PROBES = (0.01, 20.0)  # below SD1.5's sigma_min (0.0292) and above its sigma_max (14.6)
OUT = Path("tests/fixtures/k_diffusion_golden")
# crowsonkb/k-diffusion's master when this was written, whose two files the 0.1.1.post1 wheel has unchanged
MASTER_COMMIT = "4601bf085320592473f681a62808ed873d17fad5"
MASTER_SHA256 = {"sampling.py": "4c5c2d92ddc2a07f9964440979430908d47a09634ac79f4a4e97c4f4682560bc",
                 "external.py": "422e6f3e35cac7d59974053dbd24977e773dc5a7cdb96ef0254caf5611f83995"}


# ------------------------------------------------------------------ inputs (shared with the test)


def start_noise(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`SHAPE` values in [-1.7, 1.7] from integers: the same on every machine and torch."""
    n = math.prod(SHAPE)
    return (((torch.arange(n) * 37 + 11) % 101 - 50).to(dtype) / 29).reshape(SHAPE)


def _per_channel(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype).reshape(1, -1, *([1] * (like.ndim - 2)))


def _per_batch(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
    """The exact `E[x0 | x]` for data ~ N(mean, var) per channel and `x = x0 + sigma * noise`."""
    mean, s = _per_channel(GAUSSIAN_MEAN, x), _per_batch(sigma, x)
    return mean + GAUSSIAN_VAR / (GAUSSIAN_VAR + s**2) * (x - mean)


def exact_ode_end(x_start: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """Where the probability-flow ODE from `x_start` at `sigma_start` lands at sigma 0 (Gaussian data)."""
    mean = _per_channel(GAUSSIAN_MEAN, x_start)
    return mean + (x_start - mean) * math.sqrt(GAUSSIAN_VAR / (GAUSSIAN_VAR + sigma_start**2))


def toy_network(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear epsilon (or v) predictor: `z [B, 4, ...]` (the scaled input), `t [B]` fractional
    training steps. Its output moves with `t` (by ~0.01 per step), so a denoiser that feeds it another
    timestep shows."""
    mix = ((torch.arange(16) * 7 % 11 - 5).to(z.dtype) / 10).reshape(4, 4)
    phase = torch.cos(_per_batch(t, z) / 100)
    return torch.tanh(torch.einsum("oc,bc...->bo...", mix, z) + 3 * phase * _per_channel((0.1, -0.2, 0.3, -0.1), z)) \
        + 0.1 * z


def probe_input(sigma: float) -> torch.Tensor:
    """The point a denoiser is probed at for `sigma`: the Gaussian's mean plus `sigma` times the noise."""
    noise = start_noise()
    return _per_channel(GAUSSIAN_MEAN, noise) + sigma * noise


# ------------------------------------------------------------------ the references


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_k_diffusion(root: Path):
    package_dir = root / "k_diffusion"
    if not (package_dir / "sampling.py").is_file():
        sys.exit(f"{root} holds no k_diffusion/sampling.py (unpack the k-diffusion wheel there)")
    package = types.ModuleType("k_diffusion")  # its __init__ imports the training stack; these two need none of it
    package.__path__ = [str(package_dir)]
    sys.modules["k_diffusion"] = package
    sys.path.insert(0, str(root))  # torchdiffeq, unpacked beside it
    sampling = importlib.import_module("k_diffusion.sampling")
    external = importlib.import_module("k_diffusion.external")
    about = {"version": "unknown (no dist-info: a checkout?)"}
    for metadata in root.glob("k_diffusion-*.dist-info/METADATA"):
        about["version"] = next(line.split(":", 1)[1].strip() for line in metadata.read_text().splitlines()
                                if line.startswith("Version:"))
    for name in ("sampling.py", "external.py"):
        about[f"{name} sha256"] = digest = _sha256(package_dir / name)
        if digest == MASTER_SHA256[name]:
            about[f"{name} sha256"] += f" (the same file as crowsonkb/k-diffusion master {MASTER_COMMIT})"
    return sampling, external, about


def _import_comfyui(root: Path):
    if not (root / "comfy" / "k_diffusion" / "sampling.py").is_file():
        sys.exit(f"{root} is not a ComfyUI checkout (no comfy/k_diffusion/sampling.py)")
    sys.path.insert(0, str(root))  # ComfyUI imports itself as `comfy.*`
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as `main.py --cpu`
    import comfy.k_diffusion.sampling as sampling
    import comfy.model_sampling as model_sampling
    import comfy.samplers as samplers
    from comfy.ldm.modules.diffusionmodules.util import make_beta_schedule

    version = {}
    exec((root / "comfyui_version.py").read_text(), version)
    about = {"version": version.get("__version__", "unknown")}
    for name in ("comfy/k_diffusion/sampling.py", "comfy/model_sampling.py", "comfy/samplers.py"):
        about[f"{name} sha256"] = _sha256(root / name)
    return sampling, model_sampling, samplers, make_beta_schedule, about


class _ComfyDenoiser:
    """ComfyUI's `BaseModel._apply_model` around a network: its own functions, in its order."""

    def __init__(self, model_sampling, network) -> None:
        self.model_sampling, self.network = model_sampling, network

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        ms = self.model_sampling
        xc = ms.calculate_input(sigma, x)
        t = ms.timestep(sigma).float()
        return ms.calculate_denoised(sigma, self.network(xc, t).float(), x)


def _trajectory(sampler, model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """`[steps + 1, *x.shape]`: the `x` every step starts from (the callback's), then the result."""
    seen: list[torch.Tensor] = []
    final = sampler(model, x, sigmas, extra_args={}, callback=lambda info: seen.append(info["x"].clone()),
                    disable=True)
    return torch.stack([*seen, final])


def record(k_root: Path, comfy_root: Path) -> tuple[dict[str, torch.Tensor], dict]:
    kd_sampling, kd_external, kd_about = _import_k_diffusion(k_root)
    cf_sampling, cf_model_sampling, cf_samplers, make_beta_schedule, cf_about = _import_comfyui(comfy_root)
    sampler_fns = {("k_diffusion", "euler"): kd_sampling.sample_euler,
                   ("k_diffusion", "dpmpp_2m"): kd_sampling.sample_dpmpp_2m,
                   ("comfyui", "euler"): cf_sampling.sample_euler,
                   ("comfyui", "dpmpp_2m"): cf_sampling.sample_dpmpp_2m}
    schedule_fns = {"k_diffusion": kd_sampling, "comfyui": cf_sampling}
    tensors: dict[str, torch.Tensor] = {}
    measured: dict[str, float] = {}

    # SD1.5's ᾱ as CompVis' LatentDiffusion registers it (float64 betas, float32 buffer): what
    # k-diffusion's CompVisDenoiser reads off an SD1.5 model.
    betas = torch.as_tensor(make_beta_schedule("linear", 1000, linear_start=0.00085, linear_end=0.012))
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
    tensors["input.start_noise"] = start_noise()
    comfy_eps = type("ModelSampling", (cf_model_sampling.ModelSamplingDiscrete, cf_model_sampling.EPS), {})()
    comfy_v = type("ModelSampling", (cf_model_sampling.ModelSamplingDiscrete, cf_model_sampling.V_PREDICTION), {})()
    tensors["sd15.sigmas.comfyui"] = comfy_eps.sigmas.clone()
    kd_eps = kd_external.DiscreteEpsDDPMDenoiser(toy_network, alphas_cumprod, quantize=False)
    kd_v = kd_external.DiscreteVDDPMDenoiser(toy_network, alphas_cumprod, quantize=False)
    tensors["sd15.sigmas.k_diffusion"] = kd_eps.sigmas.clone()
    sigma_min, sigma_max = float(kd_eps.sigma_min), float(kd_eps.sigma_max)

    # 1. schedules
    for source, fns in schedule_fns.items():
        for n in SCHEDULE_STEPS:
            tensors[f"schedule.karras.{n}.{source}"] = fns.get_sigmas_karras(n, sigma_min, sigma_max)
            tensors[f"schedule.exponential.{n}.{source}"] = fns.get_sigmas_exponential(n, sigma_min, sigma_max)
    for n in SCHEDULE_STEPS:
        for name in ("normal", "sgm_uniform"):
            tensors[f"schedule.{name}.{n}.comfyui"] = cf_samplers.calculate_sigmas(comfy_eps, name, n).float()

    # 2. the step math on the exact denoiser
    exact_sigmas = kd_sampling.get_sigmas_karras(EXACT_STEPS, sigma_min, sigma_max)
    tensors["exact.sigmas"] = exact_sigmas
    for dtype in (torch.float64, torch.float32):
        tag = str(dtype).removeprefix("torch.")
        sigmas = exact_sigmas.to(dtype)
        x = start_noise(dtype) * sigmas[0]
        truth = exact_ode_end(x.double(), float(sigmas[0]))
        for (source, name), fn in sampler_fns.items():
            trajectory = _trajectory(fn, gaussian_denoiser, x, sigmas)
            tensors[f"exact.{name}.{source}.{tag}"] = trajectory
            measured[f"exact.{name}.{source}.{tag}: max |result - exact ODE end|"] = float(
                (trajectory[-1].double() - truth).abs().max())

    # 3. denoisers over the toy network (float32, as samplers run)
    probes = [float(comfy_eps.sigmas[i]) for i in TABLE_PROBES] + [float(s) for s in
                                                                   kd_sampling.get_sigmas_karras(EXACT_STEPS, sigma_min, sigma_max)[:-1]]
    probes += list(OUTSIDE_PROBES)
    tensors["network.probe_sigmas"] = torch.tensor(probes, dtype=torch.float32)
    network_sigmas = kd_sampling.get_sigmas_karras(NETWORK_STEPS, sigma_min, sigma_max)
    tensors["network.sigmas"] = network_sigmas
    denoisers = {("eps", "k_diffusion"): kd_eps, ("v", "k_diffusion"): kd_v,
                 ("eps", "comfyui"): _ComfyDenoiser(comfy_eps, toy_network),
                 ("v", "comfyui"): _ComfyDenoiser(comfy_v, toy_network)}
    with torch.no_grad():
        for (prediction, source), denoiser in denoisers.items():
            tensors[f"network.{prediction}.denoised.{source}"] = torch.cat(
                [denoiser(probe_input(s), torch.tensor([s])) for s in probes])
            x = start_noise() * network_sigmas[0]
            for name in SAMPLERS:
                tensors[f"network.{prediction}.{name}.{source}"] = sampler_fns[(source, name)](
                    denoiser, x, network_sigmas, extra_args={}, disable=True)
    for prediction in PREDICTIONS:
        for name in SAMPLERS:
            ours_k, comfy = (tensors[f"network.{prediction}.{name}.{s}"] for s in SOURCES)
            measured[f"network.{prediction}.{name}: max |k-diffusion - ComfyUI| (ComfyUI rounds the timestep)"] = float(
                (ours_k - comfy).abs().max())

    # ComfyUI's KSAMPLER starts a full denoise from noise * sqrt(1 + sigma_max^2), not noise * sigma_max
    noise = start_noise()
    scaled = comfy_eps.noise_scaling(torch.tensor(sigma_max), noise.clone(), torch.zeros_like(noise), max_denoise=True)
    measured["comfyui: KSAMPLER start / (noise * sigma_max) at a full denoise"] = float(
        scaled.abs().sum() / (noise * sigma_max).abs().sum())

    about = {
        "what": "k-diffusion's samplers, schedules and denoiser wrappers on fixed inputs; see tools/k_diffusion_golden.py",
        "k_diffusion": kd_about,
        "comfyui": cf_about,
        "torch": torch.__version__,
        "adaptations": ["k_diffusion's package __init__ not run (sampling and external imported under an empty package)",
                        "comfy.cli_args.args.cpu = True (as main.py --cpu)"],
        "shape": list(SHAPE), "gaussian_mean": list(GAUSSIAN_MEAN), "gaussian_var": GAUSSIAN_VAR,
        "exact_steps": EXACT_STEPS, "network_steps": NETWORK_STEPS, "schedule_steps": list(SCHEDULE_STEPS),
        "table_probes": list(TABLE_PROBES), "outside_probes": list(OUTSIDE_PROBES),
        "sd15_sigma_range": [sigma_min, sigma_max],
    }
    return tensors, {"about": about, "measured": measured}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k-diffusion", type=Path, required=True,
                        help="folder holding k_diffusion/ (an unpacked wheel or a checkout) and torchdiffeq/")
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    tensors, manifest = record(args.k_diffusion.resolve(), args.comfyui.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, args.out / "golden.safetensors")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    print(f"{len(tensors)} tensors written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
