"""Score a checkpoint as the paper's tables do: PSNR*, SSIM, LPIPS and FVD on re-rendered test clips.

    python -m train.evaluate --checkpoint aa2-final.safetensors --data TEST_DIR --out scores/ \
        [--lpips-backbone vgg16.pth --lpips-linear vgg.pth] [--i3d i3d_torchscript.pt]

Every prepared test clip is re-rendered from its own first frame, driven by its own pose, depth,
environment and objects (`train.render`), and compared frame by frame with itself — the TikTok
protocol (`train.metrics.fvd` documents its sources; `train.metrics.protocol.TIKTOK` holds its choices:
8-bit frames, grey SSIM with a 7x7 uniform window, LPIPS-VGG on 0..1 inputs, FVD over 16-frame clips
starting at every frame). `--protocol standard` feeds LPIPS −1..1 inputs as its authors define it.

Per-video scores are the mean over that video's frames (of all its clips); the summary is the mean
over videos. FVD is one number over all clips. LPIPS and FVD need weight files the user provides;
without them, or with clips shorter than the FVD clip length, they are reported as skipped with the
reason. Writes `OUT/scores.json` (and, with `--save-videos`, one mp4 per clip: truth | render); its
`dropped` names the annotations the weights could not take (depth, objects on Moore weights) and in
how many clips they were left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from aa2.errors import AA2Error
from aa2.pipeline.inputs import SamplingSettings
from aa2.animate_command import load_for_device, pick_dtype
from aa2.weights.sources import ModelSources

from .metrics import STANDARD, TIKTOK, MetricProtocol, load_i3d, load_lpips, psnr, quantize_8bit, ssim, video_clips
from .metrics import frechet_video_distance
from .render import count_dropped, render_clip_reporting, write_video

PROTOCOLS = {"tiktok": TIKTOK, "standard": STANDARD}


def open_test_clips(data: str, size: tuple[int, int], clip_length: int, factory: str | None):
    """The test split: `train.dataset.PreparedClips` (or `factory`), consecutive frames, no augmentation."""
    if factory:
        import importlib

        module, _, name = factory.partition(":")
        cls = getattr(importlib.import_module(module), name)
    else:
        from .dataset import PreparedClips as cls
    return cls(data, clip_length=clip_length, size=size, stride=1, seed=0, clips_per_video=None)


def evaluate(checkpoint: str | Path, data: str, out: str | Path, *, protocol: MetricProtocol = TIKTOK,
             settings: SamplingSettings = SamplingSettings(), size: tuple[int, int] = (512, 512),
             clip_length: int = 16, lpips_backbone: str | None = None, lpips_linear: str | None = None,
             i3d: str | None = None, dataset_factory: str | None = None, save_videos: bool = False,
             limit: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Render the test clips, score them, write `OUT/scores.json`; returns the same dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    skipped: dict[str, str] = {}
    lpips_model = None
    if lpips_backbone and lpips_linear:
        lpips_model = load_lpips(lpips_backbone, lpips_linear, rescale=protocol.lpips_rescale).to(device)
    else:
        skipped["lpips"] = "no LPIPS weights: pass --lpips-backbone (torchvision VGG16/AlexNet) and --lpips-linear (lpips v0.1)"
    detector = None
    if i3d:
        detector = load_i3d(i3d, device)
    else:
        skipped["fvd"] = "no I3D detector: pass --i3d i3d_torchscript.pt (StyleGAN-V's)"

    # one dtype for the whole model, as the CLI renders: a checkpoint converted from Moore's fp16 files
    # loads partly fp16, partly fp32 (its fresh AA2 parts), which no single input dtype can run
    model = load_for_device(ModelSources.from_path(checkpoint), torch.device(device),
                            pick_dtype("auto", torch.device(device)))
    clips = open_test_clips(data, size, clip_length, dataset_factory)
    count = len(clips) if limit is None else min(limit, len(clips))
    per_video: dict[str, dict[str, list[float]]] = {}
    real_clips, fake_clips, dropped = [], [], []
    for index in range(count):
        sample = clips[index]
        rendered, left_out = render_clip_reporting(model, sample, settings)
        rendered = rendered.float()
        dropped.append(left_out)
        truth = sample["frames"].float().cpu()
        if protocol.quantize_8bit:
            rendered, truth = quantize_8bit(rendered), quantize_8bit(truth)
        scores = per_video.setdefault(str(sample.get("video_id", index)), {"psnr": [], "ssim": [], "lpips": []})
        scores["psnr"] += psnr(rendered, truth).tolist()
        scores["ssim"] += ssim(rendered, truth, color=protocol.ssim_color,
                               gaussian_weights=protocol.ssim_gaussian_weights).tolist()
        if lpips_model is not None:
            with torch.no_grad():
                scores["lpips"] += lpips_model(rendered.to(device), truth.to(device)).cpu().tolist()
        if detector is not None:
            real_clips.append(video_clips(truth, protocol.fvd_clip_length, protocol.fvd_clip_stride))
            fake_clips.append(video_clips(rendered, protocol.fvd_clip_length, protocol.fvd_clip_stride))
        if save_videos:
            write_video(out / f"{index:05d}-{sample.get('video_id', index)}.mp4", torch.cat([truth, rendered], dim=-1))

    videos = {vid: {name: (sum(v) / len(v) if v else None) for name, v in s.items()} | {"frames": len(s["psnr"])}
              for vid, s in per_video.items()}
    mean = {name: _mean([v[name] for v in videos.values()]) for name in ("psnr", "ssim", "lpips")}
    fvd = None
    if detector is not None:
        real, fake = torch.cat(real_clips), torch.cat(fake_clips)
        if real.shape[0] < 2:
            skipped["fvd"] = (f"only {real.shape[0]} clip(s) of {protocol.fvd_clip_length} frames: FVD needs at least 2 "
                              "(use longer test clips: --clip-length)")
        else:
            fvd = frechet_video_distance(detector, real, fake, unbiased=protocol.fvd_unbiased_covariance)
    result = {
        "checkpoint": str(checkpoint),
        "protocol": dataclasses.asdict(protocol),
        "sampling": dataclasses.asdict(settings),
        "size": list(size),
        "clips": count,
        "videos": videos,
        "mean": {**mean, "fvd": fvd},
        "skipped": skipped,
        "dropped": count_dropped(dropped),  # conditions the weights have no part for, per clip count
    }
    (out / "scores.json").write_text(json.dumps(result, indent=1))
    return result


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the pack's .safetensors checkpoint (e.g. RUN/aa2-final.safetensors)")
    parser.add_argument("--data", required=True, help="prepared test videos (python -m train.prepare)")
    parser.add_argument("--out", required=True, help="folder for scores.json (and videos)")
    parser.add_argument("--lpips-backbone", help="torchvision VGG16 (or AlexNet) weights for LPIPS")
    parser.add_argument("--lpips-linear", help="the lpips package's v0.1 linear layers (vgg.pth / alex.pth)")
    parser.add_argument("--i3d", help="StyleGAN-V's i3d_torchscript.pt for FVD")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="tiktok")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--clip-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="score only the first N clips")
    parser.add_argument("--save-videos", action="store_true")
    parser.add_argument("--dataset", metavar="MODULE:CALLABLE", help="a dataset class instead of PreparedClips")
    args = parser.parse_args(argv)
    try:
        result = evaluate(
            args.checkpoint, args.data, args.out, protocol=PROTOCOLS[args.protocol],
            settings=SamplingSettings(steps=args.steps, cfg=args.cfg, seed=args.seed), size=tuple(args.size),
            clip_length=args.clip_length, lpips_backbone=args.lpips_backbone, lpips_linear=args.lpips_linear,
            i3d=args.i3d, dataset_factory=args.dataset, save_videos=args.save_videos, limit=args.limit,
        )
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result["mean"]))
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if result["dropped"]:
        print(f"note: {result['dropped']['why']} (clips: {result['dropped']['clips']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
