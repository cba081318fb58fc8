"""Side-by-side cost of our pipeline and Moore-AnimateAnyone's `Pose2VideoPipeline` (a maintainer tool).

Same weights, shapes, dtype, frames, steps, guidance scale and size on every side; each side runs in a
fresh subprocess (`tools.moore_bench_sides`), so its first call is a first call and its peak RSS its own.
Moore's code is read from a local checkout and never copied here (the issue forbids committing it):

    git --git-dir=MOORE.git archive HEAD src configs/inference/inference_v2.yaml | tar -x -C .moore
    .venv/bin/python -m tools.moore_bench .moore                                    # tiny preset, CPU
    .venv/bin/python -m tools.moore_bench .moore --presets sd15 --long 0 --no-flops # SD1.5 shapes, 1x
    python3 -m tools.moore_bench .moore --presets sd15 --device cuda --dtype fp16 --size 512x768 --frames 16 \\
        --steps 25 --long 3 --long-presets sd15 --sides aa2,moore,aa2-lowvram --no-flops   # bench/gpu_check.sh

Weights. `tiny`: the Moore folder `make_tiny_weights` writes (`animateanyone2/aa2-tiny-moore` with its
VAE and CLIP vision files). `sd15`: SD1.5 + AnimateDiff v2 + CLIP ViT-L/14 shapes, random, written once
in the same four-file Moore layout (about 10 GB under `--weights-dir`, reused by later runs;
`tools.moore_bench_weights`, made on the GPU when the benchmark runs on one). Our side loads the folder
with `aa2.weights.sources.load_model`; Moore's side loads the same files into its own classes, built as
`scripts/pose2vid.py` builds them, on the meta device and filled with `assign=True`, so neither side pays
for a random initialisation. Both are then cast to `--dtype`, as Moore's script casts to its
`weight_dtype` (fp16 in its shipped config).

Sides (`--sides`): `aa2` ours, model on the device; `moore` theirs; `aa2-lowvram` ours with
`SamplingSettings(offload="model")`, the model resting in host memory (README "Low-VRAM mode"). Each
side loads once, then calls: the 1x video cold (the first call in the process), the 1x video warm, and
the long videos warm (`--long` times the frames for `aa2`/`moore` on `--long-presets`, `--lowvram-long`
times for `aa2-lowvram`). Per call: wall time, median interval between step callbacks, peak RSS (VmHWM
reset before it) and on CUDA `torch.cuda.max_memory_allocated` (reset before it). Optionally FLOPs of
each network in a one-step call under `FlopCounterMode`. One table (rows: measures, columns: sides) is
printed and, with `--out`, every call's figures written as JSON.

Differences that are the pipelines' own, not the harness's: ours takes tensors, theirs PIL images (its
preprocessing is part of its call); ours runs the ReferenceNet on one row (the unconditional branch
never reads it), theirs on the guidance batch of two; theirs decodes the VAE one frame at a time, ours
as many as free memory allows (`--vae-chunk`, one on the CPU). Ours is given no environment, mask or
objects (theirs has no such inputs) and samples with the folder's own schedule — DDIM, v-prediction,
zero-terminal SNR, trailing — which is what `configs/inference/inference_v2.yaml` gives theirs. Longer
videos: ours chains clips of `--frames` with one motion frame; theirs is `pipeline_pose2vid_long` with
windows of `--frames` overlapping by one (its own default is 24 overlapping by 4; `scripts/pose2vid.py`
always uses the long pipeline).

The tiny CLIP takes 32-pixel images; Moore's pipeline builds a default `CLIPImageProcessor` (224 px, for
ViT-L/14), so the harness replaces that one attribute with a processor of the encoder's own size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .moore_bench_weights import CLIP_FILE, MARKER, VAE_FILE, tiny_folder

REPO = Path(__file__).resolve().parents[1]
SIDES = ("aa2", "moore", "aa2-lowvram")
SIDE_NAMES = {"aa2": "ours", "moore": "Moore", "aa2-lowvram": "ours low-VRAM"}
# Their reader casts the reference bank to float16 (`ReferenceAttentionControl.update(writer,
# dtype=torch.float16)`); next to bf16 activations torch.cat promotes it to float32 and the next
# linear layer refuses the mix. fp32 works (the cast is promoted back) and fp16 is their own setup.
MOORE_NO_BF16 = "Moore's pipeline runs in fp32 or fp16 only (its reference bank is cast to fp16)"


def weights_folder(preset: str, root: Path, device: str) -> tuple[Path, Path, Path, float]:
    """`(moore folder, vae file, clip vision file, seconds spent writing)` for `preset` under `root`."""
    if preset == "tiny":
        start = time.perf_counter()
        return *tiny_folder(root), time.perf_counter() - start
    folder = root / preset
    start = time.perf_counter()
    if not (folder / MARKER).is_file():  # in its own process: its ~11 GB are gone before a side starts
        subprocess.run([sys.executable, "-m", "tools.moore_bench_weights", str(folder), "--preset", preset,
                        "--device", device], check=True, cwd=REPO)
    return folder, folder / VAE_FILE, folder / CLIP_FILE, time.perf_counter() - start


def run_side(spec: dict, timeout: float | None) -> dict:
    """One side in a fresh interpreter. Its last `RESULT` line holds every call it finished, also when
    it failed or ran out of time; `status` says which."""
    command = [sys.executable, "-m", "tools.moore_bench_sides", json.dumps(spec)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}  # Moore's decode loop has a bar
    began = time.perf_counter()
    try:  # stderr passes through: each call's progress shows in the log as it happens
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env, timeout=timeout)
        stdout, status = done.stdout, "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired as stopped:
        stdout = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else stopped.stdout or ""
        status = f"stopped at the time budget ({timeout:.0f} s)"
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):]) if lines else {"calls": [], "flops": {}}
    if "error" in result:
        status += f": {result['error']}"
    return {**spec, **result, "status": status, "wall_s": time.perf_counter() - began}


def moore_commit(checkout: Path) -> str:
    """The commit of the checkout: its `COMMIT` file (written beside a `git archive` export), else git's
    when it is a clone (an export inside this repository would otherwise answer with our commit)."""
    if (checkout / "COMMIT").is_file():
        return (checkout / "COMMIT").read_text().strip()
    if not (checkout / ".git").exists():
        return "unknown (no COMMIT file)"
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.moore_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("moore", type=Path, help="path to a Moore-AnimateAnyone work tree (src/, configs/)")
    parser.add_argument("--presets", default="tiny", help="comma-separated: tiny, sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="both sides' weights")
    parser.add_argument("--size", default="256x256", help="HxW, multiples of 64")
    parser.add_argument("--frames", type=int, default=4, help="frames of the 1x video (one clip)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--long", type=int, default=4, help="also a video this many times longer, warm (0: no)")
    parser.add_argument("--long-presets", default="tiny", help="presets that get the long video too")
    parser.add_argument("--lowvram-long", type=int, default=4, help="the same for aa2-lowvram, every preset")
    parser.add_argument("--sides", default="aa2,moore", help=f"comma-separated: {', '.join(SIDES)}")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--vae-chunk", type=int, default=0,
                        help="our frames per VAE call; 0: automatic (free GPU memory; 1 on the CPU and low-VRAM)")
    parser.add_argument("--weights-dir", type=Path, default=Path(tempfile.gettempdir()) / "aa2-bench-weights",
                        help="where the random weights are written once and reused (~10 GB for sd15)")
    parser.add_argument("--weights-device", default="", help="where random weights are made (default: --device)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting call")
    parser.add_argument("--budget", type=float, default=0, help="seconds for all sides; a side that would "
                        "overrun is stopped (its finished calls are kept), later ones not started (0: no limit)")
    parser.add_argument("--out", type=Path, help="write every side's calls and the table here as JSON")
    args = parser.parse_args(argv)

    checkout = args.moore.resolve()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if unknown := set(sides) - set(SIDES):
        sys.exit(f"--sides: unknown {sorted(unknown)}; choose from {', '.join(SIDES)}")
    if "moore" in sides and not (checkout / "src" / "pipelines" / "pipeline_pose2vid.py").is_file():
        sys.exit(f"{checkout} is not a Moore-AnimateAnyone work tree (no src/pipelines/pipeline_pose2vid.py); "
                 "make one with `git --git-dir=MOORE.git archive HEAD src configs | tar -x -C DIR`")
    height, width = (int(v) for v in args.size.lower().split("x"))
    began = time.perf_counter()
    rows, weights_s = [], {}
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        folder, vae, clip, weights_s[preset] = weights_folder(preset, args.weights_dir,
                                                              args.weights_device or args.device)
        for side in sides:
            times = args.lowvram_long if side == "aa2-lowvram" else (
                args.long if preset in args.long_presets.split(",") else 0)
            spec = {"side": side, "preset": preset, "checkout": str(checkout), "folder": str(folder),
                    "vae": str(vae), "clip": str(clip), "device": args.device, "dtype": args.dtype,
                    "size": [height, width], "frames": args.frames, "long_frames": [times * args.frames] if times > 1
                    else [], "clip_length": args.frames, "steps": args.steps, "cfg": args.cfg,
                    "threads": args.threads, "vae_chunk": args.vae_chunk, "flops": not args.no_flops}
            left = args.budget - (time.perf_counter() - began) if args.budget else None
            skip = ("time budget spent" if left is not None and left < 30 else
                    MOORE_NO_BF16 if side == "moore" and args.dtype == "bf16" else None)
            if skip:
                rows.append({**spec, "calls": [], "flops": {}, "status": f"not run: {skip}", "wall_s": 0})
                continue
            print(f"running {side} {preset} ...", file=sys.stderr, flush=True)
            rows.append(run_side(spec, left))
    title = (f"AA2 vs Moore-AnimateAnyone Pose2VideoPipeline: {height}x{width}, {args.frames} frames, {args.steps} "
             f"DDIM steps (v-prediction, zero-terminal SNR, trailing), cfg {args.cfg}, {args.dtype}, same weights; "
             f"longer videos: ours chains clips of {args.frames} (1 motion frame), Moore's pose2vid_long uses "
             f"{args.frames}-frame windows overlapping by 1")
    machine = machine_line(args.device, args.dtype)
    text = "\n".join([title, f"machine: {machine}; Moore {moore_commit(checkout)}", table(rows, args.frames)]
                     + [f"{column_name(r, rows)}: {r['status']}" for r in rows if r["status"] != "ok"])
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"title": title, "machine": machine, "moore_commit": moore_commit(checkout),
                                        "weights_s": weights_s, "total_s": time.perf_counter() - began,
                                        "sides": rows, "table": text}, indent=1) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def machine_line(device: str, dtype: str) -> str:
    """The machine, without making a CUDA context in this process (it would hold GPU memory the sides
    then lack): the GPU's name from nvidia-smi."""
    if torch.device(device).type != "cuda":
        from bench.bench_pipeline import machine_line as cpu_line

        return cpu_line(torch.device(device), dtype)
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        gpu = "unknown GPU"
    return f"cuda: {gpu}; {dtype}; torch {torch.__version__}; {os.cpu_count()} CPU cores"


