"""One side of `tools.moore_bench`, run in a process of its own: ours, ours in low-VRAM mode, or Moore's.

    python -m tools.moore_bench_sides SPEC_JSON      # what tools.moore_bench runs once per side

A side loads its networks once (`load s`, the process's peak RSS so far), then makes its calls in one
order, each under its own peak probe (VmHWM reset through /proc/self/clear_refs; on CUDA
`torch.cuda.reset_peak_memory_stats` before and `max_memory_allocated` after):

1. `first`: the 1x video, the first call after loading: CUDA kernels chosen and loaded, the caching
   allocator grown, lazy imports done. What a user waits for on the first render of a session.
2. `warm`: the same call again; `s / step` is the median interval between its step callbacks.
3. `long`: each longer video (`spec["long_frames"]`), warm.

After each call it prints a `RESULT {json}` line with everything so far, so a side stopped by the
parent's time budget still gives the calls it finished. Optionally (`spec["flops"]`) a last one-step
1x call under `FlopCounterMode` counts each network's FLOPs.

The sides: `aa2` is `aa2.pipeline.animate` with the model on the device; `aa2-lowvram` the same with
`SamplingSettings(offload="model")`, the model resting in host memory and each part brought to the
device for its phase (`aa2.pipeline.offload`); its `load s` is the read into host memory only.
`moore` is Moore-AnimateAnyone's `Pose2VideoPipeline` (`pipeline_pose2vid`) for the 1x video and its
`pipeline_pose2vid_long` for longer ones (windows of our clip length overlapping by our one motion
frame), built from a local checkout as `scripts/pose2vid.py` builds it, cast to the dtype as that
script does (`pipe.to("cuda", dtype=weight_dtype)`).
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.bench_pipeline import PeakMemory, status_kib, sync

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MOORE_FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")


def bench_images(frames: int, height: int, width: int, seed: int = 0):
    """A reference image and `frames` pose images as uint8 `[H, W, 3]` tensors (every side gets these)."""
    g = torch.Generator().manual_seed(seed)
    reference = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    poses = torch.randint(0, 256, (frames, height, width, 3), generator=g, dtype=torch.uint8)
    return reference, poses


class Side:
    """What `measure` needs of a pipeline: inputs made outside the timed region, then the call."""

    load_s: float
    parts: dict[str, str]  # FlopCounterMode module name -> the label in the table

    def prepare(self, frames: int):
        raise NotImplementedError

    def call(self, prepared, steps: int, progress=None) -> None:
        raise NotImplementedError

    def reference_flops(self) -> int | None:
        return None


# ------------------------------------------------------------------ our side


class Ours(Side):
    parts = {"DenoisingNet": "denoising UNet", "PoseModulation": "pose guider",
             "CLIPVisionModelWithProjection": "CLIP", "Encoder": "VAE encode", "Decoder": "VAE decode"}

    def __init__(self, spec: dict) -> None:
        from aa2.weights.sources import ModelSources, load_model

        self.spec, self.device, dtype = spec, torch.device(spec["device"]), DTYPES[spec["dtype"]]
        self.low_vram = spec["side"] == "aa2-lowvram"
        start = time.perf_counter()
        model = load_model(ModelSources(Path(spec["folder"]), vae=Path(spec["vae"]), image_encoder=Path(spec["clip"])))
        # low-VRAM: the model rests in host memory; `animate(device=...)` brings each part over for its phase
        self.model = model.to(dtype=dtype) if self.low_vram else model.to(device=self.device, dtype=dtype)
        sync(self.device)
        self.load_s = time.perf_counter() - start

    def prepare(self, frames: int):
        from einops import rearrange

        from aa2.pipeline.inputs import AnimationInputs

        reference, poses = bench_images(frames, *self.spec["size"])
        return AnimationInputs(reference=rearrange(reference, "h w c -> c h w").float() / 255,
                               pose=rearrange(poses, "f h w c -> f c h w").float() / 255)

    def call(self, prepared, steps: int, progress=None) -> None:
        from aa2.pipeline.animate import animate
        from aa2.pipeline.inputs import SamplingSettings

        spec = self.spec
        settings = SamplingSettings(steps=steps, cfg=spec["cfg"], seed=0, clip_length=spec["clip_length"],
                                    vae_chunk=spec["vae_chunk"], offload="model" if self.low_vram else "none")
        animate(self.model, prepared, settings, progress=progress, device=self.device if self.low_vram else None)

    def reference_flops(self) -> int | None:
        """Our ReferenceNet stops by an exception after its last read layer; FlopCounterMode's module
        tracker then never closes it and credits later FLOPs to it, so it is counted in a call of its own."""
        from torch.utils.flop_counter import FlopCounterMode

        net = self.model.reference_net.to(self.device)
        param = next(net.parameters())
        h, w = (s // 8 for s in self.spec["size"])
        latents = torch.randn(1, 4, h, w, device=param.device, dtype=param.dtype)
        context = torch.randn(1, 1, self.model.config.unet.cross_attention_dim, device=param.device, dtype=param.dtype)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self.model.encode_reference(latents, context)
        return counter.get_total_flops()


# ------------------------------------------------------------------ Moore's side


def build_moore_pipelines(checkout: Path, folder: Path, vae_file: Path, clip_file: Path) -> dict:
    """Moore's networks as `scripts/pose2vid.py` builds them, filled from the same files as ours, in
    both of their pipelines (`{"short": pipeline_pose2vid, "long": pipeline_pose2vid_long}`, sharing
    the networks).

    Our readers only infer the widths and convert the VAE / CLIP file layouts (diffusers' and
    transformers' classes are what Moore loads them into); the UNets and pose guider load Moore's
    `.pth` files directly, `strict=False` as their script does, and every key must land. The networks
    are made on the meta device and filled with `assign=True`, so no random initialisation is paid.
    """
    import yaml
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from aa2.weights.clip_vision import read_clip_vision
    from aa2.weights.ldm import read_vae_file
    from aa2.weights.moore import read_moore_folder

    from .moore_golden import _import_moore, moore_denoising_unet

    unet_2d, unet_3d, pose_guider_class, _, _ = _import_moore(checkout)
    from src.pipelines.pipeline_pose2vid import Pose2VideoPipeline
    from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline as Pose2VideoLongPipeline

    config, _ = read_moore_folder(folder)
    unet_config = config.unet.diffusers_config()
    inference = yaml.safe_load((checkout / "configs" / "inference" / "inference_v2.yaml").read_text())
    vae_state, vae_shape = read_vae_file(vae_file)
    clip_state, clip_shape = read_clip_vision(clip_file, config.unet.cross_attention_dim)
    with init_empty_weights():
        reference_unet = unet_2d(**unet_config)
        denoising_unet = moore_denoising_unet(unet_3d, unet_config, checkout)
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

    networks = {
        "reference_unet": load(reference_unet, pth(MOORE_FILES[1]), "reference_unet.pth"),
        "denoising_unet": load(denoising_unet, {**pth(MOORE_FILES[0]), **pth(MOORE_FILES[3])},
                               "denoising_unet.pth + motion_module.pth"),
        "pose_guider": load(pose_guider, pth(MOORE_FILES[2]), "pose_guider.pth"),
        "vae": load(vae, vae_state, "VAE"),
        "image_encoder": load(image_encoder, clip_state, "CLIP vision"),
    }
    side = clip_shape.image_size  # 224 for ViT-L/14, as their default processor; 32 for the tiny encoder
    pipelines = {}
    for name, pipeline_class in (("short", Pose2VideoPipeline), ("long", Pose2VideoLongPipeline)):
        pipe = pipeline_class(**networks, scheduler=DDIMScheduler(**inference["noise_scheduler_kwargs"]))
        pipe.clip_image_processor = CLIPImageProcessor(size={"shortest_edge": side},
                                                       crop_size={"height": side, "width": side})
        pipe.set_progress_bar_config(disable=True)
        pipelines[name] = pipe
    return pipelines


class Moore(Side):
    parts = {"UNet3DConditionModel": "denoising UNet", "PoseGuider": "pose guider",
             "CLIPVisionModelWithProjection": "CLIP", "Encoder": "VAE encode", "Decoder": "VAE decode",
             "UNet2DConditionModel": "ReferenceNet"}

    def __init__(self, spec: dict) -> None:
        self.spec, self.device = spec, torch.device(spec["device"])
        start = time.perf_counter()
        self.pipelines = build_moore_pipelines(Path(spec["checkout"]), Path(spec["folder"]), Path(spec["vae"]),
                                               Path(spec["clip"]))
        self.pipelines["short"].to(self.device, DTYPES[spec["dtype"]])  # the networks both pipelines share
        sync(self.device)
        self.load_s = time.perf_counter() - start

    def prepare(self, frames: int):
        from PIL import Image

        reference, poses = bench_images(frames, *self.spec["size"])
        return Image.fromarray(reference.numpy()), [Image.fromarray(p.numpy()) for p in poses]

    def call(self, prepared, steps: int, progress=None) -> None:
        reference_image, pose_images = prepared
        frames, (height, width) = len(pose_images), self.spec["size"]
        long = self.spec["clip_length"] < frames
        # their long pipeline: windows of our clip length, overlapping by our one motion frame
        windows = {"context_frames": self.spec["clip_length"], "context_overlap": 1} if long else {}
        callback = (lambda i, t, latents: progress()) if progress else None
        self.pipelines["long" if long else "short"](
            reference_image, pose_images, width, height, frames, steps, self.spec["cfg"],
            generator=torch.manual_seed(0), callback=callback, **windows)


# ------------------------------------------------------------------ measuring, the same for every side


def timed_call(side: Side, device: torch.device, label: str, frames: int, steps: int) -> dict:
    """One call under a fresh peak probe: wall time, median step interval, peak RSS and VRAM."""
    prepared = side.prepare(frames)
    stamps: list[float] = []

    def progress(*_):
        sync(device)
        stamps.append(time.perf_counter())

    with PeakMemory(device) as memory:
        sync(device)
        start = time.perf_counter()
        side.call(prepared, steps, progress)
        sync(device)
        total_s = time.perf_counter() - start
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    reserved = torch.cuda.max_memory_reserved() / 2**20 if device.type == "cuda" else None
    return {"label": label, "frames": frames, "total_s": total_s,
            "step_s": statistics.median(intervals) if intervals else None, "steps_seen": len(stamps),
            "rss_peak": memory.rss_peak, "rss_start": memory.rss_start,
            "vram_peak": None if device.type != "cuda" else memory.vram_peak, "vram_reserved_peak": reserved}


def measure(spec: dict) -> None:
    """Load, then every call of the plan; a `RESULT` line after the load and after each call. An error
    is reported in the `RESULT` line too (its last line, for the table's notes), then raised."""
    device = torch.device(spec["device"])
    result = {"calls": [], "flops": {}}
    try:
        side = Moore(spec) if spec["side"] == "moore" else Ours(spec)
        result.update(load_s=side.load_s, load_rss_peak=status_kib("VmHWM") / 1024)
        print("RESULT " + json.dumps(result), flush=True)
        plan = [("first", spec["frames"]), ("warm", spec["frames"])] + [("long", n) for n in spec["long_frames"]]
        for label, frames in plan:
            print(f"  {spec['side']}: {label} call, {frames} frames", file=sys.stderr, flush=True)
            result["calls"].append(timed_call(side, device, label, frames, spec["steps"]))
            print("RESULT " + json.dumps(result), flush=True)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        print("RESULT " + json.dumps(result), flush=True)
        raise
    if spec["flops"]:
        from torch.utils.flop_counter import FlopCounterMode

        prepared = side.prepare(spec["frames"])
        with FlopCounterMode(display=False) as counter:
            side.call(prepared, 1)
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        result["flops"] = {label: counts.get(name, 0) for name, label in side.parts.items()}
        result["flops"]["all"] = counts.get("Global", 0)
        reference = side.reference_flops()
        if reference is not None:
            result["flops"]["ReferenceNet"] = reference
        print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m tools.moore_bench_sides SPEC_JSON (tools.moore_bench writes the spec)")
    spec = json.loads(argv[0])
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    measure(spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
