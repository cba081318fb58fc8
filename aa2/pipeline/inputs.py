"""What an animation is made from, and how it is sampled — checked before any heavy work.

Layouts are aa2's core ones: frames `[F, 3, H, W]` float 0..1, masks `[F, H, W]`. The ComfyUI nodes
and the CLI convert at their boundary.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..checks import first_non_finite, is_finite
from ..errors import AA2InputError, setting_name, size_text, worded
from ..models.image_encoder import CLIP_CROPS, ClipCrop
from ..sampling.registry import check_sampler_name, check_sampler_steps
from .offload import OffloadMode, check_offload
from .vae_codec import AUTO, DEFAULT_CHUNK

EnvironmentMode = Literal["auto", "input", "blend", "input+blend", "off"]
ENVIRONMENT_MODES: tuple[str, ...] = get_args(EnvironmentMode)
log = logging.getLogger("aa2")


# diffusers' multistep DPM-Solver and UniPC, asked for as many steps as the schedule has timesteps,
# quietly make every step timestep 1 (measured with diffusers 0.42.1); one fewer is fine.
SAMPLERS_BELOW_TRAIN_STEPS = ("dpmpp_2m", "unipc")  # Karras sigmas walk 1000 steps fine


def match_pose_length(frames: torch.Tensor, pose_frames: int, name: str, *, trim: bool = False) -> torch.Tensor:
    """`frames [F, ...]` with exactly one frame per pose frame.

    A longer sequence is refused unless `trim` (then its first `pose_frames` are kept, said in the
    log): cutting without a word hid a driving video that did not belong to the pose, whose
    environment then moved out of step with the character. A shorter one is always refused.
    """
    count = int(frames.shape[0])
    if count == pose_frames:
        return frames
    if count > pose_frames and trim:
        log.warning("%s has %d frames, the pose %d: using the %s's first %d", name, count, pose_frames, name,
                    pose_frames)
        return frames[:pose_frames]
    shortest = min(count, pose_frames)
    switch = (f" or turn on the sampler's cut_longer_inputs to use its first {pose_frames}," if count > pose_frames
              else "")
    fix = worded(
        comfyui="Load the same frame range for both (VideoHelperSuite's frame_load_cap / skip_first_frames),"
                f"{switch} or cut the longer one with Image From Batch (batch_index 0, length {shortest}).",
        cli=f"Trim the longer one, or pass --max-frames {shortest} to use the first {shortest} of each.",
    )
    raise AA2InputError(f"{name} has {count} frames but the pose has {pose_frames}: every sequence needs one "
                        f"frame per output frame. {fix}")


@dataclass
class AnimationInputs:
    """One character, one driving sequence.

    `pose`: skeleton maps, one per output frame. `depth`: structured depth maps (optional).
    `environment`: the driving video's frames; `mask`: the character's *shape-agnostic* mask
    (`aa2.conditioning.masks.shape_agnostic_mask`), which says what of the environment to remove.
    `objects`: the object sequence (driving frames cut out by the object masks), optional.
    """

    reference: torch.Tensor  # [3, H_ref, W_ref]
    pose: torch.Tensor  # [F, 3, H, W]
    depth: torch.Tensor | None = None
    environment: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    objects: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.pose.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pose.shape[-2]), int(self.pose.shape[-1])

    def validate(self) -> None:
        if self.reference.ndim != 3 or self.reference.shape[0] != 3:
            raise AA2InputError(f"reference must be one RGB image [3, H, W], got {tuple(self.reference.shape)}")
        self._check_finite()
        if self.pose.ndim != 4 or self.pose.shape[1] != 3 or self.pose.shape[0] == 0:
            raise AA2InputError(f"pose must be skeleton frames [F, 3, H, W] with F >= 1, got {tuple(self.pose.shape)}")
        height, width = self.size
        if height % 64 or width % 64:
            raise AA2InputError(
                f"frames are {size_text(height, width)}; the size must be a multiple of 64. Resize the pose, "
                "environment, mask and object frames together, e.g. to "
                f"{size_text(max(64, round(height / 64) * 64), max(64, round(width / 64) * 64))}"
            )
        for name in ("depth", "environment", "objects"):
            frames = getattr(self, name)
            if frames is None:
                continue
            match_pose_length(frames, self.frames, name)
            if tuple(frames.shape) != tuple(self.pose.shape):
                got = size_text(*frames.shape[-2:]) if frames.ndim == 4 else f"shaped {tuple(frames.shape)}"
                raise AA2InputError(
                    f"{name} frames are {got} but the pose is {size_text(height, width)} [F, 3, H, W]: every "
                    "sequence needs the pose's frame count and size"
                )
        if (self.environment is None) != (self.mask is None):
            given, missing = ("environment", "mask") if self.mask is None else ("mask", "environment")
            raise AA2InputError(
                f"{given} was given without {missing}: the environment is the driving video with the character's "
                "(shape-agnostic) mask removed, so both are needed, or neither"
            )
        if self.mask is not None:
            if self.mask.ndim == 3:
                match_pose_length(self.mask, self.frames, "mask")
            if tuple(self.mask.shape) != (self.frames, height, width):
                got = size_text(*self.mask.shape[-2:]) if self.mask.ndim == 3 else f"shaped {tuple(self.mask.shape)}"
                raise AA2InputError(f"mask is {got} but the pose is {size_text(height, width)}: one mask "
                                    "[F, H, W] per pose frame, at its size")
            if not bool((self.mask > 0.5).any()):
                raise AA2InputError(
                    "the character mask is empty in every frame: segment the character (ObjectSegment / SAM2) "
                    "or check that the mask is not inverted"
                )

    def _check_finite(self) -> None:
        """One NaN or inf pixel would turn every output frame NaN (saved black) without a word."""
        if not is_finite(self.reference):
            raise AA2InputError("the reference image holds NaN or infinite values: check how it was made or loaded")
        for name in ("pose", "depth", "environment", "mask", "objects"):
            frames = getattr(self, name)
            index = None if frames is None or frames.ndim == 0 else first_non_finite(frames)
            if index is not None:
                raise AA2InputError(f"{name} frame {index} holds NaN or infinite values: check how the {name} "
                                    "frames were made or loaded")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample. The defaults follow the checkpoint: sampler "default" is DDIM under its schedule."""

    steps: int = 20
    cfg: float = 3.5  # Moore-AnimateAnyone's default guidance scale
    sampler: str = "default"  # any of aa2.sampling.registry.SAMPLER_CHOICES; "default": DDIM
    seed: int = 0
    clip_length: int | None = None  # None: what the motion modules were trained on (16)
    motion_frames: int = 1  # frames of the previous clip carried as latents (the paper uses 1)
    overlap: int = 0  # frames re-generated and cross-faded between clips
    environment: EnvironmentMode = "auto"
    paste_environment: bool = False  # put the exact driving pixels back outside the feathered mask
    feather: int = 8  # pixels of soft edge for pasting
    vae_chunk: int = DEFAULT_CHUNK  # frames per VAE call; 0: on a GPU as many as fit under the run's peak so far, 1 on the CPU
    clip_crop: ClipCrop = "squash"  # how CLIP sees the reference (aa2.models.image_encoder)
    offload: OffloadMode = "none"  # "model": one part on the device at a time (aa2.pipeline.offload)

    @property
    def frames_per_vae_call(self) -> int:
        """`vae_chunk`, except that low-VRAM mode makes the automatic choice one frame per call: its
        user asked for the lowest peak, not for the VAE to fill what the other parts left free."""
        return 1 if self.vae_chunk == AUTO and self.offload == "model" else self.vae_chunk

    def check(self) -> None:
        """The checks that need no model (the CLI makes them before loading one). Each message names
        the one bad setting as the interface in use spells it (`setting_name`)."""
        self._check_counts()
        if not (math.isfinite(self.cfg) and self.cfg >= 1.0):
            raise AA2InputError(f"{setting_name('cfg')} must be a number >= 1 (1 turns guidance off), got {self.cfg}")
        if self.environment not in ENVIRONMENT_MODES:  # an unknown mode would otherwise act as 'input'
            raise AA2InputError(f"environment must be one of {', '.join(ENVIRONMENT_MODES)}, got {self.environment!r}")
        if self.clip_crop not in CLIP_CROPS:
            raise AA2InputError(f"clip_crop must be one of {', '.join(CLIP_CROPS)}, got {self.clip_crop!r}")
        check_sampler_name(self.sampler)
        check_sampler_steps(self.sampler, self.steps)
        check_offload(self.offload)
        if self.clip_length is not None:  # with the length given, how clips chain needs no model
            self._check_clips_make_new_frames(self.clip_length)

    def _check_counts(self) -> None:
        if self.steps < 1:
            raise AA2InputError(f"{setting_name('steps')} must be at least 1, got {self.steps}")
        if self.seed < 0:  # the node's widget starts at 0: a seed one door takes, the other must be able to replay
            raise AA2InputError(f"{setting_name('seed')} must be 0 or more, got {self.seed}")
        if self.clip_length is not None and self.clip_length < 1:
            unset = worded(comfyui="unset", cli="left out")
            raise AA2InputError(f"{setting_name('clip_length')} must be at least 1 (or {unset} for the motion modules' "
                                f"own), got {self.clip_length}")
        for field in ("motion_frames", "overlap", "feather"):
            if getattr(self, field) < 0:
                raise AA2InputError(f"{setting_name(field)} cannot be negative, got {getattr(self, field)}")
        if self.vae_chunk < 0:
            raise AA2InputError(f"{setting_name('vae_chunk')} must be >= 0 (0: automatic), got {self.vae_chunk}")

    def check_steps(self, train_timesteps: int) -> None:
        """`steps` against the checkpoint's training timesteps: a schedule cannot be cut into more
        steps than it has (diffusers' DDIM raises deep inside sampling; Euler and DPM-Solver quietly
        repeat one timestep)."""
        most = train_timesteps - 1 if self.sampler in SAMPLERS_BELOW_TRAIN_STEPS else train_timesteps
        if self.steps > most:
            raise AA2InputError(f"{setting_name('steps')} {self.steps} is more than the {self.sampler} sampler can "
                                f"take: the checkpoint's noise schedule has {train_timesteps} timesteps; use at most "
                                f"{most} (20 to 50 is usual)")

    def validate(self, trained_frames: int, max_frames: int) -> int:
        """Check the options against the motion modules' window; return the clip length to use."""
        self.check()
        length = self.clip_length if self.clip_length is not None else trained_frames
        if not 1 <= length <= max_frames:
            raise AA2InputError(f"{self._clip_length_text(length)} must be between 1 and {max_frames} (the motion "
                                "modules' positional table)")
        self._check_clips_make_new_frames(length)
        return length

    def _check_clips_make_new_frames(self, length: int) -> None:
        if self.motion_frames + self.overlap >= length:
            raise AA2InputError(
                f"{setting_name('motion_frames')} ({self.motion_frames}) + {setting_name('overlap')} ({self.overlap}) "
                f"must be less than {self._clip_length_text(length)} so every clip makes new frames"
            )

    def _clip_length_text(self, length: int) -> str:
        """The clip length, and where it came from when the user set none (a default they never saw)."""
        if self.clip_length is not None:
            return f"{setting_name('clip_length')} ({length})"
        return f"the clip length ({length}, what the motion modules were trained on; set {setting_name('clip_length')})"


