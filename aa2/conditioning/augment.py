"""Training-side augmentations of paper §3.2: random scale, and the training reference image.

Random scale augmentation. Training pairs come from one video, so the character in the target
always fills the environment's hole exactly, and a model trained on that learns "the character is
the shape of the hole". At inference the reference character has another build. The paper breaks
the coupling by scaling the character (and the objects it touches) by a random factor and pasting
it back into the frame. Here the character and objects are scaled, by their masks, about the
centre of the character's box; the scaled pixels are pasted over the frame, and where a
scaled-down character no longer covers its old place the original frame stays — so the target
can show more character than its new mask holds, which is the mismatch inference will meet.

Training reference image. A random frame of the clip (one where the character is visible),
cropped to the reference's aspect, with everything outside the character mask replaced by a
random background image or a random flat colour, so the ReferenceNet cannot copy the driving
video's background into the output. The crop is the frame's centre (`framing="frame"`, the
character as large as in the video) or the character's box with a margin (`framing="character"`,
a portrait, as users' reference images are): with the character filling the reference, most
reference tokens carry its appearance instead of background (see `character_box`).

Departures, all because the paper does not say:
- One scale per clip (not per frame), about the union box's centre over the clip: a per-frame
  factor or centre would make the character pulse and jitter, which the motion module would learn.
- The default range is 0.8..1.2, drawn uniformly.
- Masks are resampled bilinearly and binarised at 0.5; frames bilinearly (zeros outside).

Layouts: frames `[F, 3, H, W]` float 0..1, masks `[F, H, W]`, object masks `[O, F, H, W]`.
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import torch
import torch.nn.functional as nnf
from einops import rearrange

from ..errors import AA2InputError
from .masks import _binarise, _bounding_boxes, _check_mask, _union_box


def draw_scale(
    scale_range: tuple[float, float] = (0.8, 1.2), generator: torch.Generator | None = None
) -> float:
    """One scale factor, uniform in `scale_range`, from `generator`."""
    low, high = map(float, scale_range)
    if not 0 < low <= high:
        raise AA2InputError(
            f"scale_range must be (low, high) with 0 < low ≤ high; got {scale_range}."
        )
    device = generator.device if generator is not None else "cpu"
    u = float(torch.rand((), generator=generator, device=device))
    return low + (high - low) * u


def random_scale(
    frames: torch.Tensor,
    character: torch.Tensor,
    objects: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    scale_range: tuple[float, float] = (0.8, 1.2),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """Scale the character and its objects about the character's box centre; paste them back.

    frames: `[F, 3, H, W]` float 0..1. character: `[F, H, W]` mask. objects: `[O, F, H, W]` or
    `[F, H, W]` masks of the things it touches, or None. scale: the factor; None draws one from
    `scale_range` with `generator` (a seeded generator reproduces the result).

    Returns `(frames, character, objects, scale)`: the augmented frames, the scaled masks
    (float 0/1, objects in the shape given), and the factor used. With an empty character mask
    in every frame nothing can be scaled about it, and the inputs are returned unchanged (s = 1).
    """
    _check_frames(frames)
    _check_mask(character, "character")
    count, _, height, width = frames.shape
    if tuple(character.shape) != (count, height, width):
        raise AA2InputError(
            f"The character mask {tuple(character.shape)} must match the frames' count, height "
            f"and width ({count}, {height}, {width})."
        )
    single_object = objects is not None and objects.ndim == 3
    if objects is not None:
        objects = objects[None] if single_object else objects
        if objects.ndim != 4 or tuple(objects.shape[1:]) != (count, height, width):
            raise AA2InputError(
                f"Object masks must be [O, F, H, W] or [F, H, W] matching the frames "
                f"({count}, {height}, {width}); got {tuple(objects.shape)}."
            )
    if scale is None:
        scale = draw_scale(scale_range, generator)
    elif not float(scale) > 0:
        raise AA2InputError(f"scale must be > 0; got {scale}.")
    scale = float(scale)

    dtype = frames.dtype
    char = _binarise(character).to(dtype)
    obj = _binarise(objects).to(dtype) if objects is not None else None
    boxes = [b for b in _bounding_boxes(char > 0.5) if b is not None]
    if not boxes:
        return frames.clone(), char, (obj[0] if single_object else obj), 1.0
    top, bottom, left, right = _union_box(boxes)
    # Box centre in continuous pixel coordinates (pixel i spans [i, i+1)).
    cy, cx = (top + bottom) / 2, (left + right) / 2

    def warp(x: torch.Tensor) -> torch.Tensor:  # [F, C, H, W]
        return scale_about(x, scale, (cy, cx))

    foreground = char if obj is None else torch.maximum(char, obj.amax(dim=0))
    scaled_frames = warp(frames)
    scaled_foreground = warp(rearrange(foreground, "f h w -> f 1 h w")) >= 0.5
    out_frames = torch.where(scaled_foreground, scaled_frames, frames)

    out_char = (warp(rearrange(char, "f h w -> f 1 h w"))[:, 0] >= 0.5).to(dtype)
    out_obj = None
    if obj is not None:
        warped = warp(rearrange(obj, "o f h w -> (o f) 1 h w"))
        out_obj = (rearrange(warped, "(o f) 1 h w -> o f h w", o=obj.shape[0]) >= 0.5).to(dtype)
        out_obj = out_obj[0] if single_object else out_obj
    return out_frames, out_char, out_obj, scale


def training_reference(
    frames: torch.Tensor,
    character: torch.Tensor,
    *,
    aspect: float = 1.0,
    backgrounds: torch.Tensor | Sequence[torch.Tensor] | None = None,
    colour_probability: float = 0.5,
    size: tuple[int, int] | None = None,
    framing: str = "frame",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The reference image for a training clip: random frame, crop, new background.

    frames: `[F, 3, H, W]` float 0..1; character: `[F, H, W]`. aspect: width / height of the crop
    (the largest centred crop of that aspect, or with `framing="character"` the character's box
    with a margin, widened to that aspect: `character_box`). backgrounds: images `[N, 3, h, w]` or a list of
    `[3, h, w]` of any size (scaled to cover the crop, centre-cropped); one is drawn at random,
    or a flat random colour with probability `colour_probability` (always, without backgrounds).
    size: optional `(height, width)` to resize the result to. Draws come from `generator`.

    Returns `(image [3, h, w], mask [h, w] float 0/1, frame_index)`. Inside the mask the image is
    the frame's pixels (exactly, when `size` is None).
    """
    _check_frames(frames)
    _check_mask(character, "character")
    count, _, height, width = frames.shape
    if tuple(character.shape) != (count, height, width):
        raise AA2InputError(
            f"The character mask {tuple(character.shape)} must match the frames "
            f"({count}, {height}, {width})."
        )
    if not aspect > 0:
        raise AA2InputError(f"aspect is width / height and must be > 0; got {aspect}.")
    if not 0.0 <= colour_probability <= 1.0:
        raise AA2InputError(f"colour_probability must be in 0..1; got {colour_probability}.")
    device = generator.device if generator is not None else "cpu"

    mask = _binarise(character)
    visible = [i for i in range(count) if bool(mask[i].any())]
    if not visible:
        raise AA2InputError(
            "The character mask is empty in every frame, so no frame can serve as the reference. "
            "Check the clip's segmentation."
        )
    index = visible[int(torch.randint(len(visible), (1,), generator=generator, device=device))]

    if framing == "character":
        top, left, crop_h, crop_w = character_box(mask[index], aspect)
    elif framing == "frame":
        crop_h, crop_w = _centre_crop_size(height, width, aspect)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    else:
        raise AA2InputError(f"framing is 'frame' or 'character'; got {framing!r}.")
    image = frames[index, :, top : top + crop_h, left : left + crop_w]
    keep = mask[index, top : top + crop_h, left : left + crop_w].to(frames.dtype)

    use_colour = backgrounds is None or len(backgrounds) == 0 or (
        float(torch.rand((), generator=generator, device=device)) < colour_probability
    )
    if use_colour:
        colour = torch.rand(3, generator=generator, device=device).to(frames)
        background = colour[:, None, None].expand(3, crop_h, crop_w)
    else:
        pick = int(torch.randint(len(backgrounds), (1,), generator=generator, device=device))
        background = _cover(backgrounds[pick].to(frames), crop_h, crop_w)

    image = torch.where(keep[None] > 0.5, image, background)
    if size is not None:
        image = nnf.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                                antialias=True)[0].clamp(0, 1)
        keep = (nnf.interpolate(keep[None, None], size=size, mode="bilinear",
                                align_corners=False)[0, 0] >= 0.5).to(frames.dtype)
    return image, keep, index


