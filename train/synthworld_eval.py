"""Score a checkpoint on held-out SynthWorld clips against their known ground truth (SynthWorld issue).

    python -m train.synthworld_eval --checkpoint CKPT --data HELDOUT_DIR --out DIR \
        [--steps 20] [--cfg 2.5] [--seed 0] [--size H W] [--clip-length F] \
        [--environment-mask agnostic|precise|box] [--reference-framing frame|character] \
        [--cross-identity] [--composite] \
        [--limit N] [--save-videos] [--lpips-backbone vgg16.pth --lpips-linear vgg.pth]

`HELDOUT_DIR` is written by `python -m train.synthworld HELDOUT_DIR --split heldout --cross-identity`.
Every clip is rendered by the pipeline (`train.render`) from the character *standing*
(`reference.png`, not frame 0: the task is real animation), driven by the clip's skeleton, depth
and objects, in the clip's frames cut by `environment_mask(character_mask, --environment-mask)`
(the formulation the model was trained with; Figure 7's ablation compares them).
`--reference-framing character` (the default, as the recipe trains) crops the reference to the
character's box (a portrait), for a model trained with `data.reference_framing: character`; `frame`
gives it whole, as the clip frames it (for models trained that way).

- `--cross-identity` (Figure 7 analogue): animate character B (`cross/reference.png`) with A's
  pose, depth, objects and environment (A's frames cut with A's mask); the ground truth is
  `cross/`, B performing A's motion, and every mask below is B's. Shape leakage shows here.
- `--composite` (Table 3's baseline, "Animate Anyone 1 composited onto the clean background"):
  the render is pasted into the driving video inside the environment mask; outside it the driving
  frame stays, which is the clean background plus the true objects. An AA1-style checkpoint
  (`use_environment=False`) samples without environment; an AA2 one with it, as usual — the same
  paste then gives the like-for-like row (both keep the true pixels outside the mask, so only what
  each draws inside it differs; without the paste, AA2 re-renders the whole scene through its VAE
  while the baseline keeps the true one).

Scores (per frame on 8-bit frames, averaged over a clip's frames, then over clips; see
`aa2.metrics.ground_truth`): `psnr` and `ssim` over the whole frame (the paper's), `lpips` when its
weights are given, `psnr_environment` outside the true character mask dilated by 4 px (pixels
the model must keep), `psnr_character` inside the true mask (pixels it must draw), `psnr_band` on
the ring from 2 px inside to 4 px outside the outline (where leakage shows), and `silhouette_iou`:
the pixels differing from the empty scene through the checkpoint's VAE (`Truth.scene`) by more
than 0.12 (max over RGB), a 3×3 opening
by reconstruction (drops speckle, keeps thin limbs), minus the true object's pixels, against the
true character mask. Radii are for 64-pixel
frames and scale with the frame. Each score is also given for the *ceiling*: the ground truth
through the checkpoint's own VAE (encode, decode), which no render can beat by more than luck;
`estimator_on_truth` is `silhouette_iou` on the true frames, the silhouette estimator's own error.

Writes `OUT/metrics.json` (settings, per clip, `mean`, `vae_ceiling`, per motion) and prints one line.
A metric undefined for every frame (an empty region) is null; an exact reproduction is "inf".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from einops import rearrange

from aa2.conditioning.augment import REFERENCE_FRAMINGS, portrait
from aa2.conditioning.masks import ENVIRONMENT_MASKS, environment_mask
from aa2.errors import AA2Error, AA2InputError
from aa2.pipeline.inputs import SamplingSettings
from aa2.pipeline.vae_codec import vae_round_trip
from aa2.animate_command import load_for_device
from aa2.weights.sources import ModelSources

from . import store
from .dataset import PreparedClips, _cover, _resize
from .metrics import (BAND_INNER_PX_AT_64, BAND_OUTER_PX_AT_64, ENVIRONMENT_MARGIN_PX_AT_64, SILHOUETTE_OPENING,
                      SILHOUETTE_THRESHOLD, Truth, estimate_silhouette, frame_mean, jsonable, load_lpips, mask_iou,
                      outline_agreement, quantize_8bit, score_clip)
from .metrics import SCORES as METRICS
from .render import count_dropped, render_clip_reporting, write_video


def open_heldout(data: str | Path, size: tuple[int, int] | None, clip_length: int | None) -> PreparedClips:
    """The held-out clips, consecutive frames, no augmentation. `size` None: the clips' own;
    `clip_length` None: the shortest clip's frame count (one clip per video)."""
    folders = sorted(p for p in Path(data).iterdir() if (p / store.META).is_file()) if Path(data).is_dir() else []
    metas = [store.read_json(p / store.META) for p in folders]
    metas = [m for m in metas if "synthworld" in m]
    if not metas:
        raise AA2InputError(f"no SynthWorld clips in {data}: write them with "
                            "python -m train.synthworld DIR --split heldout --cross-identity")
    if size is None:
        size = (int(metas[0]["height"]), int(metas[0]["width"]))
    if clip_length is None:
        clip_length = min(int(m["frames"]) for m in metas)
    return PreparedClips(data, clip_length=clip_length, size=size, stride=1, seed=0, clips_per_video=None)


