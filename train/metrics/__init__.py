"""The paper's evaluation metrics: PSNR*, SSIM, LPIPS and FVD, in torch, weights from the user.

- PSNR and SSIM (equal to scikit-image's, DisCo's settings), the region scores and silhouette IoU
  (SynthWorld, known ground truth) live in `aa2.metrics`, because `python -m aa2 demo` scores its
  render with them and `aa2` never imports `train`; they are re-exported here.
- `lpips`: LPIPS with an AlexNet/VGG16 trunk built without torchvision, equal to the `lpips`
  package on the same weights.
- `fvd`: I3D features from a user-provided TorchScript detector and the Fréchet distance; its
  docstring documents the TikTok protocol of the tables.
- `protocol`: those protocol choices as data.

Nothing here imports the model code (`aa2.models`): metrics score frames, whoever made them.
"""

from aa2.metrics import *  # noqa: F403 -- PSNR, SSIM, regions, ground truth (see above)
from aa2.metrics import __all__ as _AA2_METRICS

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

__all__ = sorted([
    *_AA2_METRICS,
    "CLIP_LENGTH",
    "LPIPS",
    "MetricProtocol",
    "STANDARD",
    "TIKTOK",
    "feature_statistics",
    "frechet_distance",
    "frechet_video_distance",
    "fvd_from_features",
    "i3d_features",
    "load_i3d",
    "load_lpips",
    "video_clips",
])
