"""Side-by-side cost of our pipeline and Moore-AnimateAnyone's `Pose2VideoPipeline` (a maintainer tool).

Same weights, shapes, frames, steps, guidance scale and size on both sides; each side runs in a fresh
subprocess so its peak RSS is its own. Moore's code is read from a local checkout and never copied
here (the issue forbids committing it):

    git clone https://github.com/MooreThreads/Moore-AnimateAnyone MOORE_CHECKOUT
    .venv/bin/python -m tools.moore_bench MOORE_CHECKOUT                          # tiny preset, CPU
    .venv/bin/python -m tools.moore_bench MOORE_CHECKOUT --presets tiny,sd15 --size 256x256 --frames 4

Weights. `tiny`: the Moore folder `make_tiny_weights` writes (`animateanyone2/aa2-tiny-moore` with its
VAE and CLIP vision files). `sd15`: SD1.5 + AnimateDiff v2 + CLIP ViT-L/14 shapes, random, written once
in the same four-file Moore layout (about 9.5 GB under `--weights-dir`, reused by later runs). Our side
loads the folder with `aa2.weights.sources.load_model`; Moore's side loads the same files into its own
classes, built as `scripts/pose2vid.py` builds them (`UNet3DConditionModel` from the SD1.5 config and
`configs/inference/inference_v2.yaml`, `PoseGuider`, diffusers' `AutoencoderKL`, transformers' CLIP), on
the meta device and filled with `assign=True` so neither side pays for a random initialisation.

What is measured, per side: the whole call from input images to frames (`total s`), the median
interval between step callbacks (`s / step`), peak RSS during the call (VmHWM reset just before it)
and its rise over the RSS held before, and — in a second call with one step under
`torch.utils.flop_counter.FlopCounterMode` — the FLOPs of each network.

Differences that are the pipelines' own, not the harness's: ours takes tensors, theirs PIL images (its
preprocessing is part of its call); ours runs the ReferenceNet on one row (the unconditional branch
never reads it), theirs on the guidance batch of two; theirs decodes the VAE one frame at a time, ours
`vae_chunk` frames at a time. Ours is given no environment, mask or objects (theirs has no such inputs)
and samples with the folder's own schedule — DDIM, v-prediction, zero-terminal SNR, trailing — which is
what `configs/inference/inference_v2.yaml` gives theirs.

The tiny CLIP takes 32-pixel images; Moore's pipeline builds a default `CLIPImageProcessor` (224 px, for
ViT-L/14), so the harness replaces that one attribute with a processor of the encoder's own size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MOORE_FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")
VAE_FILE, CLIP_FILE = "vae.safetensors", "clip_vision.safetensors"


# ------------------------------------------------------------------ weights


def weights_folder(preset: str, root: Path) -> tuple[Path, Path, Path]:
    """`(moore folder, vae file, clip vision file)` for `preset`, written under `root` if absent."""
    if preset == "tiny":
        base = root / "tiny"
        folder = base / "animateanyone2" / "aa2-tiny-moore"
        vae, clip = base / "vae" / "aa2-tiny-vae.safetensors", base / "clip_vision" / "aa2-tiny-clip-vision.safetensors"
        if not (folder / MOORE_FILES[0]).is_file():
            from aa2.weights.tiny import make_tiny_weights

            make_tiny_weights(base)
        return folder, vae, clip
    folder = root / preset
    if not (folder / "complete").is_file():
        write_random_moore_folder(folder, preset)
    return folder, folder / VAE_FILE, folder / CLIP_FILE


def write_random_moore_folder(folder: Path, preset: str, seed: int = 0) -> None:
    """Random weights of `preset`'s shapes in Moore's layout (four `.pth`), with a VAE and a CLIP file.

    Written from `random_parts` state dicts directly (no model is assembled), so the SD1.5 shapes fit
    in about 11 GB of RAM.
    """
    from aa2.config import sd15, tiny
    from aa2.models.pose_modulation import PoseGuider
    from aa2.weights.animatediff import motion_module_to_original
    from aa2.weights.clip_vision import write_clip_vision_file
    from aa2.weights.ldm import write_vae_file
    from aa2.weights.tiny import random_parts

    config = (sd15() if preset == "sd15" else tiny()).replace(fusion="full", use_environment=False,
                                                                use_object_guider=False)
    start = time.perf_counter()
    parts = random_parts(config, seed)
    print(f"random {preset} weights made in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    denoising = dict(parts.denoising_unet)
    denoising["conv_in.weight"] = denoising["conv_in.weight"][:, :4].contiguous()  # Animate Anyone 1: noise only
    torch.save(denoising, folder / MOORE_FILES[0])
    del denoising, parts.denoising_unet
    reference = {k: v for k, v in parts.reference_unet.items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    torch.save(reference, folder / MOORE_FILES[1])
    del reference, parts.reference_unet
    torch.manual_seed(seed + 2)
    guider = PoseGuider(config.pose.conditioning_channels, config.pose.block_out_channels,
                        config.unet.block_out_channels[0])
    with torch.no_grad():
        for parameter in guider.parameters():  # its conv_out starts at zero; random, so the pose counts
            parameter.add_(torch.randn_like(parameter) * 0.05)
    torch.save(guider.state_dict(), folder / MOORE_FILES[2])
    motion = {k: v.contiguous().clone() for k, v in motion_module_to_original(parts.motion).items()}
    torch.save(motion, folder / MOORE_FILES[3])
    write_vae_file(folder / VAE_FILE, parts.vae)
    write_clip_vision_file(folder / CLIP_FILE, parts.image_encoder)
    (folder / "complete").write_text(f"random {preset} weights, seed {seed}\n")


# ------------------------------------------------------------------ inputs shared by both sides


def bench_images(frames: int, height: int, width: int, seed: int = 0):
    """A reference image and `frames` pose images as uint8 arrays (both sides get exactly these)."""
    g = torch.Generator().manual_seed(seed)
    reference = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    poses = torch.randint(0, 256, (frames, height, width, 3), generator=g, dtype=torch.uint8)
    return reference, poses


# ------------------------------------------------------------------ our side


def run_ours(spec: dict) -> dict:
    from einops import rearrange

    from aa2.pipeline.animate import animate
    from aa2.pipeline.inputs import AnimationInputs, SamplingSettings
    from aa2.weights.sources import ModelSources, load_model

    device = torch.device(spec["device"])
    start = time.perf_counter()
    model = load_model(ModelSources(Path(spec["folder"]), vae=Path(spec["vae"]), image_encoder=Path(spec["clip"])))
    model = model.to(device)
    load_s = time.perf_counter() - start
    reference, poses = bench_images(spec["frames"], *spec["size"])
    inputs = AnimationInputs(reference=rearrange(reference, "h w c -> c h w").float() / 255,
                             pose=rearrange(poses, "f h w c -> f c h w").float() / 255)

    def call(steps: int, progress=None):
        settings = SamplingSettings(steps=steps, cfg=spec["cfg"], seed=0, clip_length=spec["clip_length"],
                                    vae_chunk=spec["vae_chunk"] or SamplingSettings().vae_chunk)
        return animate(model, inputs, settings, progress=progress)

    parts = {"DenoisingNet": "denoising UNet", "PoseModulation": "pose guider",
             "CLIPVisionModelWithProjection": "CLIP", "Encoder": "VAE encode", "Decoder": "VAE decode"}
    return measure(spec, load_s, call, parts, reference_alone=lambda: _our_reference_flops(model, spec["size"]))


def _our_reference_flops(model, size: list[int]) -> int:
    """Our ReferenceNet stops by an exception after its last read layer; FlopCounterMode's module
    tracker then never closes it and credits later FLOPs to it, so it is counted in a call of its own."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.reference_net.parameters())
    h, w = (s // 8 for s in size)
    latents = torch.randn(1, 4, h, w, device=param.device, dtype=param.dtype)
    context = torch.randn(1, 1, model.config.unet.cross_attention_dim, device=param.device, dtype=param.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode_reference(latents, context)
    return counter.get_total_flops()


# ------------------------------------------------------------------ Moore's side


def build_moore_pipeline(checkout: Path, folder: Path, vae_file: Path, clip_file: Path, long: bool):
    """Moore's networks as `scripts/pose2vid.py` builds them, filled from the same files as ours.

    Our readers only infer the widths and convert the VAE / CLIP file layouts (diffusers' and
    transformers' classes are what Moore loads them into); the UNets and pose guider load Moore's
    `.pth` files directly, `strict=False` as their script does, and every key must land.
    """
    import yaml
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from aa2.weights.clip_vision import read_clip_vision
    from aa2.weights.ldm import read_vae_file
    from aa2.weights.moore import read_moore_folder

    from .moore_golden import _import_moore

    unet_2d, unet_3d, pose_guider_class, _, _ = _import_moore(checkout)
    if long:
        from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline
    else:
        from src.pipelines.pipeline_pose2vid import Pose2VideoPipeline

    config, _ = read_moore_folder(folder)
    unet_config = config.unet.diffusers_config()
    inference = yaml.safe_load((checkout / "configs" / "inference" / "inference_v2.yaml").read_text())
    vae_state, vae_shape = read_vae_file(vae_file)
    clip_state, clip_shape = read_clip_vision(clip_file, config.unet.cross_attention_dim)
    with init_empty_weights():
        reference_unet = unet_2d(**unet_config)
        denoising_unet = unet_3d(
            **{**unet_config,
               "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
               "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
               "mid_block_type": "UNetMidBlock3DCrossAttn"},
            **inference["unet_additional_kwargs"],
        )
        pose_guider = pose_guider_class(unet_config["block_out_channels"][0],
                                        block_out_channels=config.pose.block_out_channels)
        vae = AutoencoderKL(**vae_shape.diffusers_config())
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_shape.transformers_config()))

    def load(module, state, what):
        result = module.load_state_dict(state, strict=False, assign=True)
        empty = [n for n, p in list(module.named_parameters()) + list(module.named_buffers()) if p.is_meta]
        if result.unexpected_keys or empty:
            sys.exit(f"{what}: unexpected {result.unexpected_keys[:5]}, never loaded {empty[:5]}")
        return module.eval().requires_grad_(False)

    def pth(name):
        return torch.load(folder / name, map_location="cpu", weights_only=True)

    reference_unet = load(reference_unet, pth(MOORE_FILES[1]), "reference_unet.pth")
    denoising_unet = load(denoising_unet, {**pth(MOORE_FILES[0]), **pth(MOORE_FILES[3])},
                          "denoising_unet.pth + motion_module.pth")
    pose_guider = load(pose_guider, pth(MOORE_FILES[2]), "pose_guider.pth")
    vae = load(vae, vae_state, "VAE")
    image_encoder = load(image_encoder, clip_state, "CLIP vision")
    pipe = Pose2VideoPipeline(vae=vae, image_encoder=image_encoder, reference_unet=reference_unet,
                              denoising_unet=denoising_unet, pose_guider=pose_guider,
                              scheduler=DDIMScheduler(**inference["noise_scheduler_kwargs"]))
    side = clip_shape.image_size  # 224 for ViT-L/14, as their default processor; 32 for the tiny encoder
    pipe.clip_image_processor = CLIPImageProcessor(size={"shortest_edge": side},
                                                   crop_size={"height": side, "width": side})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_moore(spec: dict) -> dict:
    from PIL import Image

    device = torch.device(spec["device"])
    long = spec["clip_length"] < spec["frames"]
    start = time.perf_counter()
    pipe = build_moore_pipeline(Path(spec["checkout"]), Path(spec["folder"]), Path(spec["vae"]),
                                Path(spec["clip"]), long)
    pipe = pipe.to(device)
    load_s = time.perf_counter() - start
    reference, poses = bench_images(spec["frames"], *spec["size"])
    reference_image = Image.fromarray(reference.numpy())
    pose_images = [Image.fromarray(p.numpy()) for p in poses]
    height, width = spec["size"]
    # their long pipeline: windows of our clip length, overlapping by our one motion frame
    windows = {"context_frames": spec["clip_length"], "context_overlap": 1} if long else {}

    def call(steps: int, progress=None):
        callback = (lambda i, t, latents: progress()) if progress else None
        return pipe(reference_image, pose_images, width, height, spec["frames"], steps, spec["cfg"],
                    generator=torch.manual_seed(0), callback=callback, **windows).videos

    return measure(spec, load_s, call, {"UNet3DConditionModel": "denoising UNet", "PoseGuider": "pose guider",
                                        "CLIPVisionModelWithProjection": "CLIP", "Encoder": "VAE encode",
                                        "Decoder": "VAE decode", "UNet2DConditionModel": "ReferenceNet"})


