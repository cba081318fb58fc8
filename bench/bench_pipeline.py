"""Pipeline benchmark: where the time, the FLOPs and the memory of `aa2.pipeline.animate` go.

For each preset (tiny widths, and the real SD1.5 + AnimateDiff + CLIP ViT-L/14 shapes), with random
weights: time per guided denoising step, ReferenceNet / VAE / total time, FLOPs of one denoising step
and of the ReferenceNet (`torch.utils.flop_counter.FlopCounterMode`), the FLOP/s a step achieves
against this machine's measured dense-matmul rate, and peak memory for 1x and 4x the video length
through the long-video chainer. Prints one table.

    python -m bench.bench_pipeline                          # from the repo root: tiny + sd15, CPU fp32
    python -m bench.bench_pipeline --presets sd15 --device cuda --dtype fp16 --size 512x512 --frames 16

Random weights: the numbers measure cost, not quality. Not a test; nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import torch
from torch.utils.flop_counter import FlopCounterMode

from aa2.config import sd15, tiny
from aa2.pipeline.animate import animate
from aa2.pipeline.inputs import AnimationInputs, SamplingSettings
from aa2.pipeline.reference import encode_reference
from aa2.weights.tiny import random_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRESETS = {"tiny": tiny, "sd15": sd15}
MIB = 2**20


# ------------------------------------------------------------------ memory


class PeakMemory:
    """Peak memory of one region, in MiB: the process's peak RSS (VmHWM, reset on entry through
    `/proc/self/clear_refs`; Linux only) and, on a CUDA device, `torch.cuda.max_memory_allocated`.
    `rss_start` / `vram_start` are what was held on entry, so `peak - start` is the region's own rise.
    Where VmHWM cannot be reset, the lifetime peak is reported and `rss_reset` is False."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_peak = self.rss_start = self.vram_peak = self.vram_start = float("nan")
        self.rss_reset = False

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.vram_start = torch.cuda.memory_allocated() / MIB
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
            self.rss_reset = True
        except OSError:
            self.rss_reset = False
        self.rss_start = status_kib("VmRSS") / 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.vram_peak = torch.cuda.max_memory_allocated() / MIB
        self.rss_peak = status_kib("VmHWM") / 1024


