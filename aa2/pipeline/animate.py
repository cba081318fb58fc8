"""Animate a character in the driving video's environment, for videos of any length.

The core of `LongVideoChainer` and of `python -m aa2 animate`. The video is cut into clips of the
motion modules' length (`plan_clips`). Each clip after the first starts with the last
`motion_frames` *latents* of the previous clip, held fixed inside the temporal window while the new
frames are denoised and then dropped — no decode/re-encode between clips, which would drift the
colours a little more at every clip. Only one clip's tensors are on the device at a time; finished
frames are decoded there and moved off it, so memory stays flat however long the video is. With
`offload="model"` only the part of the model a phase runs is on the device (`aa2.pipeline.offload`).

Everything that does not change during sampling is computed once: the reference (once per
character, reusable across seeds and clips), and per clip the environment and object latents and
the pose features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from ..conditioning.masks import environment_frames, latent_mask
from ..checks import FiniteWatch, is_finite
from ..errors import AA2Error, AA2InputError, worded
from ..models.aa2_model import AA2Model
from ..models.denoising_net import DenoisingConditions
from ..sampling.registry import SamplerFunction, check_custom_sigmas, sampler_function
from ..sampling.sigmas import check_sigmas
from .assemble import ConditioningParts, parts_to_use
from .clip_denoiser import GuidedModel, KnownLatents, denoise_clip
from .inputs import AnimationInputs, ClipPlan, SamplingSettings, plan_clips
from .offload import MoveObserver, PartPlacement
from .reference import EncodedReference, encode_reference
from .vae_codec import decode_latents, encode_frames

Progress = Callable[[int, int, "torch.Tensor | None"], None]  # (steps done, steps in all, x0 preview [1,4,F,h,w])


@dataclass
class AnimationResult:
    frames: torch.Tensor  # [F, H, W, 3] float 0..1, on the CPU
    latents: torch.Tensor  # [1, 4, F, h, w] float32, on the CPU


def environment_is_learned(model: AA2Model) -> bool:
    """Whether the DenoisingNet's environment channels carry weights (AA2 training) or are the
    zeros a widened SD1.5 / Animate Anyone 1 `conv_in` starts with."""
    conv_in = model.denoising_net.unet.conv_in
    return conv_in.in_channels > 4 and bool(conv_in.weight[:, 4:].abs().sum() > 0)


def resolve_environment_mode(model: AA2Model, mode: str, has_environment: bool) -> tuple[bool, bool]:
    """`(as model input, as latent blending)` for the requested mode and these weights."""
    if not has_environment or mode == "off":
        return False, False
    learned = environment_is_learned(model)
    if mode == "auto":
        return (True, False) if learned else (False, True)
    use_input = "input" in mode
    if use_input and not learned:
        raise AA2InputError(
            "these weights never learned the environment input (Animate Anyone 1 / Moore-AnimateAnyone, or an "
            "untrained SD1.5 base): use environment mode 'blend' or 'auto'"
        )
    return use_input, "blend" in mode


def check_model_takes(model: AA2Model, inputs: AnimationInputs) -> None:
    """Refuse inputs this model has no part for, rather than dropping them unseen (the "refuse"
    policy of `aa2.pipeline.assemble`, whatever built the inputs)."""
    parts_to_use(ConditioningParts.of(model), depth=inputs.depth is not None, objects=inputs.objects is not None,
                 missing="refuse")


@torch.no_grad()
def animate(
    model: AA2Model,
    inputs: AnimationInputs,
    settings: SamplingSettings = SamplingSettings(),
    *,
    reference: EncodedReference | None = None,
    sampler: SamplerFunction | None = None,
    sigmas: torch.Tensor | None = None,
    latents: torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    on_move: MoveObserver | None = None,
) -> AnimationResult:
    """Render every frame of `inputs`. `latents` (`[1, 4, F, h, w]`, unit variance) replaces the seeded
    initial noise; `sampler` (a function in k-diffusion's convention, e.g. a ComfyUI SAMPLER's) replaces
    the registry's `settings.sampler`, and `sigmas` any sampler's own noise levels.

    `device`: where the parts compute (None: where the DenoisingNet is). With `settings.offload`
    "model", each part is there only during its phases and rests on `offload_device` otherwise, also
    after an error or a cancel (`aa2.pipeline.offload`); `on_move` hears of every move.
    """
    inputs.validate()
    check_model_takes(model, inputs)
    config = model.config
    length = settings.validate(config.motion.trained_frames, config.motion.max_seq_length)
    sampler = sampler or sampler_function(settings.sampler)
    if sigmas is not None:
        check_sigmas(sigmas)
        check_custom_sigmas(sampler, sigmas)
    h, w = inputs.size[0] // 8, inputs.size[1] // 8
    if latents is not None and tuple(latents.shape) != (1, 4, inputs.frames, h, w):
        raise AA2InputError(f"latents must be [1, 4, F, h, w] = {(1, 4, inputs.frames, h, w)}, got {tuple(latents.shape)}")
    use_input, use_blend = resolve_environment_mode(model, settings.environment, inputs.environment is not None)
    with PartPlacement(model, settings.offload, device, offload_device, on_move) as placement:
        return _render(model, inputs, settings, placement, length, use_input, use_blend, reference=reference,
                       sampler=sampler, sigmas=sigmas, latents=latents, progress=progress, cancel=cancel)


def _render(model: AA2Model, inputs: AnimationInputs, settings: SamplingSettings, placement: PartPlacement,
            length: int, use_input: bool, use_blend: bool, *, reference: EncodedReference | None,
            sampler: SamplerFunction, sigmas: torch.Tensor | None, latents: torch.Tensor | None,
            progress: Progress | None, cancel: Callable[[], bool] | None) -> AnimationResult:
    """`animate` once its inputs are checked: the reference, then clip by clip, each phase's part placed."""
    height, width = inputs.size
    h, w = height // 8, width // 8
    if reference is None:
        reference = encode_reference(model, inputs.reference, (height, width), settings.clip_crop, placement)
    reference.check(model, (height, width))
    plans = plan_clips(inputs.frames, length, settings.motion_frames, settings.overlap, settings.seed)
    steps = settings.steps if sigmas is None else len(sigmas) - 1  # custom sigmas decide the step count
    total = len(plans) * steps
    device = placement.device

    frames_out = torch.zeros(inputs.frames, 3, height, width)
    latents_out = torch.zeros(1, 4, inputs.frames, h, w)
    previous: tuple[ClipPlan, torch.Tensor] | None = None  # the last clip and its clean latents (device)
    state = {"done": 0}

    def diverged(where: str) -> AA2Error:
        return AA2Error(
            f"sampling diverged {where}: the latents hold NaN or infinite values. "
            "Usual causes: half precision overflowing ("
            + worded(comfyui="load the model in fp32 or bf16", cli="try --dtype fp32 or bf16")
            + "), a very high cfg, or custom sigmas that start too high"
        )

    watch = FiniteWatch()  # on a GPU it reads each step's verdict a step late, never stalling the queue

    def on_step(x0: torch.Tensor) -> None:
        state["done"] += 1
        bad = watch.step(state["done"], x0)
        if bad is not None:  # diverged: stop now, not after rendering every frame NaN (saved black)
            raise diverged(f"at step {bad} of {total}")
        if progress is not None:
            progress(state["done"], total, x0)

    for plan in plans:
        object_latents = env_latents = env_mask = None
        if inputs.objects is not None or use_input or use_blend:  # no VAE work: no VAE move
            placement.prepare("condition latents")
            object_latents, env_latents, env_mask = _condition_latents(
                model, inputs, plan, use_input or use_blend, settings, device)
        placement.prepare("denoise")
        conditions = _clip_conditions(model, inputs, plan, object_latents, env_latents, env_mask, use_input)
        guided = GuidedModel(model, reference, conditions, settings.cfg)
        generator = torch.Generator().manual_seed(plan.seed)
        window = plan.stop - plan.start
        if latents is not None:
            noise = latents[:, :, plan.start : plan.stop].float()
        else:
            noise = torch.randn(1, 4, window, h, w, generator=generator)
        carried = _carried_latents(previous, plan)
        known = _known_latents(plan, carried, env_latents, env_mask, noise.to(device), window, h, w, device)

        clean = denoise_clip(
            guided, noise.to(device), steps=settings.steps, sampler=sampler, generator=generator,
            known=known, sigmas=sigmas, on_step=on_step, cancel=cancel,
        )
        bad = watch.flush()
        if bad is not None:
            raise diverged(f"at step {bad} of {total}")
        if not is_finite(clean):  # a sampler that reports no steps (or a bad last one) is caught here
            raise diverged(f"in the clip of frames {plan.start}-{plan.stop - 1}")
        previous = (plan, clean)
        new = clean[:, :, plan.carried:]
        placement.prepare("decode")
        decoded = decode_latents(model.vae, new, settings.frames_per_vae_call)
        if settings.paste_environment and inputs.environment is not None:
            decoded = _paste_environment(decoded, inputs, plan, settings.feather)
        _place(frames_out, decoded, plan)
        latents_out[:, :, plan.start + plan.carried : plan.stop] = new.float().cpu()
        del conditions, guided, new, known, carried, object_latents
    return AnimationResult(rearrange(frames_out, "f c h w -> f h w c"), latents_out)