@dataclass(frozen=True)
class ClipPlan:
    """One clip of a long video: source frames `[start, stop)`, the first `carried` of them held
    fixed as latents from the previous clip, the next `overlap` re-generated and cross-faded."""

    index: int
    start: int
    stop: int
    carried: int
    overlap: int
    seed: int

    @property
    def generated(self) -> range:
        """Source frames this clip denoises (the first `overlap` of them are cross-faded)."""
        return range(self.start + self.carried, self.stop)


def clip_seed(seed: int, index: int) -> int:
    """Each clip's own seed, derived from the run's: any clip can be re-rendered alone."""
    return (seed * 1_000_003 + index * 7_919) % (2**63 - 1)


def plan_clips(frames: int, length: int, motion_frames: int, overlap: int, seed: int) -> list[ClipPlan]:
    """Cut `frames` into clips of at most `length`, each after the first starting `motion_frames + overlap`
    frames before the previous one ended."""
    plans = [ClipPlan(0, 0, min(length, frames), 0, 0, clip_seed(seed, 0))]
    while plans[-1].stop < frames:
        last = plans[-1]
        carried = min(motion_frames, last.stop - last.start)
        fade = min(overlap, last.stop - last.start - carried)
        start = last.stop - carried - fade
        plans.append(ClipPlan(len(plans), start, min(start + length, frames), carried, fade, clip_seed(seed, len(plans))))
    return plans
