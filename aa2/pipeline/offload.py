"""Low-VRAM mode: only the part of the model that the current phase runs sits on the compute device.

A render never runs two of `AA2Model`'s four parts at once. Once per video the VAE encodes the
reference, CLIP embeds it and the ReferenceNet turns it into the reference bank; then, per clip, the
VAE encodes the conditions, the DenoisingNet (UNet, motion modules, pose modulation, object guider,
spatial blend) denoises, and the VAE decodes. With `offload="model"` each phase first moves the
parts it does not run to the offload device and only then its own part onto the compute device, so
the weights resident at any moment are one part's, not all four (`weight_footprint` counts them).

What the parts produce stays on the compute device: the reference bank and CLIP context, and each
clip's condition latents and features, which the sampler reads at every step. Parts move between
phases, never inside one, so the cost is a few transfers per clip (the DenoisingNet in and out once),
not per step. The idea is that of diffusers' model CPU offload, cut along AA2's phases.

Moves are lazy: a phase leaves its part where it is, and the next phase moves it off only if it needs
another part, so the VAE's decode of one clip and encode of the next cost no move. `rest()` ends a
render with every part parked (also after an error or a cancel), so the model stays usable.
"""

from __future__ import annotations

from typing import Callable, Literal, get_args

import torch
from torch import nn

from ..errors import AA2InputError

OffloadMode = Literal["none", "model"]
OFFLOAD_MODES: tuple[str, ...] = get_args(OffloadMode)
PARTS = ("image_encoder", "reference_net", "vae", "denoising_net")  # AA2Model's attributes

# Each phase of a render, in the order a render runs them, and the one part it runs.
PHASE_PART = {
    "reference latents": "vae",
    "reference context": "image_encoder",
    "reference features": "reference_net",
    "condition latents": "vae",
    "denoise": "denoising_net",  # also the pose and object features, which its own modules compute
    "decode": "vae",
}

MoveObserver = Callable[[str, bool], None]  # (part, now on the compute device) after each move


def check_offload(mode: str) -> None:
    if mode not in OFFLOAD_MODES:
        raise AA2InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {mode!r}")


class PartPlacement:
    """Where each part of an `AA2Model` is while one render runs.

    `device`: where the parts compute (None: where the DenoisingNet is now). `offload_device`: where
    parts rest in "model" mode. In "none" mode a given `device` takes the whole model there once;
    without one nothing ever moves, exactly as before the mode existed. As a context manager it ends
    with `rest()`, however the block ends.
    """

    def __init__(self, model: nn.Module, mode: OffloadMode = "none", device: torch.device | str | None = None,
                 offload_device: torch.device | str = "cpu", on_move: MoveObserver | None = None) -> None:
        check_offload(mode)
        self.model, self.mode, self.on_move = model, mode, on_move
        self.device = torch.device(device) if device is not None else next(model.denoising_net.parameters()).device
        self.offload_device = torch.device(offload_device)
        self.move_all = device is not None or mode == "model"
        self.on_device: dict[str, bool] = {}  # part -> where this placement last put it (unknown: absent)

    def __enter__(self) -> "PartPlacement":
        return self

    def __exit__(self, *exc_info) -> None:  # also on an error or a cancel: the model stays usable
        self.rest()

    def prepare(self, phase: str) -> None:
        """Make the part `phase` runs resident on the compute device (and, offloading, only it)."""
        wanted = PHASE_PART[phase]
        if not self.move_all:
            return
        if self.mode == "none":
            for part in PARTS:
                self._move(part, True)
            return
        for part in PARTS:  # off first, so two parts never share the device, even for a moment
            if part != wanted:
                self._move(part, False)
        self._move(wanted, True)

    def rest(self) -> None:
        """Where the mode says parts wait between renders: offloading, every part parked."""
        if self.mode == "model":
            for part in PARTS:
                self._move(part, False)

    def _move(self, part: str, onto_device: bool) -> None:
        if self.on_device.get(part) == onto_device:
            return
        getattr(self.model, part).to(self.device if onto_device else self.offload_device)
        self.on_device[part] = onto_device
        if self.on_move is not None:
            self.on_move(part, onto_device)


def part_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of weights (parameters and buffers) of each part of `model`, in the dtypes they have."""
    return {part: _module_bytes(getattr(model, part)) for part in PARTS}


def _module_bytes(module: nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_bytes(parts: dict[str, int], mode: OffloadMode) -> dict[str, int]:
    """Bytes of weights on the compute device during each phase, for parts of `parts` bytes."""
    check_offload(mode)
    if mode == "none":
        return {phase: sum(parts.values()) for phase in PHASE_PART}
    return {phase: parts[part] for phase, part in PHASE_PART.items()}


# Working memory of one guided DenoisingNet step besides the weights, per latent voxel of a clip
# (frames x h x w) at 2 bytes per element. Calibrated on the only GPU measurement so far (issue 12:
# 8253 MiB peak for 16 frames at 512x768 in fp16 with Moore-shaped weights, 4,883 MiB as `weight_footprint`
# counts them); to be replaced by measured values per size. Attention memory grows faster than
# the voxel count on paths without memory-efficient kernels, so this is a floor, not a promise.
WORKING_BYTES_PER_VOXEL_FP16 = (8253 - 4883) * 2**20 // (16 * 96 * 64)


def working_bytes(frames: int, height: int, width: int, dtype: torch.dtype) -> int:
    """Estimated activation memory of denoising a clip of `frames` frames at `height x width` pixels."""
    element = torch.empty((), dtype=dtype).element_size()
    return frames * (height // 8) * (width // 8) * WORKING_BYTES_PER_VOXEL_FP16 * element // 2


def choose_offload(free_bytes: int | None, parts: dict[str, int], working: int) -> OffloadMode:
    """"none" when every part and a clip's working memory fit in `free_bytes` (None: unknown, no GPU
    to spare: "none"), else "model", whose need is only the largest part plus the working memory."""
    if free_bytes is None or free_bytes >= sum(parts.values()) + working:
        return "none"
    return "model"