def _condition_latents(model: AA2Model, inputs: AnimationInputs, plan: ClipPlan, use_environment: bool,
                       settings: SamplingSettings, device: torch.device):
    """The clip's VAE work, done before the DenoisingNet takes the device: `(object latents,
    environment latents, environment latent mask)` on `device`, each None where unused."""
    window = slice(plan.start, plan.stop)
    object_latents = env_latents = env_mask = None
    if inputs.objects is not None:
        object_latents = encode_frames(model.vae, inputs.objects[window], settings.frames_per_vae_call)
    if use_environment:
        mask = inputs.mask[window]
        env_latents = encode_frames(model.vae, environment_frames(inputs.environment[window], mask), settings.frames_per_vae_call)
        env_mask = rearrange(latent_mask(mask), "f 1 h w -> 1 1 f h w").to(device, env_latents.dtype)
    return object_latents, env_latents, env_mask


def _clip_conditions(model: AA2Model, inputs: AnimationInputs, plan: ClipPlan, object_latents, env_latents,
                     env_mask, use_input: bool) -> DenoisingConditions:
    """The clip's fixed DenoisingNet inputs, computed once by its own modules: pose features, object
    features, and (as model input) the environment latents + mask."""
    net = model.denoising_net
    param = next(net.parameters())
    window = slice(plan.start, plan.stop)

    def clip(frames: torch.Tensor | None) -> torch.Tensor | None:
        return None if frames is None else rearrange(frames[window].float(), "f c h w -> 1 c f h w").to(param.device, param.dtype)

    conditions = DenoisingConditions()
    conditions.pose_features = net.pose_modulation(clip(inputs.pose), clip(inputs.depth))
    if object_latents is not None:
        conditions.object_features = net.encode_objects(object_latents.to(param.dtype))
    if use_input:
        conditions.environment = torch.cat([env_latents, env_mask], dim=1)
    return conditions


