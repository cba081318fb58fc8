"""Cheap checks that values are usable: no NaN or inf in a tensor, and where the first one is.

One NaN pixel in a reference image or one NaN weight turns every output frame NaN (saved black)
without any error from torch, so inputs and weights are checked once, before heavy work.
"""

from __future__ import annotations

import torch

from .errors import AA2InputError


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


def unit_range(images: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Images as float 0..1, the range every model input here was trained on.

    uint8 is divided by 255: its range is known, so the conversion is exact and unambiguous. A float
    image above 1.5 (or below -0.5) is refused rather than guessed: 0..255 floats used as 0..1 would
    be clamped to a white frame, and -1..1 to half black, both without a word.
    """
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise AA2InputError(f"{name} is an integer image ({str(images.dtype).removeprefix('torch.')}); expected "
                            "float 0..1 (or uint8 0..255): convert it where it was made")
    images = images.float()
    if images.numel() == 0:
        return images
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if high > 1.5 and high != float("inf"):
        raise AA2InputError(f"{name} holds values up to {high:.4g}, but images are float 0..1: it looks like 0..255. "
                            "Divide it by 255 where it was made (a script or custom node), or load it with a "
                            "standard image / video loader")
    if low < -0.5 and low != float("-inf"):
        raise AA2InputError(f"{name} holds values down to {low:.4g}, but images are float 0..1: if it is -1..1, "
                            "map it with (x + 1) / 2 where it was made")
    return images


class FiniteWatch:
    """Watches every sampling step's x0 for NaN or inf without making the CPU wait for the GPU.

    On the CPU the answer is read at once. On a GPU, reading it at once would stall the CPU at every
    step until that step's kernels finish, so the next step could not be queued while the GPU works
    (issue 12: no per-step host-device syncs). So there the flag is copied to host memory without
    blocking and read one step later, when the next step already waits in the queue behind it: a
    divergence is reported one step late (or at `flush`, at the end of a clip). `lag` forces either
    way (None: lag on CUDA tensors only)."""

    def __init__(self, lag: bool | None = None) -> None:
        self.lag = lag
        self._pending: tuple[int, torch.Tensor, object] | None = None

    def step(self, number: int, x0: torch.Tensor) -> int | None:
        """Look at step `number`'s x0; return the number of a step found non-finite, if any."""
        if not (x0.is_cuda if self.lag is None else self.lag):
            return None if is_finite(x0) else number
        low, high = torch.aminmax(x0.detach())
        host = torch.empty((), dtype=torch.bool, pin_memory=x0.is_cuda)
        host.copy_(torch.isfinite(low) & torch.isfinite(high), non_blocking=True)
        event = None
        if x0.is_cuda:
            event = torch.cuda.Event()
            event.record()
        found = self.flush()
        self._pending = (number, host, event)
        return found

    def flush(self) -> int | None:
        """Read the step still waiting to be read; its number if it was non-finite."""
        if self._pending is None:
            return None
        number, host, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()  # only that step's work, long since queued behind
        return None if bool(host) else number