# ------------------------------------------------------------------ measuring, the same for both


def measure(spec: dict, load_s: float, call, parts: dict[str, str], reference_alone=None) -> dict:
    """Warm-up (tiny only), the timed call under a peak-memory probe, then FLOPs in a one-step call."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.bench_pipeline import PeakMemory, sync

    device = torch.device(spec["device"])
    if spec["warmup"]:
        call(1)
    stamps: list[float] = []

    def progress(*_):
        sync(device)
        stamps.append(time.perf_counter())

    with PeakMemory(device) as memory:
        sync(device)
        start = time.perf_counter()
        call(spec["steps"], progress)
        sync(device)
        total_s = time.perf_counter() - start
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    result = {"load_s": load_s, "total_s": total_s, "step_s": statistics.median(intervals) if intervals else None,
              "steps_seen": len(stamps), "rss_peak": memory.rss_peak, "rss_start": memory.rss_start,
              "vram_peak": memory.vram_peak, "flops": {}}
    if spec["flops"]:
        with FlopCounterMode(display=False) as counter:
            call(1)
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        result["flops"] = {label: counts.get(name, 0) for name, label in parts.items()}
        result["flops"]["all"] = counts.get("Global", 0)
        if reference_alone is not None:
            result["flops"]["ReferenceNet"] = reference_alone()
    return result


def child(spec: dict) -> None:
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = run_ours(spec) if spec["side"] == "aa2" else run_moore(spec)
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------ the parent


def run_child(spec: dict) -> dict:
    """One side in a fresh interpreter, so its peak RSS and allocator state are its own."""
    command = [sys.executable, "-m", "tools.moore_bench", "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{spec['side']} {spec['preset']} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("moore", type=Path, help="path to a Moore-AnimateAnyone checkout (work tree)")
    parser.add_argument("--presets", default="tiny", help="comma-separated: tiny, sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="256x256", help="HxW, multiples of 64")
    parser.add_argument("--frames", type=int, default=4, help="frames of the 1x video (one clip)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--long", type=int, default=4, help="also run a video this many times longer (0: no)")
    parser.add_argument("--long-presets", default="tiny", help="presets that get the long run too")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--vae-chunk", type=int, default=0,
                        help="our frames per VAE call; 0: SamplingSettings' default (Moore's decodes 1)")
    parser.add_argument("--weights-dir", type=Path, default=Path(tempfile.gettempdir()) / "aa2-bench-weights",
                        help="where the random weights are written once and reused (~9.5 GB for sd15)")
    parser.add_argument("--sides", default="aa2,moore", help="which pipelines to run: aa2, moore")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting call")
    args = parser.parse_args(argv)

    from bench.bench_pipeline import machine_line

    checkout = args.moore.resolve()
    if not (checkout / "src" / "pipelines" / "pipeline_pose2vid.py").is_file():
        sys.exit(f"{checkout} is not a Moore-AnimateAnyone checkout (no src/pipelines/pipeline_pose2vid.py)")
    height, width = (int(v) for v in args.size.lower().split("x"))
    about = machine_line(torch.device(args.device), "fp32")
    rows = []
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        folder, vae, clip = weights_folder(preset, args.weights_dir)
        lengths = [1] + ([args.long] if args.long > 1 and preset in args.long_presets.split(",") else [])
        for times in lengths:
            for side in [s for s in ("aa2", "moore") if s in args.sides.split(",")]:
                spec = {"side": side, "preset": preset, "checkout": str(checkout), "folder": str(folder),
                        "vae": str(vae), "clip": str(clip), "device": args.device, "size": [height, width],
                        "frames": times * args.frames, "clip_length": args.frames, "steps": args.steps,
                        "cfg": args.cfg, "threads": args.threads, "vae_chunk": args.vae_chunk,
                        "warmup": preset == "tiny", "flops": not args.no_flops and times == 1}
                print(f"running {side} {preset} {spec['frames']} frames ...", file=sys.stderr, flush=True)
                rows.append({**spec, **run_child(spec)})
    print(f"\nAA2 vs Moore-AnimateAnyone Pose2VideoPipeline: {height}x{width}, {args.steps} steps, cfg {args.cfg}, "
          f"DDIM (v-prediction, zero-terminal SNR, trailing), fp32, same weights; longer videos: ours chains clips "
          f"of {args.frames} (1 motion frame), Moore's pose2vid_long uses {args.frames}-frame windows overlapping by 1")
    print(f"machine: {about}")
    print(side_by_side(rows))
    return 0


def side_by_side(rows: list[dict]) -> str:
    header = ["preset", "frames", "pipeline", "load s", "s/step", "total s", "peak RSS MiB", "rise MiB",
              "GFLOP denoise/step", "GFLOP ReferenceNet", "GFLOP VAE", "GFLOP call(1 step)"]
    lines = [" | ".join(header), " | ".join("-" * len(h) for h in header)]
    for r in rows:
        f = r["flops"]
        cells = [r["preset"], r["frames"], "ours" if r["side"] == "aa2" else "Moore", f"{r['load_s']:.1f}",
                 f"{r['step_s']:.3f}" if r["step_s"] else "-", f"{r['total_s']:.2f}", f"{r['rss_peak']:.0f}",
                 f"{r['rss_peak'] - r['rss_start']:.0f}", _gflop(f, "denoising UNet"),
                 _gflop(f, "ReferenceNet"), _gflop(f, "VAE encode", "VAE decode"), _gflop(f, "all")]
        lines.append(" | ".join(str(c).rjust(len(h)) for c, h in zip(cells, header)))
    return "\n".join(lines)


def _gflop(flops: dict[str, int], *labels: str) -> str:
    return f"{sum(flops.get(k, 0) for k in labels) / 1e9:.1f}" if flops else "-"


if __name__ == "__main__":
    raise SystemExit(main())