# How a reference is framed: "frame", the whole frame (its centre crop); "character", a portrait of
# the figure (`portrait`), as users frame references. Training (`data.reference_framing`), the
# SynthWorld scorer and the demo all take these names.
ReferenceFraming = Literal["frame", "character"]
REFERENCE_FRAMINGS: tuple[str, ...] = get_args(ReferenceFraming)


def character_box(mask: torch.Tensor, aspect: float, margin: float = 0.1) -> tuple[int, int, int, int]:
    """`(top, left, height, width)`: a crop of `aspect` (width / height) framing the character of `mask [H, W]`.

    The character's box grown by `margin` of its height on every side, then widened (or made
    taller) about its centre to the aspect, and moved to lie inside the image; a crop bigger than
    the image shrinks to the largest centred crop of the aspect. A portrait, as a user's reference is.
    """
    height, width = mask.shape
    box = _bounding_boxes(_binarise(mask)[None])[0]
    if box is None:
        raise AA2InputError("The reference frame's character mask is empty: nothing to frame.")
    top, bottom, left, right = box
    pad = margin * (bottom - top)
    crop_h = (bottom - top) + 2 * pad
    crop_w = (right - left) + 2 * pad
    crop_h, crop_w = max(crop_h, crop_w / aspect), max(crop_w, crop_h * aspect)
    most_h, most_w = _centre_crop_size(height, width, aspect)
    crop_h, crop_w = min(max(1, round(crop_h)), most_h), min(max(1, round(crop_w)), most_w)
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    top = min(max(0, round(centre_y - crop_h / 2)), height - crop_h)
    left = min(max(0, round(centre_x - crop_w / 2)), width - crop_w)
    return top, left, crop_h, crop_w