def clip_extras(clips: PreparedClips, index: int, cross_identity: bool,
                framing: str = "frame") -> tuple[torch.Tensor, Truth, str]:
    """For clip `index`: the reference to animate `[3, H, W]`, the ground truth, and the motion.
    Extras are resized and cropped exactly as `PreparedClips` treats the clip's own frames; with
    `framing="character"` the reference is then cut to a portrait of the character (`augment.portrait`)."""
    video, start = clips.clips[index]
    meta = clips.videos[video]
    folder: Path = meta["folder"]
    files = meta["synthworld"]["files"]
    indices = list(range(start, start + clips.clip_length))
    h, w = int(meta["height"]), int(meta["width"])
    (rh, rw), (top, left) = _cover(h, w, clips.size)
    crop = (slice(top, top + clips.size[0]), slice(left, left + clips.size[1]))
    shrink = rh * rw < h * w
    image_mode = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR

    def image(name: str) -> torch.Tensor:
        path = folder / name
        pixels = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
        if pixels is None:
            raise AA2InputError(f"{path} is missing or unreadable: write the clips again with python -m train.synthworld")
        pixels = _resize(np.ascontiguousarray(pixels[..., ::-1]), rh, rw, image_mode)[crop]
        return rearrange(torch.from_numpy(pixels.copy()).float() / 255.0, "h w c -> c h w")

    def masks(name: str | None) -> torch.Tensor:
        if name is None:
            return torch.zeros(len(indices), *clips.size, dtype=torch.bool)
        stored = store.read_masks(folder / name, indices).astype(np.uint8)
        return torch.from_numpy(np.stack([_resize(m, rh, rw, cv2.INTER_NEAREST)[crop] for m in stored])).bool()

    def reference(names: dict) -> torch.Tensor:
        pixels = image(names["reference"])
        if framing == "frame":
            return pixels
        mask = image(names["reference_mask"])[0] > 0.5
        return portrait(pixels, mask, aspect=clips.size[1] / clips.size[0], size=clips.size)

    background = image(files["background"])
    if not cross_identity:
        sample = clips[index]
        truth = Truth(sample["frames"], sample["character_mask"] > 0.5, sample["object_mask"] > 0.5, background)
        return reference(files), truth, meta["synthworld"]["motion"]
    cross = files.get("cross")
    if not cross:
        raise AA2InputError(f"{folder.name} has no cross-identity rendering: write the held-out clips with "
                            "python -m train.synthworld DIR --split heldout --cross-identity")
    pixels = store.read_frames(folder, cross["frames"], indices)
    pixels = np.stack([_resize(p, rh, rw, image_mode)[crop] for p in pixels])
    frames = rearrange(torch.from_numpy(pixels).float() / 255.0, "f h w c -> f c h w").contiguous()
    truth = Truth(frames, masks(cross["character_mask"]), masks(cross.get("object_mask")), background)
    return reference(cross), truth, meta["synthworld"]["motion"]


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path, *,
             settings: SamplingSettings = SamplingSettings(cfg=2.5), size: tuple[int, int] | None = None,
             clip_length: int | None = None, formulation: str = "agnostic", framing: str = "character",
             cross_identity: bool = False, composite: bool = False, limit: int | None = None, save_videos: bool = False,
             lpips_backbone: str | None = None, lpips_linear: str | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Render and score the held-out clips; writes `OUT/metrics.json` and returns the same dict."""
    if formulation not in ENVIRONMENT_MASKS:
        raise AA2InputError(f"--environment-mask is one of {', '.join(ENVIRONMENT_MASKS)}; got {formulation!r}")
    if framing not in REFERENCE_FRAMINGS:
        raise AA2InputError(f"--reference-framing is one of {', '.join(REFERENCE_FRAMINGS)}; got {framing!r}")
    settings.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # one dtype for the whole model: a checkpoint converted from Moore's fp16 files loads partly fp16,
    # partly fp32 (its fresh AA2 parts), which no single input dtype can run. float32 on every device,
    # so that scores made on the CPU and on a GPU compare (the models are small)
    model = load_for_device(ModelSources.from_path(checkpoint), torch.device(device), torch.float32)
    if composite and not model.config.use_environment:
        # the AA1 baseline never sees the environment; it is pasted in afterwards
        settings = dataclasses.replace(settings, environment="off")
    skipped: dict[str, str] = {}
    lpips_model = None
    if lpips_backbone and lpips_linear:
        lpips_model = load_lpips(lpips_backbone, lpips_linear, rescale=False).to(device)
    else:
        skipped["lpips"] = ("no LPIPS weights (nothing is downloaded): pass --lpips-backbone (torchvision VGG16) "
                            "and --lpips-linear (the lpips package's v0.1 vgg.pth)")
    clips = open_heldout(data, size, clip_length)
    count = len(clips) if limit is None else min(limit, len(clips))

    per_clip, dropped = [], []
    for index in range(count):
        sample = clips[index]
        reference, truth, motion = clip_extras(clips, index, cross_identity, framing)
        rendered, left_out = render_clip_reporting(model, sample, settings, reference=reference,
                                                   formulation=formulation)
        rendered = rendered.float()
        dropped.append(left_out)
        ceiling = vae_round_trip(model.vae, truth.frames)
        scene = quantize_8bit(vae_round_trip(model.vae, truth.background[None]))[0]
        if composite:
            inside = environment_mask(sample["character_mask"].float(), formulation).bool().unsqueeze(1)
            rendered = torch.where(inside, rendered, sample["frames"].float())
            # the best such a render can be, and the empty scene as it shows it: through the VAE
            # inside the mask, true outside
            ceiling = torch.where(inside, ceiling, truth.frames)
            scene = torch.where(inside, scene, truth.background)
        truth = dataclasses.replace(truth, frames=quantize_8bit(truth.frames), scene=scene)
        rendered, ceiling = quantize_8bit(rendered), quantize_8bit(ceiling)
        name = f"{sample['video_id']}@{sample['start']}"
        per_clip.append({
            "clip": name, "video_id": sample["video_id"], "start": sample["start"], "motion": motion,
            "frames": int(rendered.shape[0]),
            "scores": score_clip(rendered, truth, lpips_model),
            "vae_ceiling": score_clip(ceiling, truth, lpips_model),
            "estimator_on_truth": {"silhouette_iou": frame_mean(mask_iou(
                estimate_silhouette(truth.frames, truth.background, exclude=truth.objects), truth.character))},
        })
        if cross_identity:
            # A's own frames through the VAE: what drawing A's outline exactly looks like to the estimator
            as_driving = vae_round_trip(model.vae, sample["frames"].float())
            if composite:
                as_driving = torch.where(inside, as_driving, sample["frames"].float())
            per_clip[-1]["outline"] = outline_scores(rendered, ceiling, quantize_8bit(as_driving), truth,
                                                     sample["character_mask"] > 0.5)
        if save_videos:
            write_video(out / f"{index:05d}-{name.replace('@', '-')}.mp4", torch.cat([truth.frames, rendered, ceiling], dim=-1))

    motions = sorted({c["motion"] for c in per_clip})
    result = {
        "settings": {
            "checkpoint": str(checkpoint), "data": str(data), "steps": settings.steps, "cfg": settings.cfg,
            "seed": settings.seed, "formulation": formulation, "reference_framing": framing,
            "cross_identity": cross_identity,
            "composite": composite, "size": list(clips.size), "clip_length": clips.clip_length,
            "sampling": dataclasses.asdict(settings),
            "model": {"use_environment": model.config.use_environment,
                      "use_object_guider": model.config.use_object_guider,
                      "object_injection": model.config.object_injection,
                      "use_depth": model.denoising_net.pose_modulation.depth_guider is not None},
            "silhouette": {"threshold": SILHOUETTE_THRESHOLD, "opening": SILHOUETTE_OPENING, "reconstruct": True},
            "radii_px_at_64": {"environment_margin": ENVIRONMENT_MARGIN_PX_AT_64, "band_outer": BAND_OUTER_PX_AT_64,
                               "band_inner": BAND_INNER_PX_AT_64},
        },
        "clips": per_clip,
        "mean": _clip_mean(per_clip, "scores"),
        "vae_ceiling": _clip_mean(per_clip, "vae_ceiling"),
        "estimator_on_truth": _clip_mean(per_clip, "estimator_on_truth"),
        **({"outline": _outline_mean(per_clip)} if cross_identity else {}),
        "by_motion": {m: {"clips": sum(c["motion"] == m for c in per_clip),
                          "mean": _clip_mean([c for c in per_clip if c["motion"] == m], "scores")} for m in motions},
        "skipped": skipped,
        "dropped": count_dropped(dropped),  # an ablation variant's missing parts, per clip count
    }
    (out / "metrics.json").write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
    return result


def outline_scores(rendered: torch.Tensor, ceiling: torch.Tensor, as_driving: torch.Tensor, truth: Truth,
                   driving: torch.Tensor) -> dict[str, float]:
    """Shape leakage of a cross-identity render (character B with A's motion): whether its
    silhouette follows the driving character A's outline or B's own where the two differ
    (`outline_agreement`: 1 = A's, 0 = B's) and its IoU with A's mask. The estimator and the VAE's
    blur move both ends of that scale, so it is also taken for B's true frames through the VAE
    (`ceiling`: following B exactly) and A's (`as_driving`: full leakage); `leakage` places the
    render between the two, 0 at B's end and 1 at A's. `truth` is B's, with `scene` set;
    `driving [F, H, W]` bool is A's mask."""
    def silhouette(frames: torch.Tensor) -> torch.Tensor:
        return estimate_silhouette(frames, truth.scene, exclude=truth.objects)

    def agreement(shown: torch.Tensor) -> float | None:
        return frame_mean(outline_agreement(shown, driving, truth.character))

    drawn = silhouette(rendered)
    render, follows_target, follows_driving = agreement(drawn), agreement(silhouette(ceiling)), agreement(
        silhouette(as_driving))
    # None where a scale end is undefined (A's and B's masks agree everywhere) or the ends do not part
    defined = None not in (render, follows_target, follows_driving) and follows_driving > follows_target
    return {
        "outline_agreement": render,
        "silhouette_iou_driving": frame_mean(mask_iou(drawn, driving)),
        "ceiling_outline_agreement": follows_target,
        "driving_ceiling_outline_agreement": follows_driving,
        "leakage": (render - follows_target) / (follows_driving - follows_target) if defined else None,
        "driving_target_iou": frame_mean(mask_iou(driving, truth.character)),
    }


def summary_line(result: dict[str, Any], out: str | Path) -> str:
    """One line: each metric as `render (ceiling)`."""
    s = result["settings"]
    mode = s["formulation"] + (", cross-identity" if s["cross_identity"] else "") + (", composite" if s["composite"] else "")
    parts = [f"{name} {_fmt(result['mean'][name])} ({_fmt(result['vae_ceiling'][name])})"
             for name in METRICS if result["mean"][name] is not None]
    return f"synthworld_eval: {len(result['clips'])} clips, {mode}: " + ", ".join(parts) + f" [render (VAE ceiling)] -> {Path(out) / 'metrics.json'}"


def _outline_mean(clips: list[dict]) -> dict[str, float | None]:
    """Clip means of the outline scores, with `leakage` placed between the *mean* scale ends: a
    clip's own ends can lie close together (A and B nearly alike), and its ratio then swings."""
    mean = _clip_mean(clips, "outline")
    render, low, high = (mean[k] for k in ("outline_agreement", "ceiling_outline_agreement",
                                           "driving_ceiling_outline_agreement"))
    defined = None not in (render, low, high) and high > low
    return {**mean, "leakage": (render - low) / (high - low) if defined else None}


def _clip_mean(clips: list[dict], key: str) -> dict[str, float | None]:
    names = clips[0][key].keys() if clips else METRICS
    out = {}
    for name in names:
        values = [c[key][name] for c in clips if c[key][name] is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def _fmt(value) -> str:
    return "inf" if value == math.inf else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.synthworld_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the pack's .safetensors checkpoint")
    parser.add_argument("--data", required=True, help="held-out SynthWorld clips (python -m train.synthworld --split heldout)")
    parser.add_argument("--out", required=True, help="folder for metrics.json (and videos)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default: the clips' own size")
    parser.add_argument("--clip-length", type=int, help="frames per clip (default: the shortest clip's length)")
    parser.add_argument("--environment-mask", choices=ENVIRONMENT_MASKS, default="agnostic",
                        help="the formulation the model was trained with (default agnostic, eq. 2)")
    parser.add_argument("--reference-framing", choices=REFERENCE_FRAMINGS, default="character",
                        help="how the model was trained to see its reference (data.reference_framing)")
    parser.add_argument("--cross-identity", action="store_true", help="animate the clip's other character (cross/)")
    parser.add_argument("--composite", action="store_true",
                        help="paste the render into the driving frames inside the mask (Table 3: the AA1 baseline "
                             "samples without environment; an AA2 checkpoint with it)")
    parser.add_argument("--limit", type=int, help="score only the first N clips")
    parser.add_argument("--save-videos", action="store_true", help="one mp4 per clip: truth | render | VAE ceiling")
    parser.add_argument("--lpips-backbone", help="torchvision VGG16 weights for LPIPS")
    parser.add_argument("--lpips-linear", help="the lpips package's v0.1 vgg.pth")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    try:
        result = evaluate(
            args.checkpoint, args.data, args.out,
            settings=SamplingSettings(steps=args.steps, cfg=args.cfg, seed=args.seed),
            size=tuple(args.size) if args.size else None, clip_length=args.clip_length,
            formulation=args.environment_mask, framing=args.reference_framing,
            cross_identity=args.cross_identity, composite=args.composite,
            limit=args.limit, save_videos=args.save_videos, lpips_backbone=args.lpips_backbone,
            lpips_linear=args.lpips_linear, device=args.device,
        )
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_line(result, args.out))
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if result["dropped"]:
        print(f"note: {result['dropped']['why']} (clips: {result['dropped']['clips']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
