"""Structured depth: the driving person's depth, kept only on the skeleton (paper §3.4).

A skeleton says where the limbs are but not which is in front; a depth map says that but also
carries the driver's body shape, which is exactly what a character of another build must not
inherit. The paper's answer: "we binarize the skeleton image to obtain a mask, and keep the depth
only inside it" — depth sampled along the bones, shape-free.

Per frame this function
1. binarises the rendered skeleton: a pixel belongs to it if any channel is above `threshold`
   (optionally dilated by a square of radius `dilate`, to widen thin hand lines);
2. takes one channel of the depth (any preprocessor's output: Depth Anything, MiDaS, ZoeDepth,
   Sapiens) and converts it to *nearness* according to `convention`, which is required because
   preprocessors disagree and the values alone cannot tell:
   - "depth":   larger = farther (metric depth, ZoeDepth, Sapiens' depth head);
   - "inverse": larger = nearer (disparity: MiDaS and Depth Anything, and the grey images
     ComfyUI depth preprocessor nodes output, where near is white);
3. normalises nearness over the kept pixels of that frame to 0..1 — **near is bright** (1 = the
   nearest kept pixel, 0 = the farthest) — and sets everything outside the mask to 0.

Departures, and why:
- Near-is-bright was chosen because it matches the grey depth images users already have from
  ComfyUI's depth nodes. The paper does not state its convention.
- Per-frame normalisation discards the absolute distance, so a driver walking toward the camera
  reads the same as one standing still; what the guider needs is the order of limbs within a
  frame, and absolute scale differs between preprocessors anyway.
- The farthest kept pixel becomes 0, the background value. `floor` (e.g. 0.1) maps the kept
  region to [floor, 1] instead, so the whole skeleton stays visible; 0 follows "normalise to
  0..1" literally. A frame whose kept depth is constant is set to 1 inside the mask.
- `threshold` defaults to 8/255 rather than "any non-zero" so JPEG and resampling noise in a
  black background does not enter the mask; every OpenPose colour is far brighter (≥ 153/255 on
  its strongest channel).

Output is `[F, 3, H, W]` (one channel repeated), because the pose guider takes 3-channel images.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as nnf
from einops import rearrange, repeat

from ..errors import AA2InputError, size_text

DepthConvention = Literal["depth", "inverse"]
DEFAULT_THRESHOLD = 8 / 255


def skeleton_mask(skeleton: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, dilate: int = 0) -> torch.Tensor:
    """Binarise rendered skeletons: `[F, C, H, W]` 0..1 → bool `[F, H, W]`, any channel > threshold."""
    _check_images(skeleton, "skeleton")
    if dilate < 0:
        raise AA2InputError(f"dilate must be >= 0 pixels; got {dilate}.")
    mask = (skeleton > threshold).any(dim=1)
    if dilate:
        mask = nnf.max_pool2d(mask[:, None].float(), 2 * dilate + 1, stride=1, padding=dilate)[:, 0] > 0
    return mask


def structured_depth(
    skeleton: torch.Tensor,
    depth: torch.Tensor,
    *,
    convention: DepthConvention,
    threshold: float = DEFAULT_THRESHOLD,
    dilate: int = 0,
    resize: bool = False,
    floor: float = 0.0,
    channel: int = 0,
) -> torch.Tensor:
    """Depth kept inside the skeleton mask and normalised per frame (paper §3.4).

    skeleton: `[F, 3, H, W]` 0..1 rendered skeletons (from `render_skeleton` or a pose node).
    depth: `[F, H, W]`, `[F, 1, H, W]` or `[F, C, H, W]` (channel `channel` is used), any range.
    convention: "depth" (larger = farther) or "inverse" (larger = nearer); see the module doc.
    resize: if the depth's H × W differs from the skeleton's, resize it (bilinear) instead of
        raising.
    floor: kept pixels map to [floor, 1]; outside the mask is always 0.
    Returns `[F, 3, H, W]` float 0..1, near = bright.
    """
    if convention not in ("depth", "inverse"):
        raise AA2InputError(
            f"convention must be 'depth' (larger = farther) or 'inverse' (larger = nearer, as MiDaS / "
            f"Depth Anything output); got {convention!r}."
        )
    if not 0.0 <= floor < 1.0:
        raise AA2InputError(f"floor must be in [0, 1); got {floor}.")
    mask = skeleton_mask(skeleton, threshold, dilate)
    depth = _one_channel(depth, channel)
    if depth.shape[0] != mask.shape[0]:
        raise AA2InputError(
            f"Frame counts differ: skeleton {tuple(skeleton.shape)} has {mask.shape[0]} frames, depth "
            f"{tuple(depth.shape)} has {depth.shape[0]}. Both must come from the same driving frames."
        )
    if depth.shape[-2:] != mask.shape[-2:]:
        if not resize:
            raise AA2InputError(
                f"Sizes differ: skeleton {tuple(skeleton.shape)} is {tuple(mask.shape[-2:])} (H, W), depth "
                f"{tuple(depth.shape)} is {tuple(depth.shape[-2:])}. Pass resize=True to resize the depth "
                "to the skeleton's size, or resize one of them first."
            )
        _check_same_aspect(depth.shape[-2:], mask.shape[-2:])
        depth = nnf.interpolate(depth[:, None], size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    depth = depth.to(device=mask.device, dtype=torch.float32)
    if not torch.isfinite(depth[mask]).all():
        raise AA2InputError("Depth has NaN or infinite values inside the skeleton mask.")
    near = depth if convention == "inverse" else -depth

    big = torch.finfo(near.dtype).max
    lo = torch.where(mask, near, big).amin(dim=(1, 2), keepdim=True)
    hi = torch.where(mask, near, -big).amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    # Flat frames (span 0) read as all-near; empty frames are masked to 0 below anyway.
    scaled = torch.where(span > 0, (near - lo) / span.clamp_min(1e-12), torch.ones_like(near))
    out = torch.where(mask, floor + (1.0 - floor) * scaled.clamp(0, 1), torch.zeros_like(near))
    return repeat(out, "f h w -> f c h w", c=3).contiguous()


# Depth preprocessors resize to their own resolution and round it (Depth Anything to multiples of 14),
# which moves the aspect ratio by up to about 1 %; a larger change is depth of other frames or a crop.
ASPECT_TOLERANCE = 0.03


def _check_same_aspect(depth_size, skeleton_size) -> None:
    """Depth of another shape would be stretched onto the skeleton, so each joint would take the
    depth of some other place in the frame: refuse it rather than resize."""
    (dh, dw), (sh, sw) = map(int, depth_size), map(int, skeleton_size)
    if abs((dw / dh) / (sw / sh) - 1) > ASPECT_TOLERANCE:
        raise AA2InputError(
            f"the depth maps are {size_text(dh, dw)} but the skeleton is {size_text(sh, sw)}: depth of another "
            "aspect ratio would be stretched and no longer line up with the body. Make the depth from the same "
            "driving frames (at their size or aspect ratio), or crop / resize frames, skeleton and depth together."
        )


def _check_images(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AA2InputError(f"{name} must be a tensor [F, C, H, W]; got {shape}.")
    if x.shape[0] == 0:
        raise AA2InputError(f"{name} has no frames: shape {tuple(x.shape)}.")


def _one_channel(depth: object, channel: int) -> torch.Tensor:
    if not isinstance(depth, torch.Tensor) or depth.ndim not in (3, 4):
        shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise AA2InputError(f"depth must be a tensor [F, H, W] or [F, C, H, W]; got {shape}.")
    if depth.ndim == 3:
        return depth.float()
    if not 0 <= channel < depth.shape[1]:
        raise AA2InputError(f"channel {channel} does not exist in depth of shape {tuple(depth.shape)} ([F, C, H, W]).")
    return rearrange(depth[:, channel : channel + 1].float(), "f 1 h w -> f h w")
