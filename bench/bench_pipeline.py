"""Pipeline benchmark: time per denoising step and per frame, ReferenceNet cost, and peak memory
for growing video lengths (the long-video chainer should keep memory flat). Prints one table.

    python -m bench.bench_pipeline                      # from the repo root; tiny preset, CPU, ~1-2 min on 2 cores
    python -m bench.bench_pipeline --config sd15 --device cuda --size 512x512 --dtype fp16

Random weights: the numbers measure cost, not quality. Not a test; nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from aa2.config import AA2Config, tiny
from aa2.pipeline.animate import animate
from aa2.pipeline.inputs import AnimationInputs, SamplingSettings
from aa2.pipeline.reference import encode_reference
from aa2.weights.tiny import random_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PeakMemory:
    """Peak memory of one measured region, in MiB: CUDA's allocator peak on a GPU; on the CPU the
    process's peak RSS, reset at the start through /proc/self/clear_refs (Linux), else sampled by a
    psutil thread every 5 ms, else the lifetime peak from `resource` (then it can only grow)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.how, self.peak, self.base = device, "", 0.0, 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base, self.how = torch.cuda.memory_allocated() / 2**20, "cuda max_memory_allocated"
            return self
        self._stop = threading.Event()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.how = "peak RSS (VmHWM)"
        except OSError:
            try:
                import psutil

                self._process, self.how = psutil.Process(), "peak RSS (psutil, 5 ms samples)"
                self._sampled = self._process.memory_info().rss
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
            except ImportError:
                self.how = "lifetime peak RSS (resource)"
        self.base = _rss_mib()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled = max(self._sampled, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        elif self.how.startswith("peak RSS (VmHWM)"):
            self.peak = _status_kib("VmHWM") / 1024
        elif self.how.startswith("peak RSS (psutil"):
            self._stop.set()
            self._thread.join()
            self.peak = self._sampled / 2**20
        else:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kib(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def _rss_mib() -> float:
    try:
        return _status_kib("VmRSS") / 1024
    except OSError:
        return 0.0


def synthetic_inputs(frames: int, height: int, width: int, seed: int = 0) -> AnimationInputs:
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(model, frames: int, size: tuple[int, int], settings: SamplingSettings, device: torch.device) -> dict:
    inputs = synthetic_inputs(frames, *size)
    _sync(device)
    start = time.perf_counter()
    reference = encode_reference(model, inputs.reference, size)
    _sync(device)
    reference_s = time.perf_counter() - start

    stamps: list[float] = []

    def progress(done: int, total: int, preview) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    with PeakMemory(device) as memory:
        _sync(device)
        start = time.perf_counter()
        animate(model, inputs, settings, reference=reference, progress=progress)
        _sync(device)
        total_s = time.perf_counter() - start
    # Step intervals inside a clip; the interval that spans a clip boundary also holds the VAE and
    # the clip's conditions, and the median leaves it out.
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    step_s = statistics.median(intervals) if intervals else stamps[0] - start
    return {
        "frames": frames, "clips": len(stamps) // settings.steps, "reference_s": reference_s, "step_s": step_s,
        "frame_s": total_s / frames, "total_s": total_s, "peak": memory.peak, "base": memory.base, "how": memory.how,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--size", default="64x64", help="HxW, multiples of 64")
    parser.add_argument("--frames", default="16,32,64", help="video lengths to run, comma-separated")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance on (2 branches per step), as in real use")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = (int(v) for v in args.size.lower().split("x"))
    lengths = [int(v) for v in args.frames.split(",")]
    config = tiny() if args.config == "tiny" else AA2Config()
    if args.config == "sd15" and device.type == "cpu":
        print("note: random SD1.5 on the CPU takes ~40 s to build and ~20-35 s per step at 8 frames of 256x256",
              file=sys.stderr)

    start = time.perf_counter()
    model = random_model(config).to(device=device, dtype=DTYPES[args.dtype])
    build_s = time.perf_counter() - start
    settings = SamplingSettings(steps=args.steps, cfg=args.cfg, seed=0)
    # Warm-up at the first length: the CPU's kernels and the allocator are set up per shape.
    measure(model, lengths[0], (height, width), SamplingSettings(steps=1, cfg=args.cfg), device)

    rows = [measure(model, n, (height, width), settings, device) for n in lengths]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"\nAA2 pipeline, {args.config} preset (random weights, built in {build_s:.1f} s), {height}x{width}, "
          f"{args.steps} steps, cfg {args.cfg}, {device.type} {args.dtype}, torch threads {threads}; "
          f"clip {config.motion.trained_frames} frames, 1 motion frame")
    header = ("frames", "clips", "ReferenceNet s", "s / step", "s / frame", "total s", "peak MiB", "peak - start MiB")
    print(" | ".join(header))
    print(" | ".join("-" * len(h) for h in header))
    for r in rows:
        cells = (r["frames"], r["clips"], f"{r['reference_s']:.3f}", f"{r['step_s']:.3f}", f"{r['frame_s']:.3f}",
                 f"{r['total_s']:.2f}", f"{r['peak']:.0f}", f"{r['peak'] - r['base']:.0f}")
        print(" | ".join(str(c).rjust(len(h)) for c, h in zip(cells, header)))
    print(f"memory: {rows[0]['how']}; 'ReferenceNet s' is one encode_reference (VAE + CLIP + ReferenceNet), run once "
          "per video; 's / step' is the median time of one guided denoising step over a whole clip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
