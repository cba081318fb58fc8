"""Scoring frames against ground truth: PSNR*, SSIM, region PSNR and silhouette IoU, in torch.

- `psnr_ssim`: per-frame PSNR and SSIM, equal to scikit-image's functions (DisCo's settings, the
  paper's tables).
- `regions`: PSNR over the environment, the character and a band across its outline, and the
  generated character's silhouette against a clean background (SynthWorld, known ground truth).
- `ground_truth`: those scores of one rendered clip against a SynthWorld clip's truth — what
  `python -m aa2 demo` writes to metrics.json and `train.synthworld_eval` averages over clips.

They live in `aa2` (not `train`) because the demo scores its own render and `aa2` never imports
`train`; `train.metrics` re-exports them beside LPIPS and FVD, which need user-provided weights.
Nothing here imports the model code (`aa2.models`): metrics score frames, whoever made them.
"""

from .ground_truth import ENVIRONMENT_MARGIN_PX_AT_64, SCORES, Truth, frame_mean, jsonable, score_clip
from .psnr_ssim import psnr, quantize_8bit, ssim
from .regions import (
    BAND_INNER_PX_AT_64,
    BAND_OUTER_PX_AT_64,
    SILHOUETTE_OPENING,
    SILHOUETTE_THRESHOLD,
    character_band,
    dilate,
    environment_region,
    erode,
    estimate_silhouette,
    mask_iou,
    outline_agreement,
    region_psnr,
    scaled_radius,
)

__all__ = [
    "BAND_INNER_PX_AT_64",
    "BAND_OUTER_PX_AT_64",
    "ENVIRONMENT_MARGIN_PX_AT_64",
    "SCORES",
    "SILHOUETTE_OPENING",
    "SILHOUETTE_THRESHOLD",
    "Truth",
    "character_band",
    "dilate",
    "environment_region",
    "erode",
    "estimate_silhouette",
    "frame_mean",
    "jsonable",
    "mask_iou",
    "outline_agreement",
    "psnr",
    "quantize_8bit",
    "region_psnr",
    "scaled_radius",
    "score_clip",
    "ssim",
]
