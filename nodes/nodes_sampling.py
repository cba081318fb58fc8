"""Sampling nodes: encode the reference once, then render one clip or a whole long video.

Both renderers call `aa2.pipeline.animate.animate`; AA2Sampler is one clip (up to the motion
modules' window), LongVideoChainer any length, clip by clip with motion frames carried as latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ..aa2.errors import AA2InputError
from ..aa2.models.image_encoder import CLIP_CROPS
from ..aa2.pipeline.animate import animate
from ..aa2.pipeline.assemble import ConditioningParts, assemble_inputs
from ..aa2.pipeline.inputs import ENVIRONMENT_MODES, AnimationInputs, SamplingSettings, match_pose_length
from ..aa2.pipeline.offload import OFFLOAD_MODES, PartPlacement, working_bytes
from ..aa2.pipeline.reference import encode_reference
from ..aa2.sampling.registry import SAMPLER_CHOICES, follows_custom_sigmas, sampler_function
from ..aa2.sampling.sigmas import SCHEDULES, schedule_sigmas
from . import host
from .boundary import (frames_to_image, image_to_frames, latents_to_latent, mask_to_frames, match_frames,
                       noise_to_latents)
from .comfy_sampler import host_sampler

CATEGORY = "AnimateAnyone2/sampling"
SAMPLER_NAMES = list(SAMPLER_CHOICES)
OFFLOAD_INPUT = (["auto", *OFFLOAD_MODES], {"default": "auto", "tooltip":
                 "Low-VRAM mode. none: the whole model on the GPU (fastest). model: only the part running now "
                 "(CLIP, ReferenceNet, VAE or the denoising UNet) is on the GPU, the rest waits in RAM — about "
                 "half the weights' VRAM, for a few transfers per clip. auto: model only when the whole one "
                 "would not fit in free VRAM."})


class AA2EncodeReference:
    DESCRIPTION = (
        "Encodes the character image once (ReferenceNet features + CLIP embedding) for a given output size. "
        "Connect the result to any number of samplers: seeds, clips and re-renders reuse it for free."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AA2_REFERENCE",)
    RETURN_NAMES = ("reference",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 64, "max": 2048, "step": 64}
        return {"required": {
            "aa2_model": ("AA2_MODEL", {"tooltip": "From AA2 Load Model."}),
            "image": ("IMAGE", {"tooltip": "The character to animate (the first image if several)."}),
            "width": ("INT", {"default": 512, **size, "tooltip": "Output width; must match the pose frames."}),
            "height": ("INT", {"default": 768, **size, "tooltip": "Output height; must match the pose frames."}),
            "clip_crop": (list(CLIP_CROPS), {"default": "squash", "tooltip":
                "How CLIP sees the character. squash: the whole image to a square, as Moore-AnimateAnyone "
                "samples. center: shortest side to 224 and a centre crop, as its training data was fed."}),
        }, "optional": {"offload": OFFLOAD_INPUT}}

    def encode(self, aa2_model, image, width, height, clip_crop="squash", offload="auto"):
        character = image_to_frames(image, "image")[0]
        model, mode = aa2_model.for_render(offload, working_bytes(1, height, width, aa2_model.dtype))
        device = aa2_model.load_device if mode != "none" else None
        with PartPlacement(model, mode, device, aa2_model.offload_device) as placement:
            reference = encode_reference(model, character, (height, width), clip_crop, placement)
        return (reference.to(host.offload_device()),)


def _fit(frames: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize `[F, C, H, W]` to the pose frames' size (masks: nearest, so they stay binary)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if mode == "nearest":
        return F.interpolate(frames, size=size, mode="nearest")
    return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _inputs(reference_image, pose, driving_frames, agnostic_mask, object_frames,
            parts: ConditioningParts, cut_longer: bool = False) -> AnimationInputs:
    """The node inputs fitted to the pose frames, then assembled for a model with `parts`: a condition
    it has no part for (depth or objects on Moore / MIMO weights) is refused, saying what to disconnect.

    A sequence longer than the pose is refused unless `cut_longer` (the user's explicit choice, logged):
    a longer video may not be the one the pose was extracted from, and cutting it silently hid that."""
    skeleton = pose["skeleton"]
    frames, size = skeleton.shape[0], tuple(skeleton.shape[-2:])
    reference = (image_to_frames(reference_image, "reference_image")[0] if reference_image is not None
                 else torch.zeros(3, *size))

    def to_pose_length(sequence, name):
        return match_pose_length(sequence, frames, name, trim=cut_longer)

    environment = mask = objects = None
    if driving_frames is not None:
        environment = _fit(to_pose_length(image_to_frames(driving_frames, "driving_frames"), "driving_frames"), size)
    if agnostic_mask is not None:
        mask = mask_to_frames(agnostic_mask, "agnostic_mask")
        if mask.shape[0] > 1:  # one mask alone stands for every frame
            mask = to_pose_length(mask, "agnostic_mask")
        mask = match_frames(mask, frames, "agnostic_mask")
        mask = _fit(mask[:, None], size, "nearest")[:, 0]
    if object_frames is not None:
        objects = _fit(to_pose_length(image_to_frames(object_frames, "object_frames"), "object_frames"), size)
    return assemble_inputs(reference, skeleton, depth=pose.get("depth"), depth_kind="structured",
                           environment=environment, mask=mask, objects=objects,
                           parts=parts, missing="refuse").inputs


def render(aa2_model, pose, seed, steps, cfg, sampler_name, environment, paste_environment,
           clip_length, motion_frames, overlap, reference=None, reference_image=None, driving_frames=None,
           agnostic_mask=None, object_frames=None, sampler=None, sigmas=None, noise=None, release_model=False,
           offload="auto", node_id=None, latent=None, cut_longer_inputs=False):
    """Shared body of AA2Sampler and LongVideoChainer: ComfyUI types in, (IMAGE, LATENT) out."""
    if latent is not None:  # an API-format workflow from before NOISE still links its old input
        raise AA2InputError("the sampler's 'latent' input (initial noise) is gone: connect RandomNoise to "
                            "'noise' instead, or leave it unconnected to use the seed")
    if reference is None and reference_image is None:
        raise AA2InputError("connect either a reference (AA2 Encode Reference) or a reference_image")
    inputs = _inputs(reference_image, pose, driving_frames, agnostic_mask, object_frames,
                     ConditioningParts.of(aa2_model.model), cut_longer=cut_longer_inputs)
    initial = None
    if noise is not None:  # as in SamplerCustomAdvanced, the NOISE's seed is the run's seed
        initial = noise_to_latents(noise, inputs.frames, *inputs.size)
        seed = int(getattr(noise, "seed", seed))
    model, mode = aa2_model.for_render(offload, working_bytes(min(clip_length, inputs.frames), *inputs.size, aa2_model.dtype))
    settings = SamplingSettings(steps=steps, cfg=cfg, sampler=sampler_name, seed=seed, clip_length=clip_length,
                                motion_frames=motion_frames, overlap=overlap, environment=environment,
                                paste_environment=paste_environment, offload=mode)
    if sigmas is not None and sampler is None and not follows_custom_sigmas(sampler_function(sampler_name)):
        raise AA2InputError(f"SIGMAS need a SAMPLER too (e.g. KSamplerSelect) or a k_* sampler_name: "
                            f"{sampler_name} steps on its diffusers scheduler's own timesteps")
    k_sampler = host_sampler(sampler, model.config.scheduler, seed) if sampler is not None else None
    progress = host.Progress(1, node_id)  # the pipeline reports the real total (all steps of all clips)
    preview = host.latent_previewer()

    def report(done, total, x0):
        frame = None if preview is None or x0 is None else preview(x0[:, :, 0].float())
        progress.update_absolute(done, total, frame)

    try:
        result = animate(model, inputs, settings, reference=reference, sampler=k_sampler, sigmas=sigmas,
                         latents=initial, progress=report, cancel=_cancelled,
                         device=aa2_model.load_device if mode != "none" else None,
                         offload_device=aa2_model.offload_device)
    finally:
        if release_model:
            aa2_model.release()
    out = host.intermediate_device()
    latent = latents_to_latent(result.latents, model.vae.config.scaling_factor, out)
    return frames_to_image(rearrange(result.frames, "f h w c -> f c h w"), out), latent


def _cancelled() -> bool:
    host.check_interrupted()  # raises the host's own interrupt: ComfyUI then reports a cancelled run
    return False


def _common_inputs(long_video: bool) -> dict:
    required = {
        "aa2_model": ("AA2_MODEL", {"tooltip": "From AA2 Load Model."}),
        "pose": ("AA2_POSE", {"tooltip": "From Pose Depth Modulate: skeleton (and structured depth) frames."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "control_after_generate": True,
                         "tooltip": "Each clip's noise comes from this seed and the clip's index (a connected NOISE "
                         "replaces it)."}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 200, "tooltip": "Denoising steps per clip."}),
        "cfg": ("FLOAT", {"default": 3.5, "min": 1.0, "max": 20.0, "step": 0.1, "tooltip":
                          "Guidance scale (1 = off, twice as fast). Animate Anyone uses about 3.5."}),
        "sampler_name": (SAMPLER_NAMES, {"default": "default", "tooltip": "'default' = DDIM under the "
                         "checkpoint's own schedule, as are the other diffusers schedulers; k_* are "
                         "k-diffusion-style and also follow connected SIGMAS. A connected SAMPLER overrides this."}),
        "environment": (list(ENVIRONMENT_MODES), {"default": "auto", "tooltip": "How the driving video's scene is "
                        "kept: 'input' feeds it to the model (AA2 weights), 'blend' pastes it into the latents "
                        "at every step (works with Animate Anyone 1 / Moore weights); 'auto' picks by the weights."}),
        "paste_environment": ("BOOLEAN", {"default": False, "tooltip": "Put the exact driving pixels back "
                              "outside the (feathered) mask after decoding."}),
    }
    if long_video:
        required.update({
            "clip_length": ("INT", {"default": 16, "min": 2, "max": 32, "tooltip": "Frames per clip: what the "
                            "motion module was trained on (16)."}),
            "motion_frames": ("INT", {"default": 1, "min": 0, "max": 16, "tooltip": "Last frames of each clip "
                              "carried (as latents) into the next, held fixed there. The paper uses 1."}),
            "overlap": ("INT", {"default": 0, "min": 0, "max": 16, "tooltip": "Extra frames re-generated by both "
                        "neighbouring clips and cross-faded."}),
        })
    optional = {
        "reference": ("AA2_REFERENCE", {"tooltip": "From AA2 Encode Reference (reused across runs)."}),
        "reference_image": ("IMAGE", {"tooltip": "Or the character image, encoded here for this run."}),
        "driving_frames": ("IMAGE", {"tooltip": "The driving video (the environment)."}),
        "agnostic_mask": ("MASK", {"tooltip": "From Shape Agnostic Mask: where the character is replaced."}),
        "object_frames": ("IMAGE", {"tooltip": "From Object Segment: the objects the character touches."}),
        "sampler": ("SAMPLER", {"tooltip": "Any ComfyUI sampler (KSamplerSelect, ...) instead of sampler_name."}),
        "sigmas": ("SIGMAS", {"tooltip": "Custom sigmas (AA2 Sigmas gives the checkpoint's range); needs a "
                   "SAMPLER or a k_* sampler_name."}),
        "noise": ("NOISE", {"tooltip": "Initial noise for every frame (RandomNoise, as SamplerCustomAdvanced "
                  "takes it) instead of the seed's; its seed then also seeds the sampler's per-step noise."}),
        "release_model": ("BOOLEAN", {"default": False, "tooltip": "Move the model off the GPU when done."}),
        "offload": OFFLOAD_INPUT,
        "cut_longer_inputs": ("BOOLEAN", {"default": False, "tooltip": "Driving frames, masks and object "
                              "frames longer than the pose: on, use their first frames (said in the log); "
                              "off, refuse them, since a longer video may not be the one the pose came from."}),
    }
    return {"required": required, "optional": optional, "hidden": {"node_id": "UNIQUE_ID"}}


RENDER_OUTPUT_TOOLTIPS = (
    "The rendered frames (IMAGE).",
    "The frames' latents, one per frame, unscaled as core nodes expect: VAE Decode (with an SD1.5 VAE), "
    "latent upscale / composite and Save Latent take it.",
)


class AA2Sampler:
    DESCRIPTION = (
        "Animates the character in the driving video's environment: one clip of up to 32 frames (use "
        "Long Video Chainer for longer videos). The checkpoint's own schedule is the default; any ComfyUI "
        "SAMPLER and SIGMAS can be connected instead."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("frames", "latent")
    OUTPUT_TOOLTIPS = RENDER_OUTPUT_TOOLTIPS
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return _common_inputs(long_video=False)

    def sample(self, aa2_model, pose, seed, steps, cfg, sampler_name, environment, paste_environment,
               node_id=None, **optional):
        frames = pose["skeleton"].shape[0]
        limit = aa2_model.model.config.motion.max_seq_length
        if frames > limit:
            raise AA2InputError(f"{frames} frames is more than one clip (at most {limit}): use Long Video Chainer")
        return render(aa2_model, pose, seed, steps, cfg, sampler_name, environment, paste_environment,
                      clip_length=frames, motion_frames=0, overlap=0, node_id=node_id, **optional)


class LongVideoChainer:
    DESCRIPTION = (
        "Renders a video of any length clip by clip. Each clip starts from the last frames of the previous "
        "one, carried as latents (no decode/re-encode drift); only one clip is on the GPU at a time, so "
        "memory does not grow with length. One progress bar covers all clips."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("frames", "latent")
    OUTPUT_TOOLTIPS = RENDER_OUTPUT_TOOLTIPS
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return _common_inputs(long_video=True)

    def sample(self, aa2_model, pose, seed, steps, cfg, sampler_name, environment, paste_environment,
               clip_length, motion_frames, overlap, node_id=None, **optional):
        return render(aa2_model, pose, seed, steps, cfg, sampler_name, environment, paste_environment,
                      clip_length, motion_frames, overlap, node_id=node_id, **optional)


class AA2Sigmas:
    DESCRIPTION = (
        "Sigmas over the checkpoint's own noise range (Moore-AnimateAnyone's zero-terminal-SNR weights start "
        "near sigma 4096, not SD1.5's 14.6), for SamplerCustom-style use with a SAMPLER."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "aa2_model": ("AA2_MODEL", {"tooltip": "The model whose schedule to follow."}),
            "schedule": (list(SCHEDULES), {"default": "karras", "tooltip": "Spacing of the noise levels."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 200, "tooltip": "Number of steps."}),
        }}

    def sigmas(self, aa2_model, schedule, steps):
        return (schedule_sigmas(aa2_model.model.config.scheduler, schedule, steps),)


NODE_CLASS_MAPPINGS = {
    "AA2EncodeReference": AA2EncodeReference,
    "AA2Sampler": AA2Sampler,
    "LongVideoChainer": LongVideoChainer,
    "AA2Sigmas": AA2Sigmas,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AA2EncodeReference": "AA2 Encode Reference",
    "AA2Sampler": "AA2 Sampler",
    "LongVideoChainer": "AA2 Long Video Chainer",
    "AA2Sigmas": "AA2 Sigmas",
}
