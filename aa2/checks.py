"""Cheap checks that values are usable: no NaN or inf in a tensor, and where the first one is.

One NaN pixel in a reference image or one NaN weight turns every output frame NaN (saved black)
without any error from torch, so inputs and weights are checked once, before heavy work.
"""

from __future__ import annotations

import torch


def is_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf in `tensor` (integer tensors always pass). Only its extremes are checked, as
    min and max propagate NaN: one pass with no boolean copy, on a CPU many times faster than
    `torch.isfinite(tensor).all()`, which matters for the 2 billion weights of an SD1.5 model."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def first_non_finite(frames: torch.Tensor) -> int | None:
    """Index along the first axis of the first slice holding NaN or inf; None if there is none."""
    if is_finite(frames):
        return None
    bad = ~torch.isfinite(frames.detach().reshape(frames.shape[0], -1)).all(dim=1)
    return int(bad.nonzero()[0, 0])