def status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (0 where there is none)."""
    try:
        match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


# ------------------------------------------------------------------ machine


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """The best FLOP/s of a few `n x n` dense `torch.matmul` calls on `device` in `dtype`: the
    machine's practical peak, the yardstick for what the pipeline achieves."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel choice, thread pool
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def machine_line(device: torch.device, dtype_name: str) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        model = re.search(r"model name\s*:\s*(.+)", _read("/proc/cpuinfo"))
        where = (f"{model.group(1).strip() if model else platform.processor() or 'CPU'}, {os.cpu_count()} cores, "
                 f"torch threads {torch.get_num_threads()}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{device.type}: {where}; {dtype_name}; torch {torch.__version__}; load average {load}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# ------------------------------------------------------------------ inputs and timers


def synthetic_inputs(frames: int, height: int, width: int, seed: int = 0) -> AnimationInputs:
    """Every AA2 input (pose, depth, environment + mask, objects), random, `frames` long."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(frames, height, width)
    mask[:, height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 1
    return AnimationInputs(
        reference=torch.rand(3, height, width, generator=g),
        pose=torch.rand(frames, 3, height, width, generator=g),
        depth=torch.rand(frames, 3, height, width, generator=g),
        environment=torch.rand(frames, 3, height, width, generator=g),
        mask=mask,
        objects=torch.rand(frames, 3, height, width, generator=g),
    )


@contextmanager
def call_timer(owner, methods: tuple[str, ...], device: torch.device):
    """Seconds spent in `owner.<method>` calls while inside, summed over `methods` (instance
    attributes wrapping the bound methods; removed on exit, so the class's show through again)."""
    spent = {"s": 0.0}

    def timed(method):
        def call(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                sync(device)
                spent["s"] += time.perf_counter() - start
        return call

    for name in methods:
        setattr(owner, name, timed(getattr(owner, name)))
    try:
        yield spent
    finally:
        for name in methods:
            delattr(owner, name)


def flops_by_module(counter: FlopCounterMode) -> dict[str, int]:
    """Total FLOPs under each module name the counter tracked (`Global` is everything)."""
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


# ------------------------------------------------------------------ one preset


def run_preset(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    height, width = args.size
    start = time.perf_counter()
    model = random_model(PRESETS[name]()).to(device=device, dtype=dtype)
    build_s = time.perf_counter() - start
    inputs = synthetic_inputs(args.frames, height, width)
    settings = SamplingSettings(steps=args.steps, cfg=args.cfg, seed=0, clip_length=args.frames)
    if name == "tiny":
        # First calls pay for kernel selection and allocator growth; for the tiny widths that is a
        # large share of a step. For SD1.5 it is not, and a warm-up would cost a whole step and VAE pass.
        animate(model, inputs, SamplingSettings(steps=1, cfg=args.cfg, seed=0, clip_length=args.frames))

    stamps: list[float] = []

    def progress(done: int, total: int, preview) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    with PeakMemory(device) as one, call_timer(model.vae, ("encode", "decode"), device) as vae, \
            call_timer(model, ("encode_reference",), device) as reference_net:
        sync(device)
        start = time.perf_counter()
        reference = encode_reference(model, inputs.reference, (height, width))
        animate(model, inputs, settings, reference=reference, progress=progress)
        sync(device)
        total_s = time.perf_counter() - start
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    step_s = statistics.median(intervals) if intervals else stamps[0] - start

    # The ReferenceNet's FLOPs in a call of their own: `AA2Model.encode_reference` stops it by an
    # exception after the last layer read, and the counter's module tracker then keeps it "open",
    # crediting every later FLOP to it as well.
    latents, context = reference.latents.to(device, dtype), reference.context.to(device, dtype)
    with FlopCounterMode(display=False) as counter:
        model.encode_reference(latents, context)
    reference_flops = counter.get_total_flops()

    # The chainer: `long`x the frames in clips of `frames`, one motion frame carried. Peak memory does
    # not depend on the step count, so this run takes `long_steps` (1 by default) to save time. It also
    # counts FLOPs (an untimed run): the DenoisingNet's count at the first step callback is one step of
    # the first clip, a full `frames`-frame window like the 1x run's.
    long_inputs = synthetic_inputs(args.long * args.frames, height, width)
    long_settings = SamplingSettings(steps=args.long_steps, cfg=args.cfg, seed=0, clip_length=args.frames)
    first_step: dict[str, int] = {}

    def count_step(done: int, total: int, preview) -> None:
        if not first_step:
            first_step.update(flops_by_module(counter))

    with PeakMemory(device) as long, FlopCounterMode(display=False) as counter:
        animate(model, long_inputs, long_settings, reference=reference, progress=count_step)
    del model
    return {
        "preset": name, "build_s": build_s, "step_s": step_s, "reference_s": reference_net["s"], "vae_s": vae["s"],
        "total_s": total_s, "step_flops": first_step.get("DenoisingNet", 0), "reference_flops": reference_flops,
        "one": one, "long": long,
    }


# ------------------------------------------------------------------ table


def table(rows: list[dict], rate: float, device: torch.device, args: argparse.Namespace) -> str:
    cuda = device.type == "cuda"
    header = ["preset", "build s", "s/step", "ReferenceNet s", "VAE s", "total s", "GFLOP/step",
              "GFLOP ReferenceNet", "step TFLOP/s", "% of matmul", "peak RSS MiB 1x", f"{args.long}x",
              "rise 1x", f"rise {args.long}x"]
    if cuda:
        header += ["peak VRAM MiB 1x", f"{args.long}x"]
    lines = [" | ".join(header), " | ".join("-" * len(h) for h in header)]
    for r in rows:
        achieved = r["step_flops"] / r["step_s"]
        cells = [r["preset"], f"{r['build_s']:.1f}", f"{r['step_s']:.3f}", f"{r['reference_s']:.3f}",
                 f"{r['vae_s']:.2f}", f"{r['total_s']:.2f}", f"{r['step_flops'] / 1e9:.1f}",
                 f"{r['reference_flops'] / 1e9:.1f}", f"{achieved / 1e12:.3f}", f"{100 * achieved / rate:.0f}",
                 f"{r['one'].rss_peak:.0f}", f"{r['long'].rss_peak:.0f}",
                 f"{r['one'].rss_peak - r['one'].rss_start:.0f}", f"{r['long'].rss_peak - r['long'].rss_start:.0f}"]
        if cuda:
            cells += [f"{r['one'].vram_peak:.0f}", f"{r['long'].vram_peak:.0f}"]
        lines.append(" | ".join(str(c).rjust(len(h)) for c, h in zip(cells, header)))
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,sd15", help="comma-separated: tiny, sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--size", type=_size, default=(256, 256), help="HxW, multiples of 64")
    parser.add_argument("--frames", type=int, default=4, help="frames of the 1x video, also the clip length")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=3.5, help="guidance on: both branches in one batch per step")
    parser.add_argument("--long", type=int, default=4, help="the long video is this many times --frames")
    parser.add_argument("--long-steps", type=int, default=1, help="steps of the long run (memory only)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown presets {unknown}; choose from {', '.join(PRESETS)}")
    about = machine_line(device, args.dtype)  # the load average before the benchmark's own work
    rate = matmul_rate(device, dtype)
    rows = [run_preset(p, args, device, dtype) for p in presets]
    height, width = args.size
    print(f"\nAA2 pipeline, random weights, {height}x{width}, {args.frames} frames (one clip), {args.steps} steps, "
          f"cfg {args.cfg}, DDIM; long video {args.long}x{args.frames} frames in clips of {args.frames}, "
          f"1 motion frame, {args.long_steps} step(s)")
    print(f"machine: {about}; measured {args.dtype} matmul {rate / 1e12:.3f} TFLOP/s")
    print(table(rows, rate, device, args))
    if not all(r["one"].rss_reset for r in rows):
        print("note: VmHWM could not be reset here; RSS peaks are lifetime peaks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
