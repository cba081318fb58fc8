"""PSNR* and SSIM per frame, in torch, equal to scikit-image's (the paper's quantitative tables).

Animate Anyone 1 and 2 report TikTok numbers computed with DisCo's evaluation script
(Wang et al. 2024, `tool/metrics/ssim_l1_lpips_psnr.py`), so these functions reproduce what that
script computes, stated against scikit-image's own functions:

- **PSNR** is `skimage.metrics.peak_signal_noise_ratio(target, generated, data_range)`:
  `10 log10(R² / MSE)`, the MSE over all pixels *and* the three channels of one frame. DisCo's
  first release subtracted uint8 arrays, which wraps around; Animate Anyone's tables mark the
  corrected value "PSNR*". Here the difference is always taken in float64: the value is PSNR*.
  Identical frames give `inf` (as scikit-image; DisCo's script returned 100 instead).
- **SSIM** in DisCo is `structural_similarity(gray_gen, gray_gt)` with scikit-image's *defaults*
  on uint8 grayscale frames: a 7×7 uniform window (`gaussian_weights=False`), sample covariance
  (`use_sample_covariance=True`, i.e. /48), `K1=0.01, K2=0.03`, `data_range=255` (from the uint8
  dtype; 1.0 for our 0..1 frames is the same number), `channel_axis=None` on a grayscale image.
  The gray image is OpenCV's `COLOR_BGR2GRAY`: ITU-R BT.601 luma `0.299 R + 0.587 G + 0.114 B`
  (not scikit-image's `rgb2gray`, which uses BT.709 weights). `ssim(..., color="gray")` is this.
  `color="rgb"` is `channel_axis` over the three channels (the mean of per-channel SSIMs), and
  `gaussian_weights=True` is Wang et al.'s 11-tap σ=1.5 window with population covariance
  (scikit-image's recipe "to match Wang et al."); both are offered for other tables.

Departures, and why:
- scikit-image filters the whole image (with a mirrored border) and then crops `(win-1)/2` pixels
  from each side before averaging; that crop removes exactly the pixels whose window reached the
  border, so a *valid* convolution gives the same numbers without choosing a padding mode.
- Everything runs in float64, as scikit-image does for uint8 inputs; agreement is to ~1e-12.
- DisCo read its frames from 8-bit PNGs. `quantize_8bit` rounds 0..1 frames to those 256 levels
  and is applied by the evaluation before these metrics; the functions themselves do not round.

Layouts: frames `[F, 3, H, W]` or batched `[B, F, 3, H, W]` (any leading dims), float 0..1.
Results are per frame: `[F]` or `[B, F]`, float64.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as nnf
from einops import rearrange

from ..errors import AA2InputError

# OpenCV's RGB→gray (cv::COLOR_BGR2GRAY / RGB2GRAY): ITU-R BT.601 luma, what DisCo's SSIM used.
BT601_LUMA = (0.299, 0.587, 0.114)
GAUSSIAN_SIGMA = 1.5  # Wang et al. 2004; scikit-image truncates at 3.5 sigma, an 11-tap window
GAUSSIAN_TRUNCATE = 3.5


def quantize_8bit(frames: torch.Tensor) -> torch.Tensor:
    """Round 0..1 frames to the 256 levels an 8-bit PNG keeps (what DisCo's script read back)."""
    return torch.round(frames.clamp(0, 1) * 255) / 255


def psnr(generated: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each frame, in dB (the tables' PSNR*).

    Args:
        generated, target: `[..., 3, H, W]` frames of one shape, values in `0..data_range`.
        data_range: the peak value R in `10 log10(R² / MSE)`; 1.0 for 0..1 frames.

    Returns:
        `[...]` float64, one value per frame; `inf` where a frame is reproduced exactly.
    """
    gen, tgt = _check_pair(generated, target, min_side=1)
    err = (gen - tgt).pow(2).mean(dim=(-3, -2, -1))
    # log10(R²) - log10(mse): inf for mse == 0, like scikit-image (without its divide warning)
    return 10.0 * (2.0 * math.log10(data_range) - torch.log10(err))


def ssim(
    generated: torch.Tensor,
    target: torch.Tensor,
    *,
    color: Literal["gray", "rgb"] = "gray",
    data_range: float = 1.0,
    gaussian_weights: bool = False,
    win_size: int | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
    use_sample_covariance: bool | None = None,
) -> torch.Tensor:
    """Mean structural similarity of each frame, as `skimage.metrics.structural_similarity`.

    Args:
        generated, target: `[..., 3, H, W]` frames of one shape, values in `0..data_range`.
        color: "gray" compares BT.601 luma (DisCo's protocol); "rgb" averages the SSIM of the
            three channels (scikit-image's `channel_axis`).
        data_range: R in the constants `C1 = (k1 R)²`, `C2 = (k2 R)²`.
        gaussian_weights: False for the uniform window (scikit-image's default, DisCo); True for
            the σ=1.5 Gaussian window of Wang et al.
        win_size: side of the uniform window (odd, default 7); the Gaussian one is always 11.
        use_sample_covariance: default True for the uniform window and False for the Gaussian
            one (scikit-image's default is True for both; pass it to match either recipe).

    Returns:
        `[...]` float64, one value per frame.
    """
    if color not in ("gray", "rgb"):
        raise AA2InputError(f"ssim: color must be 'gray' or 'rgb', got {color!r}.")
    gaussian_size = 2 * int(GAUSSIAN_TRUNCATE * GAUSSIAN_SIGMA + 0.5) + 1
    if win_size is None:
        win_size = gaussian_size if gaussian_weights else 7
    if gaussian_weights and win_size != gaussian_size:
        # scikit-image filters with the 11-tap Gaussian whatever win_size says and only crops by
        # win_size: a mixture no table uses, so it is refused rather than imitated
        raise AA2InputError(
            f"ssim: the Gaussian window is {gaussian_size} wide; leave win_size unset."
        )
    if win_size < 3 or win_size % 2 == 0:
        raise AA2InputError(f"ssim: win_size must be an odd number >= 3, got {win_size}.")
    if use_sample_covariance is None:
        use_sample_covariance = not gaussian_weights
    gen, tgt = _check_pair(generated, target, min_side=win_size)
    lead = gen.shape[:-3]
    if color == "gray":
        luma = gen.new_tensor(BT601_LUMA).view(3, 1, 1)
        gen, tgt = (gen * luma).sum(-3, keepdim=True), (tgt * luma).sum(-3, keepdim=True)
    channels = gen.shape[-3]
    x = rearrange(gen, "... c h w -> (...) c h w")
    y = rearrange(tgt, "... c h w -> (...) c h w")

    window = _window_1d(win_size, gaussian_weights, x.dtype, x.device)

    def local_mean(img: torch.Tensor) -> torch.Tensor:
        # separable valid filter per channel: the crop scikit-image applies afterwards removes
        # exactly the border pixels whose window would have needed padding
        img = nnf.conv2d(img, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        return nnf.conv2d(img, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)

    n = win_size * win_size
    cov_norm = n / (n - 1) if use_sample_covariance else 1.0
    ux, uy = local_mean(x), local_mean(y)
    vx = cov_norm * (local_mean(x * x) - ux * ux)
    vy = cov_norm * (local_mean(y * y) - uy * uy)
    vxy = cov_norm * (local_mean(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # mean over pixels, then over channels: scikit-image's channel_axis averages per-channel means
    per_frame = s.mean(dim=(-3, -2, -1))
    return per_frame.reshape(lead)


def _window_1d(size: int, gaussian: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-D window: uniform (`uniform_filter`) or scipy.ndimage's sampled Gaussian."""
    if not gaussian:
        return torch.full((size,), 1.0 / size, dtype=dtype, device=device)
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w = torch.exp(-0.5 * (x / GAUSSIAN_SIGMA) ** 2)
    return w / w.sum()


def _check_pair(
    generated: torch.Tensor, target: torch.Tensor, *, min_side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two frame tensors and return them as float64 (scikit-image computes in float64)."""
    if not (isinstance(generated, torch.Tensor) and isinstance(target, torch.Tensor)):
        raise AA2InputError("metrics expect torch tensors of frames [..., 3, H, W] in 0..1.")
    if generated.shape != target.shape:
        raise AA2InputError(
            f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ in shape: "
            "resize the generated frames to the ground truth's size before scoring."
        )
    if generated.ndim < 4 or generated.shape[-3] != 3:
        raise AA2InputError(
            f"frames must be [F, 3, H, W] or [B, F, 3, H, W], got {tuple(generated.shape)}."
        )
    if min(generated.shape[-2:]) < min_side:
        raise AA2InputError(
            f"frames of {generated.shape[-2]}x{generated.shape[-1]} are smaller than the "
            f"{min_side}-pixel SSIM window: score larger frames or pass a smaller odd win_size."
        )
    return generated.to(torch.float64), target.to(torch.float64)
