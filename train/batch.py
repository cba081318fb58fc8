"""From prepared clips to the DenoisingNet's training inputs (paper §3.1–3.4, self-supervised).

Every training pair comes from one source clip: the clip is the target, and its conditions are
cut from it with the pack's own functions, exactly as inference cuts them from a driving video:

1. random scale augmentation (`augment.random_scale`): the character and its objects are scaled
   about the character's box centre and pasted back; the result is the target. The skeleton and
   depth maps follow the same scale so the pose still matches the (scaled) character;
2. the reference image (`augment.training_reference`): a random frame of the *unscaled* clip,
   centre-cropped, on a random background — the character at its own build, as at inference;
3. the shape-agnostic mask with random block counts (`masks.environment_mask(..., training=True)`;
   `data.environment_mask` swaps in the precise mask or the box for the Figure 7 ablation)
   and the environment frames it cuts (`masks.environment_frames`), at latent size `latent_mask`;
4. structured depth (`structured_depth`) from skeleton and depth;
5. the object sequence (`sam2_segment.object_frames`) where the clip has object masks —
   4 and 5 through `aa2.pipeline.assemble.assemble_inputs`, as inference and evaluation make them.

Then the frozen VAE and CLIP encode targets, environment, objects and reference, without
gradients (CLIP with them when a stage trains it). Every random draw comes from the generator the
caller passes (one per step), so a resumed run rebuilds exactly the batches of an uninterrupted one.

Departures: in the image stage one target frame is taken from the clip, a different frame from
the reference when the clip has more than one (Animate Anyone's stage 1). Samples without depth
get an all-zero structured depth; in a batch where some samples have objects, the others get the
empty (all-grey) object sequence. Targets are the VAE posterior mean, as `encode_frames` gives it.

Annotations the model has no part for are dropped (`aa2.pipeline.assemble`, policy "drop") and
named in `TrainingInputs.dropped`, which `train.train` prints once: the models that lack a part are
the ablation variants (`train.init_model --variant no_depth | no_objects | aa1`), built without it
on purpose and trained on the same annotated data as the full model (Table 4); training from
Moore / MIMO weights builds every part fresh (`ModelSources(new_parts=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from aa2.conditioning.augment import random_scale, scale_about, training_reference
from aa2.conditioning.masks import environment_frames, environment_mask, latent_mask
from aa2.errors import AA2InputError
from aa2.models.aa2_model import AA2Model
from aa2.models.image_encoder import reference_context
from aa2.pipeline.assemble import ConditioningParts, assemble_inputs, parts_to_use
from aa2.pipeline.vae_codec import encode_frames
from einops import rearrange

from .config import DataSettings

Sample = dict[str, Any]  # PreparedClips item: frames, character_mask, object_mask, skeleton, depth, ...


@dataclass
class ClipConditions:
    """One sample's pixel-space inputs, all `[F, ...]` at the training size."""

    target: torch.Tensor  # [F, 3, H, W] 0..1
    agnostic_mask: torch.Tensor  # [F, H, W] 0/1
    environment: torch.Tensor  # [F, 3, H, W]
    skeleton: torch.Tensor  # [F, 3, H, W]
    depth: torch.Tensor  # [F, 3, H, W] structured depth (zeros without depth)
    objects: torch.Tensor | None  # [F, 3, H, W] object sequence, None without objects
    reference: torch.Tensor  # [3, H, W]
    has_depth: bool = False  # the clip was annotated with depth (else `depth` is the zeros standing for none)


