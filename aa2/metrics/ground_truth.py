"""One rendered clip scored against a SynthWorld clip's ground truth (the SynthWorld issue).

`score_clip` gives every number `train.synthworld_eval` reports per clip and `python -m aa2 demo`
writes to metrics.json: `psnr` and `ssim` over the whole frame (the paper's), `psnr_environment`
outside the true character mask grown by 4 px (pixels the model must keep), `psnr_character` inside
the true mask (pixels it must draw), `psnr_band` on the ring from 2 px inside to 4 px outside the
outline (where Figure 7's shape leakage shows), `silhouette_iou` of the pixels that differ from the
empty scene (`Truth.scene`, else the clean background; minus the true object) against the true mask, and `lpips` when a model is given.
Radii are for 64-pixel frames and scale with the frame (`regions.scaled_radius`).

Per-frame values are averaged over the frames that define them (`frame_mean`): an empty region is
NaN for that frame, and a metric undefined for every frame is None. `jsonable` writes an exact
reproduction (inf dB) as "inf", so the JSON stays strict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch

from .psnr_ssim import psnr, ssim
from .regions import (BAND_INNER_PX_AT_64, BAND_OUTER_PX_AT_64, character_band, environment_region,
                      estimate_silhouette, mask_iou, region_psnr, scaled_radius)

SCORES = ("psnr", "ssim", "lpips", "psnr_environment", "psnr_character", "psnr_band", "silhouette_iou")
ENVIRONMENT_MARGIN_PX_AT_64 = BAND_OUTER_PX_AT_64  # the environment starts where the band ends


@dataclasses.dataclass(frozen=True)
class Truth:
    """What a render is scored against, at the render's size: frames `[F, 3, H, W]` 0..1,
    character and object masks `[F, H, W]` bool (the object's all False without one), and the
    clean background `[3, H, W]`.

    `scene` (optional, `[3, H, W]`, or `[F, 3, H, W]` when it differs per frame, as for a render
    pasted into the true frames outside a mask) is the empty scene as the renderer's VAE shows it,
    decode(encode(background)): a render's silhouette is taken against it, like with like. Against
    the clean background, a 64-pixel SynthWorld VAE's blur of textured floors and walls (about 20 dB)
    exceeds the threshold over much of the frame: its own round trip of the true frames then scores
    a silhouette IoU of 0.1-0.3, against 0.4-0.65 with `scene` (6 held-out clips).
    """

    frames: torch.Tensor
    character: torch.Tensor
    objects: torch.Tensor
    background: torch.Tensor
    scene: torch.Tensor | None = None


def score_clip(frames: torch.Tensor, truth: Truth,
               lpips_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
               ) -> dict[str, float | None]:
    """Every metric of one clip: `frames` and `truth.frames` `[F, 3, H, W]` 0..1, already 8-bit
    (`quantize_8bit`, as DisCo's protocol reads PNGs). `lpips_model` (an `nn.Module` such as
    `train.metrics.LPIPS`) adds `lpips`; without one it is None."""
    size = tuple(frames.shape[-2:])
    band = character_band(truth.character, scaled_radius(BAND_OUTER_PX_AT_64, size),
                          scaled_radius(BAND_INNER_PX_AT_64, size))
    environment = environment_region(truth.character, scaled_radius(ENVIRONMENT_MARGIN_PX_AT_64, size))
    empty = truth.background if truth.scene is None else truth.scene
    silhouette = estimate_silhouette(frames, empty, exclude=truth.objects)
    result = {
        "psnr": psnr(frames, truth.frames),
        "ssim": ssim(frames, truth.frames),
        "lpips": None,
        "psnr_environment": region_psnr(frames, truth.frames, environment),
        "psnr_character": region_psnr(frames, truth.frames, truth.character),
        "psnr_band": region_psnr(frames, truth.frames, band),
        "silhouette_iou": mask_iou(silhouette, truth.character),
    }
    if lpips_model is not None:
        device = next(lpips_model.parameters()).device
        with torch.no_grad():
            result["lpips"] = lpips_model(frames.to(device), truth.frames.to(device)).double().cpu()
    return {name: frame_mean(values) for name, values in result.items()}


def frame_mean(values: torch.Tensor | None) -> float | None:
    """Mean over the frames where a value is defined (NaN: empty region); None if none is."""
    if values is None:
        return None
    values = values.flatten().double()
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else None


def jsonable(value: Any) -> Any:
    """Strict JSON: inf (an exact reproduction) as the string "inf", NaN as null."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
