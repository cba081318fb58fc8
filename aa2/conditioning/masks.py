"""The shape-agnostic mask and the environment frames it cuts (paper §3.2, eq. 2).

Animate Anyone 2 conditions on the *environment*: the driving video with the character removed.
Cutting the character out with its exact mask leaks its silhouette (the model learns to fill the
outline, and a target of another build is squeezed into it); cutting out its bounding box loses
the scene around it. Eq. 2 sits between the two: the character mask `M_c`, inside its `h × w`
bounding box, is split into `kh × kw` non-overlapping blocks, and every pixel of a block takes the
block's maximum, giving `M_f`:

    M_f(i, j) = max_{(i, j) ∈ P_c^(k)} P_c^(k)(i, j)

**What kh and kw count.** The paper: "We divided the character mask M_c into kh×kw non-overlapping
blocks, where kh ∈ (1, h), kw ∈ (1, w) … During inference, we set kh = h/10 and kw = w/10."
So kh and kw are *numbers of blocks* along the box's height and width, not block sizes: the range
(1, h) only makes sense for a count (kh = 1 is the whole box, kh = h is one-pixel blocks, i.e. the
exact mask), and "divided into kh×kw blocks" says so outright. The inference setting kh = h/10
therefore means blocks about 10 pixels on a side, whatever the character's size. Here that is
`kh = max(1, round(h / 10))` (halves round up), and likewise for kw.

Where this departs from the paper, and why:
- Blocks tile the box exactly: block edges are `floor(b · h / kh)`, so when kh does not divide h
  the blocks differ in size by at most one pixel. The paper does not say how it handles remainders.
- Training draws kh ∈ [1, h] and kw ∈ [1, w] with both ends included (the paper writes (1, h));
  the ends are the bounding box and the exact mask, both legitimate if rare samples. The draw is
  made once per clip, from the clip's union box, so all frames of a clip share one block grid
  density (the paper does not say; one draw per clip keeps the mask's character steady over
  time, as the motion module sees it). A frame whose own box is smaller than the drawn count uses
  its own height/width instead: a block cannot be smaller than a pixel.
- `dilate` (a square max-pool of that radius, applied before the box is taken) and the `empty`
  policy for frames with no character are additions for real segmentations, which are ragged and
  drop out; at `dilate=0, empty="keep"` the function is eq. 2 alone.
- The paper's random scale augmentation (the other half of §3.2) moves pixels of the video, not
  the mask, and lives with the training data pipeline.

Layouts: masks `[F, H, W]`, frames `[F, 3, H, W]` float 0..1 (aa2's core layout; the ComfyUI
boundary converts from IMAGE `[B, H, W, C]`), latent masks `[F, 1, H/8, W/8]`.
"""

from __future__ import annotations

import numbers
from typing import Literal

import torch
import torch.nn.functional as nnf
from einops import rearrange

from ..errors import AA2InputError, size_text

BoxMode = Literal["per_frame", "clip"]
EmptyPolicy = Literal["keep", "previous", "error"]

INFERENCE_BLOCK_PX = 10  # §3.2: "kh = h/10, kw = w/10", i.e. blocks of about 10 pixels


