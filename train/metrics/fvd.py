"""Fréchet Video Distance (Unterthiner et al. 2018) over I3D features, as the paper's FVD column.

FVD compares two *sets* of clips: every clip becomes one feature vector of a Kinetics-400 I3D
network, each set is summarised by the mean `μ` and covariance `Σ` of its vectors, and

    FVD = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}).

**Network and preprocessing (StyleGAN-V's protocol).** The detector is StyleGAN-V's
`i3d_torchscript.pt` (Skorokhodov et al. 2022), a TorchScript reproduction of the TF-Hub I3D that
the original FVD code uses. The user downloads it once (it is linked from StyleGAN-V's
`src/metrics/frechet_video_distance.py`) and passes its path; nothing is fetched at run time.
Clips go in as StyleGAN-V feeds them: uint8 values `[B, 3, T, H, W]`, called with
`rescale=True, resize=True, return_features=True`, so the detector itself maps 0..255 to −1..1,
resizes to 224×224 and returns its 400 pre-softmax features. Clips are 16 frames. The covariance
is the population one (divided by N), as StyleGAN-V's `FeatureStats`; `unbiased=True` divides by
N − 1 as `np.cov` (DisCo) does.

**Matrix square root.** Only the trace of `(Σ_r Σ_g)^{1/2}` is needed, and it equals
`Tr((A Σ_g A)^{1/2})` with `A = Σ_r^{1/2}`: both products have the same eigenvalues, and
`A Σ_g A` is symmetric positive semi-definite, so a symmetric eigendecomposition (`eigh`) gives it
with real, clamped-at-zero eigenvalues. This avoids `scipy.linalg.sqrtm`'s general Schur
iteration on a non-symmetric product, which returns complex noise (and, for the rank-deficient
covariances of fewer clips than features, can lose accuracy); in float64 the two agree to ~1e-9
relative on well-conditioned inputs (tested).

**The TikTok protocol of the paper's tables.** Animate Anyone (Hu et al. 2023) and Animate
Anyone 2 (Hu et al. 2025, §4) report SSIM, PSNR*, LPIPS and FVD on the TikTok benchmark next to
numbers taken from DisCo and MagicAnimate, which compute them with DisCo's released evaluation
code. Neither Animate Anyone paper spells out the split, the resolution or the clip sampling
(we found no statement); what follows is DisCo's code and its issue tracker:
- *Ground truth*: the test videos' own frames. Each test video is re-rendered from a reference
  frame of the same video, driven by its own poses, and compared frame by frame with itself
  (which frame DisCo takes as the reference is set in its data loader; not restated here).
- *Test videos*: DisCo's 10 TikTok-style test sequences (TikTok 335–340 plus sequences DisCo's
  authors collected, shipped in DisCo's TSV data), disjoint in identity from training. Whether
  Animate Anyone used exactly these is not stated.
- *Frames and resolution*: every generated frame, resized to the ground truth's size, scored
  per frame and averaged; DisCo's own runs are 256×256. Animate Anyone's evaluation resolution is
  not stated (unclear).
- *FVD*: 16-frame clips of consecutive frames, one clip starting at *every* frame (DisCo writes a
  GIF per start frame), real clips from the ground truth, generated from the render. DisCo's
  detector is a different I3D port (`i3d_pretrained_400.pt`, 400 logits, inputs PIL-bicubic
  resized to 224 and scaled to −1..1, `np.cov`). FVD values from different I3D ports or clip
  samplings are not comparable to each other; compare runs scored by this module with each other.
  `video_clips(frames, 16, stride=1)` reproduces DisCo's clip sampling.

Layouts: clips `[N, T, 3, H, W]` float 0..1 (aa2's frame layout with a clip axis in front);
features `[N, D]` float64.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from aa2.errors import AA2InputError, AA2WeightsError

CLIP_LENGTH = 16  # frames per FVD clip, as StyleGAN-V and DisCo use
I3D_FILE = "i3d_torchscript.pt"
I3D_HINT = (
    f"Download StyleGAN-V's Kinetics-400 I3D detector '{I3D_FILE}' (linked from "
    "universome/stylegan-v, src/metrics/frechet_video_distance.py) and pass its path; "
    "nothing is downloaded at run time."
)


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load the user's I3D TorchScript file, in eval mode on `device`.

    Raises:
        AA2WeightsError: the file is missing or is not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(f"I3D detector for FVD not found: {path}. {I3D_HINT}")
    try:
        with warnings.catch_warnings():
            # torch 2.9+ marks TorchScript deprecated; the published detector exists only as one
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.load.*", category=DeprecationWarning
            )
            detector = torch.jit.load(str(path), map_location=device)
    except Exception as err:  # noqa: BLE001 - any unreadable archive is one message for the user
        raise AA2WeightsError(
            f"{path} is not a TorchScript I3D detector ({err}). {I3D_HINT}"
        ) from None
    return detector.eval()


def video_clips(
    frames: torch.Tensor, clip_length: int = CLIP_LENGTH, stride: int | None = None
) -> torch.Tensor:
    """Cut one video into clips of consecutive frames.

    Args:
        frames: `[F, 3, H, W]`.
        clip_length: frames per clip (16 in the protocol).
        stride: frames between clip starts; default `clip_length` (non-overlapping clips);
            1 is DisCo's sampling, one clip starting at every frame. A tail shorter than a clip
            is dropped.

    Returns:
        `[N, clip_length, 3, H, W]`, a view of `frames`; N may be 0 for a short video.
    """
    stride = clip_length if stride is None else stride
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise AA2InputError(f"video_clips expects frames [F, 3, H, W], got {tuple(frames.shape)}.")
    if clip_length < 1 or stride < 1:
        raise AA2InputError(f"clip_length and stride must be >= 1, got {clip_length} and {stride}.")
    if frames.shape[0] < clip_length:
        return frames.new_empty((0, clip_length, *frames.shape[1:]))
    # unfold puts the window last: [N, 3, H, W, T] -> [N, T, 3, H, W]
    return rearrange(frames.unfold(0, clip_length, stride), "n c h w t -> n t c h w")


@torch.no_grad()
def i3d_features(
    detector: torch.nn.Module,
    clips: torch.Tensor,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """I3D features of each clip, computed in batches the way StyleGAN-V calls the detector.

    Args:
        detector: from `load_i3d`.
        clips: `[N, T, 3, H, W]` float 0..1 (T = 16 in the protocol; any H, W: the detector
            resizes to 224×224).
        batch_size: clips per detector call; results do not depend on it.
        device: where the detector runs; default the device of its first parameter or buffer.

    Returns:
        `[N, D]` float64 on the CPU (D = 400 for the real detector).
    """
    if clips.ndim != 5 or clips.shape[2] != 3:
        raise AA2InputError(
            f"i3d_features expects clips [N, T, 3, H, W], got {tuple(clips.shape)}."
        )
    if batch_size < 1:
        raise AA2InputError(f"batch_size must be >= 1, got {batch_size}.")
    if device is None:
        tensor = next(iter(detector.parameters()), None)
        if tensor is None:
            tensor = next(iter(detector.buffers()), None)
        device = tensor.device if tensor is not None else torch.device("cpu")
    out = []
    for start in range(0, clips.shape[0], batch_size):
        chunk = clips[start : start + batch_size]
        # StyleGAN-V hands the detector uint8 videos (both real and generated ones are quantised
        # to 8 bits), so generated frames are rounded the same way before the call
        video = torch.round(chunk.float().clamp(0, 1) * 255).to(torch.uint8)
        video = rearrange(video, "n t c h w -> n c t h w").to(device)
        feats = detector(video, rescale=True, resize=True, return_features=True)
        out.append(feats.detach().to("cpu", torch.float64))
    if not out:
        raise AA2InputError("i3d_features got no clips: videos shorter than one clip give none.")
    return torch.cat(out)


def feature_statistics(
    features: torch.Tensor | np.ndarray, *, unbiased: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `[D]` and covariance `[D, D]` (float64) of features `[N, D]`.

    `unbiased=False` divides by N (StyleGAN-V), True by N − 1 (`np.cov`, DisCo).
    """
    x = torch.as_tensor(features).to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise AA2InputError(f"feature_statistics needs [N >= 2, D] features, got {tuple(x.shape)}.")
    mu = x.mean(0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - (1 if unbiased else 0))
    return mu, sigma