def _carried_latents(previous: tuple[ClipPlan, torch.Tensor] | None, plan: ClipPlan) -> torch.Tensor | None:
    """The previous clip's clean latents for this clip's first `carried` source frames."""
    if previous is None or plan.carried == 0:
        return None
    last, clean = previous
    offset = plan.start - last.start
    return clean[:, :, offset : offset + plan.carried]


def _known_latents(plan: ClipPlan, carried, env_latents, env_mask, noise, window: int, h: int, w: int,
                   device) -> KnownLatents | None:
    """Hold the carried motion frames, and (blend mode) the environment outside the character."""
    if plan.carried == 0 and env_latents is None:
        return None
    latents = torch.zeros(1, 4, window, h, w, device=device)
    mask = torch.zeros(1, 1, window, h, w, device=device)
    if env_latents is not None:  # blend mode: everything outside the shape-agnostic mask is known
        latents = env_latents.float().clone()
        mask = 1 - env_mask.float()
    if plan.carried:
        latents[:, :, : plan.carried] = carried.float()
        mask[:, :, : plan.carried] = 1
    return KnownLatents(latents, mask, noise)


def _paste_environment(decoded: torch.Tensor, inputs: AnimationInputs, plan: ClipPlan, feather: int) -> torch.Tensor:
    """The driving video's exact pixels outside the character's (feathered) mask."""
    frames = plan.generated
    mask = inputs.mask[frames.start : frames.stop].float()[:, None]
    if feather:
        size = 2 * feather + 1
        mask = F.max_pool2d(mask, size, stride=1, padding=feather)  # grow, so the soft edge stays outside
        mask = F.avg_pool2d(mask, size, stride=1, padding=feather, count_include_pad=False)
    environment = inputs.environment[frames.start : frames.stop].float()
    return decoded * mask + environment * (1 - mask)


def _place(frames_out: torch.Tensor, decoded: torch.Tensor, plan: ClipPlan) -> None:
    """Write a clip's frames; the first `overlap` are cross-faded with the previous clip's."""
    start = plan.start + plan.carried
    if plan.overlap:
        ramp = torch.linspace(0, 1, plan.overlap + 2)[1:-1].view(-1, 1, 1, 1)
        old = frames_out[start : start + plan.overlap]
        decoded = decoded.clone()
        decoded[: plan.overlap] = old * (1 - ramp) + decoded[: plan.overlap] * ramp
    frames_out[start : plan.stop] = decoded