# ------------------------------------------------------------------ the table


def column_name(row: dict, rows: list[dict]) -> str:
    name = SIDE_NAMES[row["side"]]
    return f"{row['preset']} {name}" if len({r["preset"] for r in rows}) > 1 else name


def table(rows: list[dict], frames: int) -> str:
    """Rows: measures; columns: sides. `-` where a side did not make that call (or not on this device)."""

    def call(row: dict, label: str, n: int) -> dict | None:
        return next((c for c in row["calls"] if c["label"] == label and c["frames"] == n), None)

    def cell(row: dict, label: str, n: int, key: str, digits: int) -> str:
        found = call(row, label, n)
        return "-" if found is None or found[key] is None else f"{found[key]:.{digits}f}"

    def process_rss(row: dict) -> str:
        peaks = [row["load_rss_peak"]] + [c["rss_peak"] for c in row["calls"]] if "load_rss_peak" in row else []
        return f"{max(peaks):.0f}" if peaks else "-"

    def gflop(row: dict, *labels: str) -> str:
        return f"{sum(row['flops'].get(k, 0) for k in labels) / 1e9:.1f}" if row["flops"] else "-"

    longs = sorted({n for r in rows for n in r["long_frames"]})
    measures = [
        (f"first call in a fresh process, {frames} frames (total s)", lambda r: cell(r, "first", frames, "total_s", 2)),
        (f"warm call, {frames} frames (total s)", lambda r: cell(r, "warm", frames, "total_s", 2)),
        (f"s/step (warm, {frames} frames)", lambda r: cell(r, "warm", frames, "step_s", 3)),
        *[(f"{n} frames warm (total s)", lambda r, n=n: cell(r, "long", n, "total_s", 2)) for n in longs],
        (f"peak VRAM allocated, {frames} frames (MiB)", lambda r: cell(r, "warm", frames, "vram_peak", 0)),
        *[(f"peak VRAM allocated, {n} frames (MiB)", lambda r, n=n: cell(r, "long", n, "vram_peak", 0))
          for n in longs],
        ("load s", lambda r: f"{r['load_s']:.1f}" if "load_s" in r else "-"),
        ("peak host RSS, whole process (MiB)", process_rss),
    ]
    if any(r["flops"] for r in rows):
        measures += [("GFLOP denoising UNet, 1 guided step", lambda r: gflop(r, "denoising UNet")),
                     ("GFLOP ReferenceNet", lambda r: gflop(r, "ReferenceNet")),
                     ("GFLOP VAE, 1-step call", lambda r: gflop(r, "VAE encode", "VAE decode")),
                     ("GFLOP whole 1-step call", lambda r: gflop(r, "all"))]
    header = ["measure"] + [column_name(r, rows) for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(rows)) + "|"]
    lines += ["| " + " | ".join([name] + [value(r) for r in rows]) + " |" for name, value in measures]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