@dataclass
class TrainingInputs:
    """A batch as the DenoisingNet takes it (latents scaled, float32)."""

    latents: torch.Tensor  # [B, 4, F, h, w] clean target latents
    environment: torch.Tensor | None  # [B, 5, F, h, w] environment latents + mask; None without that input
    skeleton: torch.Tensor  # [B, 3, F, H, W]
    depth: torch.Tensor | None  # [B, 3, F, H, W]; None when the model has no depth guider
    object_latents: torch.Tensor | None  # [B, 4, F, h, w]
    reference_latents: torch.Tensor  # [B, 4, h, w]
    context: torch.Tensor  # [B, 1, C] CLIP image embedding
    dropped: tuple[str, ...] = ()  # annotations the model has no part for, left out ("drop" policy)

    def as_dict(self) -> dict[str, torch.Tensor | None]:
        """The model's inputs (what was dropped is a note for the log, not an input)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dropped"}


def prepare_clip(sample: Sample, data: DataSettings, generator: torch.Generator, *, single_frame: bool,
                 backgrounds: Sequence[torch.Tensor] | None = None) -> ClipConditions:
    """The pixel-space training inputs of one prepared clip (draws from `generator`)."""
    frames = sample["frames"].float()
    character = sample["character_mask"].float()
    has_objects = bool(sample.get("has_objects", False))
    objects = sample["object_mask"].float() if has_objects else None
    skeleton, depth = sample["skeleton"].float(), sample["depth"].float()
    height, width = frames.shape[-2:]
    aspect = data.reference_aspect or width / height
    try:
        reference, _, index = training_reference(frames, character, aspect=aspect, backgrounds=backgrounds,
                                                 size=(height, width), framing=data.reference_framing,
                                                 generator=generator)
    except AA2InputError as error:
        raise AA2InputError(f"clip {sample.get('video_id')}@{sample.get('start')}: {error}") from error

    if single_frame:
        count = frames.shape[0]
        pick = index
        if count > 1:  # any other frame: the reference never shows the target pose exactly
            pick = int(torch.randint(count - 1, (1,), generator=generator))
            pick += pick >= index
        keep = slice(pick, pick + 1)
        frames, character, skeleton, depth = frames[keep], character[keep], skeleton[keep], depth[keep]
        objects = None if objects is None else objects[keep]

    centre = _box_centre(character)
    target, scaled_character, scaled_objects, scale = random_scale(
        frames, character, objects, scale_range=data.scale_range, generator=generator)
    if centre is not None and scale != 1.0:
        skeleton = scale_about(skeleton, scale, centre)
        depth = scale_about(depth[:, None], scale, centre)[:, 0]

    agnostic = environment_mask(scaled_character, data.environment_mask, training=True, generator=generator)
    has_depth = bool(sample.get("has_depth", False))
    # structured depth and the object sequence as inference makes them; which reach the model is
    # decided per batch, where the model is known (`_encode_frozen`)
    assembled = assemble_inputs(reference, skeleton, depth=depth if has_depth else None,
                                depth_kind=data.depth_convention, object_mask=scaled_objects, driving=target).inputs
    return ClipConditions(
        target=target,
        agnostic_mask=agnostic,
        environment=environment_frames(target, agnostic),
        skeleton=skeleton.clamp(0, 1),
        depth=assembled.depth if has_depth else torch.zeros_like(skeleton),
        objects=assembled.objects,
        reference=reference,
        has_depth=has_depth,
    )


def encode_batch(model: AA2Model, clips: Sequence[ClipConditions], vae_chunk: int = 8) -> TrainingInputs:
    """VAE-encode targets, environment, objects and references; CLIP-encode the references.

    Without gradients, except through an image encoder that trains (a stage naming `image_encoder.*`).
    """
    with torch.no_grad():
        inputs = _encode_frozen(model, clips, vae_chunk)
    references = torch.stack([c.reference for c in clips])
    trains = any(p.requires_grad for p in model.image_encoder.parameters())
    with torch.set_grad_enabled(trains):
        inputs.context = reference_context(model.image_encoder, references).float().to(inputs.latents.device)
    return inputs


def _encode_frozen(model: AA2Model, clips: Sequence[ClipConditions], vae_chunk: int) -> TrainingInputs:
    parts = ConditioningParts.of(model)
    used = parts_to_use(parts, depth=any(c.has_depth for c in clips), objects=any(c.objects is not None for c in clips),
                        missing="drop")
    use_depth = parts.depth  # a clip without depth feeds the zeros that stand for none
    use_objects = used.objects
    use_environment = model.config.use_environment

    def encode(frames: torch.Tensor) -> torch.Tensor:  # [F, 3, H, W] -> [1, 4, F, h, w] float32
        return encode_frames(model.vae, frames, vae_chunk).float()

    latents = torch.cat([encode(c.target) for c in clips])
    env = None
    if use_environment:
        env = torch.cat([
            torch.cat([encode(c.environment), rearrange(latent_mask(c.agnostic_mask), "f 1 h w -> 1 1 f h w")
                       .to(latents.device)], dim=1)
            for c in clips
        ])
    object_latents = None
    if use_objects:  # a sample without objects shows the empty (all-grey) object sequence
        object_latents = torch.cat([
            encode(c.objects if c.objects is not None else torch.full_like(c.target, 0.5)) for c in clips])
    references = torch.stack([c.reference for c in clips])
    reference_latents = rearrange(encode(references), "1 c b h w -> b c h w")
    device = latents.device

    def clip_video(name: str) -> torch.Tensor:
        return torch.stack([getattr(c, name) for c in clips]).transpose(1, 2).contiguous().to(device)

    return TrainingInputs(
        latents=latents,
        environment=env,
        skeleton=clip_video("skeleton"),
        depth=clip_video("depth") if use_depth else None,
        object_latents=object_latents,
        reference_latents=reference_latents,
        context=torch.empty(0),  # encode_batch fills it, with gradients where the encoder trains
        dropped=used.dropped,
    )


def build_batch(model: AA2Model, samples: Sequence[Sample], data: DataSettings, generator: torch.Generator, *,
                single_frame: bool, backgrounds: Sequence[torch.Tensor] | None = None,
                device: torch.device | str | None = None) -> TrainingInputs:
    """Prepared clips -> `TrainingInputs` on `device` (default: the VAE's)."""
    device = device or next(model.vae.parameters()).device
    clips = []
    for sample in samples:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
        clips.append(prepare_clip(moved, data, generator, single_frame=single_frame, backgrounds=backgrounds))
    return encode_batch(model, clips)


def _box_centre(mask: torch.Tensor) -> tuple[float, float] | None:
    """Centre (y, x) of the union bounding box of `mask [F, H, W]` over the clip (random_scale's centre)."""
    on = mask >= 0.5
    rows, cols = on.any(dim=(0, 2)), on.any(dim=(0, 1))
    if not bool(rows.any()):
        return None
    ys, xs = rows.nonzero()[:, 0], cols.nonzero()[:, 0]
    return (float(ys[0]) + float(ys[-1]) + 1) / 2, (float(xs[0]) + float(xs[-1]) + 1) / 2


def load_backgrounds(folder: str | Path | None) -> list[torch.Tensor] | None:
    """Background images `[3, h, w]` 0..1 for the reference image, from a folder (None: flat colours)."""
    if folder is None:
        return None
    import cv2

    images = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
            continue
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if pixels is None:
            continue
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    if not images:
        raise AA2InputError(f"data.backgrounds: no readable images (.png, .jpg, .webp) in {folder}")
    return images
