"""The paper's evaluation metrics: PSNR*, SSIM, LPIPS and FVD, in torch, weights from the user.

- `psnr_ssim`: per-frame PSNR and SSIM, equal to scikit-image's functions (DisCo's settings).
- `lpips`: LPIPS with an AlexNet/VGG16 trunk built without torchvision, equal to the `lpips`
  package on the same weights.
- `fvd`: I3D features from a user-provided TorchScript detector and the Fréchet distance; its
  docstring documents the TikTok protocol of the tables.
- `protocol`: those protocol choices as data.
- `regions`: PSNR over the environment, the character and a band across its outline, and the
  generated character's silhouette against a clean background (SynthWorld, known ground truth).

Nothing here imports the model code (`aa2.models`): metrics score frames, whoever made them.
"""

from .fvd import (
    CLIP_LENGTH,
    feature_statistics,
    frechet_distance,
    frechet_video_distance,
    fvd_from_features,
    i3d_features,
    load_i3d,
    video_clips,
)
from .lpips import LPIPS, load_lpips
from .protocol import STANDARD, TIKTOK, MetricProtocol
from .psnr_ssim import psnr, quantize_8bit, ssim
from .regions import (
    SILHOUETTE_THRESHOLD,
    character_band,
    dilate,
    environment_region,
    erode,
    estimate_silhouette,
    mask_iou,
    region_psnr,
    scaled_radius,
)

__all__ = [
    "CLIP_LENGTH",
    "LPIPS",
    "MetricProtocol",
    "SILHOUETTE_THRESHOLD",
    "STANDARD",
    "TIKTOK",
    "character_band",
    "dilate",
    "environment_region",
    "erode",
    "estimate_silhouette",
    "feature_statistics",
    "frechet_distance",
    "frechet_video_distance",
    "fvd_from_features",
    "i3d_features",
    "load_i3d",
    "load_lpips",
    "mask_iou",
    "psnr",
    "quantize_8bit",
    "region_psnr",
    "scaled_radius",
    "ssim",
    "video_clips",
]
