"""Rendering a prepared clip with the pipeline, as validation and evaluation do (paper §4).

The reference is the clip's first frame (the TikTok protocol re-renders a video from one of its own
frames), the pose, structured depth, environment and object sequence come from the prepared data,
and the environment mask is the inference-time shape-agnostic mask (kh = h/10, kw = w/10).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from aa2.conditioning.masks import shape_agnostic_mask
from aa2.conditioning.sam2_segment import object_frames
from aa2.conditioning.structured_depth import structured_depth
from aa2.models.aa2_model import AA2Model
from aa2.pipeline.animate import animate
from aa2.pipeline.inputs import AnimationInputs, SamplingSettings


def animation_inputs(model: AA2Model, sample: dict[str, Any], depth_convention: str = "inverse") -> AnimationInputs:
    """The pipeline's inputs for re-rendering a prepared clip from its first frame."""
    frames = sample["frames"].float()
    skeleton = sample["skeleton"].float()
    depth = None
    if bool(sample.get("has_depth", False)) and model.denoising_net.pose_modulation.depth_guider is not None:
        depth = structured_depth(skeleton, sample["depth"].float(), convention=depth_convention)
    objects = None
    if bool(sample.get("has_objects", False)):
        objects = object_frames(frames, sample["object_mask"].float())
    return AnimationInputs(
        reference=frames[0],
        pose=skeleton,
        depth=depth,
        environment=frames,
        mask=shape_agnostic_mask(sample["character_mask"].float()),
        objects=objects,
    )


def render_clip(model: AA2Model, sample: dict[str, Any], settings: SamplingSettings,
                depth_convention: str = "inverse") -> torch.Tensor:
    """Render a prepared clip; returns `[F, 3, H, W]` 0..1 on the CPU."""
    frames = sample["frames"].shape[0]
    length = min(frames, model.config.motion.trained_frames)
    settings = dataclasses.replace(settings, clip_length=length, motion_frames=min(settings.motion_frames, length - 1))
    result = animate(model, animation_inputs(model, sample, depth_convention), settings)
    return rearrange(result.frames, "f h w c -> f c h w")


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
