"""The settings the paper's TikTok table implies for each metric, as data (see `fvd` for sources).

Animate Anyone's tables follow DisCo's evaluation code; `TIKTOK` writes down what that code does,
so `train.evaluate` reads its choices from one place and a reader can see every departure.
`STANDARD` is the same metrics as their authors define them (LPIPS on −1..1 inputs), for runs
that need not match earlier tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricProtocol:
    """How frames are scored. Field names follow the metric functions' arguments."""

    quantize_8bit: bool = True  # DisCo scored 8-bit PNGs read back from disk
    ssim_color: Literal["gray", "rgb"] = "gray"  # cv2 BGR2GRAY, then scikit-image defaults
    ssim_gaussian_weights: bool = False  # 7x7 uniform window, sample covariance
    lpips_net: Literal["alex", "vgg"] = "vgg"  # DisCo: lpips.LPIPS(net="vgg")
    lpips_rescale: bool = False  # DisCo fed ToTensor() 0..1 images without normalize=True
    fvd_clip_length: int = 16
    fvd_clip_stride: int = 1  # DisCo: one 16-frame clip starting at every frame
    fvd_unbiased_covariance: bool = False  # StyleGAN-V's detector and statistics (see fvd.py)


TIKTOK = MetricProtocol()
STANDARD = MetricProtocol(lpips_rescale=True)