def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64.

    `Tr((Σ1 Σ2)^{1/2})` is computed as `Tr((A Σ2 A)^{1/2})`, `A = Σ1^{1/2}`, by symmetric
    eigendecompositions with negative round-off eigenvalues clamped to zero.
    """
    m1, m2 = (torch.as_tensor(m).to(torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s).to(torch.float64) for s in (sigma1, sigma2))
    if (
        m1.ndim != 1
        or m1.shape != m2.shape
        or s1.shape != (m1.shape[0],) * 2
        or s2.shape != s1.shape
    ):
        raise AA2InputError(
            "frechet_distance needs means [D] and covariances [D, D] of one D; got "
            f"{tuple(m1.shape)}, {tuple(s1.shape)}, {tuple(m2.shape)}, {tuple(s2.shape)}."
        )
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2  # covariances are symmetric; remove round-off skew
    vals, vecs = torch.linalg.eigh(s1)
    root1 = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    inner = root1 @ s2 @ root1
    inner = (inner + inner.T) / 2
    tr_covmean = torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum()
    diff = m1 - m2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)


def fvd_from_features(
    real: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray, *, unbiased: bool = False
) -> float:
    """FVD between two feature sets `[N_r, D]` and `[N_g, D]`."""
    return frechet_distance(
        *feature_statistics(real, unbiased=unbiased),
        *feature_statistics(generated, unbiased=unbiased),
    )


def frechet_video_distance(
    detector: torch.nn.Module,
    real_clips: torch.Tensor,
    generated_clips: torch.Tensor,
    *,
    batch_size: int = 8,
    unbiased: bool = False,
) -> float:
    """FVD between real and generated clips `[N, T, 3, H, W]` (0..1), features from `detector`."""
    return fvd_from_features(
        i3d_features(detector, real_clips, batch_size=batch_size),
        i3d_features(detector, generated_clips, batch_size=batch_size),
        unbiased=unbiased,
    )
