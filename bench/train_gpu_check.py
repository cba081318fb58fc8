"""Training measured where it runs (issue 14): peak memory, s/step and data wait, per recipe stage.

    python -m bench.train_gpu_check --out OUT                       # the GPU check: sd15 shapes, 512 and 768
    python -m bench.train_gpu_check --out OUT --preset tiny --sizes 64 --frames 4 --steps 3 \\
        --set optim.mixed_precision=no                              # the same plumbing on a CPU, in seconds

Every case is a real `python -m train.train` process, so a step is a real step: prepared SynthWorld clips
read and augmented by the dataset with the recipe's `data.num_workers`, VAE encodes of target,
environment, objects and reference, the CLIP forward, ReferenceNet + DenoisingNet forward and backward,
the optimizer step. The weights are random in SD1.5's shapes (`train.init_model --preset sd15`): speed and
memory do not depend on their values. s/step is the median after the first `--warmup` steps (CUDA
kernels, allocator growth); `data wait` is the share of those steps spent blocked on the next clips;
peak is `torch.cuda.max_memory_allocated` over the run. Nothing is saved (`debug.stop_after`).

Cases run in order of importance and stop being started when `--budget` seconds would be overrun, so one
device call of a known length always returns a table. Writes OUT/train_gpu_check.json and prints a
Markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "train" / "recipes"
PAPER_STEPS = 100_000


@dataclass(frozen=True)
class Case:
    recipe: str
    stage: str
    size: int
    sets: tuple[str, ...] = ()
    needs: str | None = None  # a module the case cannot run without (bitsandbytes for 8-bit Adam)

    @property
    def label(self) -> str:
        extra = " ".join(s.split(".", 1)[1] for s in self.sets)
        return f"{self.recipe.removesuffix('.yaml')} {self.stage} {self.size}" + (f" {extra}" if extra else "")


def default_cases(sizes: list[int]) -> list[Case]:
    """The recipes as written first, then the memory choices a smaller card needs."""
    cases = []
    for size in sizes:
        cases += [Case("paper.yaml", "image", size), Case("paper.yaml", "motion", size,
                                                           ("optim.gradient_checkpointing=true",))]
    largest = max(sizes)
    cases += [
        Case("paper.yaml", "image", largest, ("optim.gradient_checkpointing=true",)),
        Case("paper.yaml", "image", largest, ("optim.use_8bit_adam=true",), needs="bitsandbytes"),
        Case("single_gpu_24gb.yaml", "image", min(sizes), needs="bitsandbytes"),
        Case("single_gpu_24gb.yaml", "motion", min(sizes), needs="bitsandbytes"),
        Case("paper.yaml", "motion", largest),  # without checkpointing: the one most likely not to fit
    ]
    return cases


@dataclass
class Result:
    case: str
    status: str
    trainable_m: float | None = None
    peak_gib: float | None = None
    s_per_step: float | None = None
    data_wait: float | None = None
    steps_measured: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def paper_hours(self) -> float | None:
        return None if self.s_per_step is None else self.s_per_step * PAPER_STEPS / 3600


def make_world(folder: Path, clips: int, size: int, frames: int) -> float:
    """SynthWorld training clips at the largest size, one generator process per clip (they are seeded)."""
    started = time.perf_counter()
    if len([p for p in folder.glob("sw_*") if (p / "meta.json").is_file()]) < clips:
        def one(index: int) -> None:
            subprocess.run([sys.executable, "-m", "train.synthworld", str(folder), "--videos", "1", "--seed", str(index),
                            "--size", str(size), "--frames", str(frames)], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL)
        with ThreadPoolExecutor(max_workers=min(clips, os.cpu_count() or 1)) as pool:
            list(pool.map(one, range(clips)))
    return time.perf_counter() - started


def make_weights(path: Path, preset: str) -> float:
    started = time.perf_counter()
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "train.init_model", "--preset", preset, "--out", str(path)], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_case(case: Case, weights: Path, data: Path, out: Path, frames: int, steps: int, warmup: int,
             sets: list[str], timeout: float) -> Result:
    if case.needs:
        try:
            __import__(case.needs)
        except ImportError:
            return Result(case.label, f"skipped: {case.needs} is not installed")
    command = [sys.executable, "-m", "train.train", "--config", str(RECIPES / case.recipe), "--stage", case.stage,
               "--data", str(data), "--out", str(out),
               "--set", f"model.base={weights}", "--set", "model.motion_module=null",
               "--set", "model.image_encoder=null", "--set", "model.vae=null",
               "--set", f"data.size=[{case.size},{case.size}]", "--set", f"data.clip_length={frames}",
               "--set", "optim.steps=1000000", "--set", f"debug.stop_after={warmup + steps}",
               "--set", "run.checkpoint_every=1000000", "--set", "run.validate_every=0",
               "--set", "run.tracker=none", "--set", "run.log_every=1"]
    for item in (*case.sets, *sets):
        command += ["--set", item]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        return Result(case.label, f"stopped after {timeout:.0f} s", wall_s=time.perf_counter() - started)
    wall = time.perf_counter() - started
    log = out / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        oom = "out of memory" in done.stderr.lower()
        return Result(case.label, "out of memory" if oom else f"failed ({done.returncode})", wall_s=wall,
                      notes=tail)
    measured = records[warmup:] or records
    trainable = re.search(r"stage: ([\d.]+)M trainable", done.stdout)
    peaks = [r["peak_gib"] for r in records if r.get("peak_gib") is not None]
    return Result(
        case.label, "ok",
        trainable_m=float(trainable.group(1)) if trainable else None,
        peak_gib=max(peaks) if peaks else None,
        s_per_step=statistics.median(r["seconds"] for r in measured),
        data_wait=sum(r["data_wait"] for r in measured) / max(sum(r["seconds"] for r in measured), 1e-9),
        steps_measured=len(measured), wall_s=wall,
    )


def machine() -> dict[str, str]:
    import torch

    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": str(os.cpu_count())}
    for name in ("diffusers", "accelerate", "transformers", "bitsandbytes"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = "absent"
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
    else:
        info["device"] = "cpu"
    return info


def table(results: list[Result]) -> str:
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = ["| case | status | trainable M | peak GiB | s/step | data wait | h per 100k steps |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.case} | {r.status} | {number(r.trainable_m, '.1f')} | {number(r.peak_gib, '.1f')} | "
                    f"{number(r.s_per_step, '.3f')} | {number(r.data_wait, '.0%')} | {number(r.paper_hours, '.1f')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for train_gpu_check.json")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "aa2-train-check"),
                        help="scratch: weights, clips, runs")
    parser.add_argument("--preset", default="sd15", help="network shapes of the random weights (aa2.config)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 768])
    parser.add_argument("--frames", type=int, default=16, help="clip length (the recipes' 16)")
    parser.add_argument("--clips", type=int, default=8, help="SynthWorld clips to read from")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of s/step")
    parser.add_argument("--budget", type=float, default=330, help="seconds; no case starts that could overrun it")
    parser.add_argument("--only", nargs="*", help="run the cases whose label contains one of these")
    parser.add_argument("--set", action="append", default=[], help="extra train.train override for every case")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(json.dumps(info), flush=True)
    setup = {"world_s": make_world(work / f"world{max(args.sizes)}", args.clips, max(args.sizes), args.frames),
             "weights_s": make_weights(work / f"{args.preset}.safetensors", args.preset)}
    print(f"setup: {setup}", flush=True)

    cases = [c for c in default_cases(args.sizes) if not args.only or any(o in c.label for o in args.only)]
    results: list[Result] = []
    slowest = 0.0
    for index, case in enumerate(cases):
        left = args.budget - (time.perf_counter() - began)
        if left < max(slowest, 30):
            results.append(Result(case.label, "not run: budget"))
            continue
        result = run_case(case, work / f"{args.preset}.safetensors", work / f"world{max(args.sizes)}",
                          work / "runs" / f"case{index}", args.frames, args.steps, args.warmup, args.set, left)
        slowest = max(slowest, result.wall_s)
        results.append(result)
        print(f"{result.case}: {result.status}  peak {result.peak_gib}  s/step {result.s_per_step}  "
              f"data wait {result.data_wait}  ({result.wall_s:.0f} s) {' | '.join(result.notes)}", flush=True)
    report = {"machine": info, "setup": setup, "frames": args.frames, "steps": args.steps, "warmup": args.warmup,
              "results": [{**r.__dict__, "paper_hours": r.paper_hours} for r in results],
              "total_s": time.perf_counter() - began}
    (out / "train_gpu_check.json").write_text(json.dumps(report, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