def shape_agnostic_mask(
    mask: torch.Tensor,
    kh: int | None = None,
    kw: int | None = None,
    *,
    box: BoxMode = "per_frame",
    dilate: int = 0,
    empty: EmptyPolicy = "keep",
    generator: torch.Generator | None = None,
    random_blocks: bool = False,
) -> torch.Tensor:
    """Eq. 2: the character mask coarsened to the max of each of kh × kw blocks of its box.

    mask: `[F, H, W]`, float (binarised at 0.5) or bool, on any device.
    kh, kw: number of blocks along the box's height and width (not block sizes; see the module
        docstring). None means the inference setting, about 10-pixel blocks per frame's box.
        A count larger than a frame's box is reduced to the box size (one-pixel blocks).
    box: "per_frame" takes each frame's own bounding box; "clip" takes the union box over the
        clip, so the block grid stands still across frames.
    dilate: grow the mask by this many pixels (square max-pool) before anything else.
    empty: for frames with no character: "keep" leaves them empty; "previous" copies the result
        of the nearest frame that has one (ties go to the earlier frame; an all-empty clip stays
        empty); "error" raises AA2InputError naming the frames.
    random_blocks: training mode; draws kh ∈ [1, h], kw ∈ [1, w] once for the clip (h × w being
        the clip's union box) from `generator`, so a seeded generator reproduces the mask.

    Returns `[F, H, W]` float 0/1 (the input's float dtype, float32 for bool input) on the input's
    device. It always contains the binarised, dilated input mask.
    """
    _check_mask(mask, "mask")
    _check_options(kh, kw, box, dilate, empty, random_blocks)

    frames = mask.shape[0]
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    character = _binarise(mask).to(dtype)
    if dilate > 0:
        # max_pool2d pads with -inf, so the border never invents character pixels.
        character = rearrange(character, "f h w -> f 1 h w")
        character = nnf.max_pool2d(character, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
        character = rearrange(character, "f 1 h w -> f h w")

    boxes = _bounding_boxes(character > 0.5)
    filled = [i for i, b in enumerate(boxes) if b is not None]
    missing = [i for i, b in enumerate(boxes) if b is None]
    if missing and empty == "error":
        raise AA2InputError(
            f"The character mask is empty in {len(missing)} of {frames} frames "
            f"(frame indices {_list_indices(missing)}). Fix the segmentation for those frames, "
            "or choose empty='keep' (leave them unmasked) or empty='previous' (reuse the nearest "
            "frame's mask)."
        )

    result = torch.zeros_like(character)
    if not filled:
        return result

    union = _union_box([boxes[i] for i in filled])
    if random_blocks:
        kh, kw = draw_block_counts(union[1] - union[0], union[3] - union[2], generator)

    for i in filled:
        top, bottom, left, right = union if box == "clip" else boxes[i]
        h, w = bottom - top, right - left
        blocks_h = min(kh if kh is not None else _inference_count(h), h)
        blocks_w = min(kw if kw is not None else _inference_count(w), w)
        result[i, top:bottom, left:right] = _block_max(
            character[i, top:bottom, left:right], blocks_h, blocks_w
        )

    if missing and empty == "previous":
        for i in missing:
            nearest = min(filled, key=lambda j: (abs(i - j), j))
            result[i] = result[nearest]
    return result


EnvironmentMask = Literal["agnostic", "precise", "box"]
ENVIRONMENT_MASKS: tuple[str, ...] = ("agnostic", "precise", "box")
_ONE_PIXEL_BLOCKS = 1 << 30  # more blocks than any box has pixels: reduced to one-pixel blocks


def environment_mask(
    mask: torch.Tensor,
    formulation: EnvironmentMask = "agnostic",
    *,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The mask that cuts the character out of the environment, in one of the three formulations
    the paper compares (§3.2, Figure 7): "agnostic" is eq. 2 (random block counts in training, about
    10-pixel blocks at inference), "precise" the character mask itself, "box" its bounding box.

    The two others exist for the ablation: a model must be sampled with the formulation it was
    trained with. `mask [F, H, W]`; returns `[F, H, W]` float 0/1.
    """
    if formulation == "agnostic":
        return shape_agnostic_mask(mask, random_blocks=training, generator=generator)
    if formulation == "precise":
        return shape_agnostic_mask(mask, kh=_ONE_PIXEL_BLOCKS, kw=_ONE_PIXEL_BLOCKS)
    if formulation == "box":
        return shape_agnostic_mask(mask, kh=1, kw=1)
    raise AA2InputError(f"the environment mask is one of {', '.join(ENVIRONMENT_MASKS)}; got {formulation!r}")


def draw_block_counts(
    h: int, w: int, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """The training draw of §3.2: kh uniform in [1, h], kw uniform in [1, w], from `generator`."""
    if h < 1 or w < 1:
        raise AA2InputError(f"Cannot draw block counts for an empty box of {size_text(h, w)} pixels.")
    device = generator.device if generator is not None else "cpu"
    kh = torch.randint(1, h + 1, (1,), generator=generator, device=device)
    kw = torch.randint(1, w + 1, (1,), generator=generator, device=device)
    return int(kh), int(kw)


def environment_frames(
    frames: torch.Tensor, agnostic_mask: torch.Tensor, fill: float = 0.5
) -> torch.Tensor:
    """The environment sequence I_e (§3.1): frames with the masked region set to `fill`.

    frames: `[F, 3, H, W]` float 0..1. agnostic_mask: `[F, H, W]` (binarised at 0.5), normally
    from `shape_agnostic_mask`. Pixels outside the mask are returned bit-for-bit unchanged.
    The default fill, mid grey, is 0 after the VAE's 0..1 → -1..1 scaling: the same "no content"
    value SD inpainting models see in their masked image.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        hint = ""
        if isinstance(frames, torch.Tensor) and frames.ndim == 4 and frames.shape[-1] == 3:
            hint = (" These look channels-last (ComfyUI's IMAGE layout); convert them with "
                    "einops.rearrange(frames, 'f h w c -> f c h w') first.")
        raise AA2InputError(
            f"environment_frames expects frames as [F, 3, H, W]; got {shape}.{hint}"
        )
    if not frames.dtype.is_floating_point:
        raise AA2InputError(
            f"environment_frames expects float frames in 0..1; got dtype {frames.dtype}. "
            "Divide 8-bit frames by 255 first."
        )
    _check_mask(agnostic_mask, "agnostic_mask")
    if agnostic_mask.shape[0] != frames.shape[0] or agnostic_mask.shape[1:] != frames.shape[2:]:
        raise AA2InputError(
            f"The mask {tuple(agnostic_mask.shape)} ({agnostic_mask.shape[0]} frames) does not "
            f"match the frames {tuple(frames.shape)} ({frames.shape[0]} frames): they need the "
            "same frame count and the same height and width. Resize or trim one to the other."
        )
    if not 0.0 <= float(fill) <= 1.0:
        raise AA2InputError(f"fill must be a grey level in 0..1; got {fill}.")

    inside = rearrange(_binarise(agnostic_mask).to(frames.device), "f h w -> f 1 h w")
    return torch.where(inside, torch.full_like(frames, float(fill)), frames)


def latent_mask(mask: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """The mask at latent resolution: `[F, H, W]` → `[F, 1, H/factor, W/factor]` float 0/1.

    A latent cell is marked if *any* pixel of its factor × factor footprint is masked (max-pool,
    not mean): the VAE mixes the whole footprint into the cell, so a cell touching the character
    carries fill, not environment, and must be regenerated. A mean (then thresholded) would drop
    thin limbs and the mask's edge, and the upsampled latent mask would no longer cover the
    pixel mask.
    """
    _check_mask(mask, "mask")
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool) or factor < 1:
        raise AA2InputError(
            f"factor must be a whole number ≥ 1 (8 for SD's VAE); got {factor!r}."
        )
    _, height, width = mask.shape
    if height % factor or width % factor:
        raise AA2InputError(
            f"The mask is {size_text(height, width)} pixels, not a multiple of {factor} in both directions, "
            f"so it has no exact latent grid. Resize or crop the video to a multiple of {factor}."
        )
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    pixels = rearrange(_binarise(mask).to(dtype), "f h w -> f 1 h w")
    return nnf.max_pool2d(pixels, kernel_size=factor, stride=factor)


def mask_boxes(mask: torch.Tensor, size: tuple[int, int] | None = None) -> list[tuple[float, float, float, float] | None]:
    """Per frame of `mask [F, H, W]` (float >= 0.5 or bool), the `(x0, y0, x1, y1)` pixel box around
    it — the person box top-down pose models take — or None where the frame's mask is empty.
    `size = (H', W')`: the boxes in the pixels of frames of that size (a mask made at another size)."""
    _check_mask(mask, "mask")
    sy, sx = (1.0, 1.0) if size is None else (size[0] / mask.shape[-2], size[1] / mask.shape[-1])
    return [None if box is None else (box[2] * sx, box[0] * sy, box[3] * sx, box[1] * sy)
            for box in _bounding_boxes(_binarise(mask))]


# --- helpers -------------------------------------------------------------------------------


def _binarise(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask >= 0.5


def _check_mask(mask: object, name: str) -> None:
    if not isinstance(mask, torch.Tensor):
        raise AA2InputError(f"{name} must be a torch tensor [F, H, W]; got {type(mask).__name__}.")
    if mask.ndim != 3:
        hint = (" For a single image, add a frame axis: mask[None]." if mask.ndim == 2 else
                " For [F, 1, H, W], drop the channel axis: mask[:, 0]." if mask.ndim == 4 else "")
        raise AA2InputError(
            f"{name} must be [F, H, W] (frames, height, width); "
            f"got shape {tuple(mask.shape)}.{hint}"
        )
    if min(mask.shape) < 1:
        raise AA2InputError(f"{name} has an empty axis: shape {tuple(mask.shape)}.")


def _check_options(kh, kw, box, dilate, empty, random_blocks) -> None:
    for name, value in (("kh", kh), ("kw", kw)):
        if value is None:
            continue
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise AA2InputError(
                f"{name} is the number of blocks along the box (paper eq. 2) and must be a whole "
                f"number ≥ 1; got {value!r}. Leave it unset for the paper's inference setting."
            )
    if random_blocks and (kh is not None or kw is not None):
        raise AA2InputError(
            "random_blocks=True draws kh and kw itself; "
            "pass either random_blocks or kh/kw, not both."
        )
    if box not in ("per_frame", "clip"):
        raise AA2InputError(f"box must be 'per_frame' or 'clip'; got {box!r}.")
    if empty not in ("keep", "previous", "error"):
        raise AA2InputError(f"empty must be 'keep', 'previous' or 'error'; got {empty!r}.")
    if not isinstance(dilate, numbers.Integral) or isinstance(dilate, bool) or dilate < 0:
        raise AA2InputError(
            f"dilate is a radius in pixels and must be a whole number ≥ 0; got {dilate!r}."
        )


def _inference_count(size: int) -> int:
    return max(1, (size + INFERENCE_BLOCK_PX // 2) // INFERENCE_BLOCK_PX)


Box = tuple[int, int, int, int]  # top, bottom, left, right; bottom/right exclusive


def _bounding_boxes(character: torch.Tensor) -> list[Box | None]:
    """Per frame of a bool `[F, H, W]`, its character's box, or None where it has none."""
    rows = character.any(dim=2)  # [F, H]
    cols = character.any(dim=1)  # [F, W]
    present = rows.any(dim=1)
    # argmax of a 0/1 row returns its first 1; on the flipped row, its last.
    top = rows.to(torch.uint8).argmax(dim=1)
    bottom = rows.shape[1] - rows.flip(1).to(torch.uint8).argmax(dim=1)
    left = cols.to(torch.uint8).argmax(dim=1)
    right = cols.shape[1] - cols.flip(1).to(torch.uint8).argmax(dim=1)
    table = torch.stack([top, bottom, left, right], dim=1).tolist()  # one host sync
    return [tuple(b) if p else None for b, p in zip(table, present.tolist())]


def _union_box(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), max(b[1] for b in boxes),
            min(b[2] for b in boxes), max(b[3] for b in boxes))


def _block_index(size: int, blocks: int, device: torch.device) -> torch.Tensor:
    """For each of `size` pixels, its block: edges at floor(b · size / blocks), tiling exactly."""
    edges = torch.arange(1, blocks + 1, device=device) * size // blocks
    return torch.bucketize(torch.arange(size, device=device), edges, right=True)


def _block_max(crop: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Eq. 2 on one box `[h, w]`: every pixel takes the maximum of its block."""
    h, w = crop.shape
    rows = _block_index(h, kh, crop.device)
    cols = _block_index(w, kw, crop.device)
    cell = rows[:, None] * kw + cols[None, :]  # [h, w] → block number
    peak = crop.new_zeros(kh * kw).scatter_reduce(
        0, cell.flatten(), crop.flatten(), reduce="amax"
    )
    return peak[cell]


def _list_indices(indices: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f", … ({len(indices) - limit} more)" if len(indices) > limit else "")