def portrait(image: torch.Tensor, mask: torch.Tensor, aspect: float, size: tuple[int, int] | None = None,
             margin: float = 0.1) -> torch.Tensor:
    """`image [3, H, W]` cropped to `character_box(mask, aspect, margin)`, resized to `size` (H, W) if given:
    the reference a model trained with `framing="character"` expects."""
    top, left, height, width = character_box(mask, aspect, margin)
    crop = image[:, top : top + height, left : left + width]
    if size is None:
        return crop
    return nnf.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


# --- helpers --------------------------------------------------------------------------------


def _check_frames(frames: object) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise AA2InputError(f"Frames must be [F, 3, H, W] float 0..1; got {shape}.")
    if not frames.dtype.is_floating_point:
        raise AA2InputError(f"Frames must be float in 0..1; got {frames.dtype}.")


def scale_about(maps: torch.Tensor, scale: float, centre: tuple[float, float]) -> torch.Tensor:
    """`maps [F, C, H, W]` scaled by `scale` about `centre = (y, x)`: out(p) = in(c + (p - c) / s).

    Pixel-centre coordinates (pixel i spans [i, i+1)); zeros come in from outside the frame. The one
    transform of `random_scale`, which training also applies to the pose maps of a scaled clip.
    """
    count, _, height, width = maps.shape
    cy, cx = centre
    ys = (torch.arange(height, device=maps.device, dtype=torch.float64) + 0.5 - cy) / scale + cy
    xs = (torch.arange(width, device=maps.device, dtype=torch.float64) + 0.5 - cx) / scale + cx
    # align_corners=False: normalised -1..1 spans the pixels' outer edges.
    gy, gx = torch.meshgrid(2 * ys / height - 1, 2 * xs / width - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].to(maps.dtype).expand(count, -1, -1, -1)
    return nnf.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _centre_crop_size(height: int, width: int, aspect: float) -> tuple[int, int]:
    if width / height > aspect:
        return height, max(1, round(height * aspect))
    return max(1, round(width / aspect)), width


def _cover(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale `[3, h, w]` to cover `height × width`, then centre-crop to it."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise AA2InputError(f"Background images must be [3, h, w]; got {tuple(image.shape)}.")
    h, w = image.shape[1:]
    factor = max(height / h, width / w)
    new_h, new_w = max(height, round(h * factor)), max(width, round(w * factor))
    image = nnf.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                            align_corners=False, antialias=factor < 1)[0].clamp(0, 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[:, top : top + height, left : left + width]
