"""Rendering a prepared clip with the pipeline, as validation and evaluation do (paper §4).

By default the reference is the clip's first frame (the TikTok protocol re-renders a video from one
of its own frames), the pose, structured depth, environment and object sequence come from the
prepared data, and the environment mask is the inference-time shape-agnostic mask (kh = h/10,
kw = w/10). SynthWorld's evaluation (`train.synthworld_eval`) passes its own `reference` (the
character standing, or another character) and the environment formulation a model was trained with.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from aa2.conditioning.masks import EnvironmentMask, environment_mask
from aa2.models.aa2_model import AA2Model
from aa2.pipeline.animate import animate
from aa2.pipeline.assemble import AssembledInputs, ConditioningParts, assemble_inputs, dropped_text
from aa2.pipeline.inputs import SamplingSettings

log = logging.getLogger("train.render")


def animation_inputs(model: AA2Model, sample: dict[str, Any], depth_convention: str = "inverse", *,
                     reference: torch.Tensor | None = None,
                     formulation: EnvironmentMask = "agnostic") -> AssembledInputs:
    """The pipeline's inputs for re-rendering a prepared clip: from its first frame, or from
    `reference [3, H, W]` 0..1 when given; the environment cut by `environment_mask(character_mask,
    formulation)`. Under the "drop" policy (`aa2.pipeline.assemble`): the clip's depth and objects
    are left out for a model without a depth branch / object guider (Moore / MIMO weights, the
    ablation variants), and named in `dropped`; the environment still shows the objects."""
    frames = sample["frames"].float()
    return assemble_inputs(
        frames[0] if reference is None else reference.float(),
        sample["skeleton"].float(),
        depth=sample["depth"].float() if bool(sample.get("has_depth", False)) else None,
        depth_kind=depth_convention,
        environment=frames,
        mask=environment_mask(sample["character_mask"].float(), formulation),
        object_mask=sample["object_mask"].float() if bool(sample.get("has_objects", False)) else None,
        parts=ConditioningParts.of(model),
        missing="drop",
    )


def render_clip(model: AA2Model, sample: dict[str, Any], settings: SamplingSettings,
                depth_convention: str = "inverse", *, reference: torch.Tensor | None = None,
                formulation: EnvironmentMask = "agnostic") -> torch.Tensor:
    """Render a prepared clip (`reference`, `formulation`: see `animation_inputs`); returns
    `[F, 3, H, W]` 0..1 on the CPU. Conditions the model has no part for are left out, with a
    warning in the log naming the clip and what was left out."""
    return render_clip_reporting(model, sample, settings, depth_convention, reference=reference,
                                 formulation=formulation)[0]


def render_clip_reporting(model: AA2Model, sample: dict[str, Any], settings: SamplingSettings,
                          depth_convention: str = "inverse", *, reference: torch.Tensor | None = None,
                          formulation: EnvironmentMask = "agnostic") -> tuple[torch.Tensor, tuple[str, ...]]:
    """`render_clip`, and the conditions it left out: what a score file records beside the scores,
    so that an evaluation without depth or objects never reads as a full one."""
    frames = sample["frames"].shape[0]
    length = min(frames, model.config.motion.trained_frames)
    settings = dataclasses.replace(settings, clip_length=length, motion_frames=min(settings.motion_frames, length - 1))
    assembled = animation_inputs(model, sample, depth_convention, reference=reference, formulation=formulation)
    if assembled.dropped:  # said per clip: an evaluation of such weights must not read as a full one
        log.warning("clip %s@%s: %s", sample.get("video_id", "?"), sample.get("start", 0),
                    dropped_text(assembled.dropped))
    result = animate(model, assembled.inputs, settings)
    return rearrange(result.frames, "f h w c -> f c h w"), assembled.dropped


def count_dropped(per_clip: list[tuple[str, ...]]) -> dict[str, Any]:
    """For a score file: how many clips left out each condition, in words (`{}` when none did)."""
    counts = {name: sum(name in dropped for dropped in per_clip) for name in ("depth", "objects")}
    counts = {name: count for name, count in counts.items() if count}
    return {"clips": counts, "why": dropped_text(tuple(counts))} if counts else {}


def write_video(path: str | Path, frames: torch.Tensor, fps: float = 8.0) -> Path:
    """Write `frames [F, 3, H, W]` 0..1 as an mp4 (cv2, mp4v)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[-2:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
        for frame in rearrange(pixels, "f c h w -> f h w c").numpy():
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
