"""SAM2 masks for the character and the objects it touches (paper §3.1, §3.2).

Animate Anyone 2 takes its character mask `M_c` and its object sequence `I_o` from SAM; this
module runs Meta's SAM2 video predictor (the `sam2` package, 1.x) on frames held in memory.

Loading. A checkpoint (`.pt` holding `{"model": state_dict}` as Meta ships it, a bare state dict,
or `.safetensors` as ComfyUI packs convert it) is matched to a config bundled in the `sam2`
package by the shapes in its state dict (Hiera width and depth; SAM2.1 adds
`no_obj_embed_spatial`), checked against its file name (`sam2.1_hiera_base_plus.pt`,
`sam2_hiera_l-fp16.safetensors`, …) so a misnamed file is reported before seconds are spent
building the wrong model; or the caller names the config. The yaml is read with OmegaConf and
instantiated with `hydra.utils.instantiate`, not through `sam2.build_sam`, whose `compose` needs
Hydra's global config search path and fails when anything else in the process initialised Hydra.
The overrides are the ones `build_sam2_video_predictor` applies. Nothing is downloaded.

Frames from memory. The predictor's `init_state` reads a JPEG folder or an mp4. Here it gets a
lazy sequence instead: each frame is resized and normalised when the predictor asks for it (it
caches one frame's features at a time), so no `F × 3 × 1024 × 1024` copy of the video is made.
The loader swap is scoped to the one `init_state` call and undone in `finally`.

Bounded memory, and why not windows. SAM2 keeps every frame's output (memory features, logits,
object pointer) in its state, so a plain run grows with the video (≈0.8 MB per frame and object
at 1024 px, on the compute device). But the model only *reads* the prompt frame, the last
`num_maskmem` frames (every `memory_temporal_stride_for_eval`-th) and the object pointers of the
last `max_obj_ptrs_in_encoder` frames. Outputs older than that horizon are dropped as the
propagation moves on (the first pass's outputs next to the prompt frame are kept for the second
pass, which reads them), so memory is bounded by about three horizons whatever the length, and
the masks are *identical* to an unbounded run (tested). The alternative — cutting the video into
windows and re-seeding each with the previous window's last mask — forgets the user's prompt
frame (which is what keeps the chosen person in a multi-person video) and feeds a thresholded
mask back at every seam, so errors compound; it buys nothing the pruning does not.

Precision. bf16 and fp16 run under `torch.autocast` with fp32 weights, as Meta runs SAM2: its code
casts input to float32 and mixes parameters into activations outside autocast's op list, so half
weights break it. SAM2 1.x stores every frame's mask memory in bfloat16 whatever the autocast
type, and under fp16 autocast the `torch.cat` of those memories with the (float16) object
pointers fails ("Unexpected floating ScalarType"). So in fp16 the stored memories are recast to
float16 between frames (`_store_memory_as`), before any later frame reads them — the same two
bytes per value sam2 keeps, in the type the rest of the step computes in. bf16 works on CPU, MPS
and all CUDA GPUs (emulated, slower, before Ampere); fp16 suits GPUs without bf16; fp32 is the
fallback.

Images. The same path segments one image (a one-frame video). `SAM2ImagePredictor` is not used:
it needs torchvision (`sam2.utils.transforms`), as does `automatic_mask_generator`.

Layouts: frames `[F, 3, H, W]` float 0..1; masks `[O, F, H, W]` bool, O = one per prompt, in the
order given. Prompt coordinates are pixels of the frames, x to the right, y down.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as nnf
from einops import rearrange

from ..errors import AA2Error, AA2InputError, AA2WeightsError, size_text
from ..weights.files import check_dtype_kinds, read_state_dict

Precision = Literal["fp32", "fp16", "bf16"]

SIZES = ("tiny", "small", "base_plus", "large")
_SIZE_TAG = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
VERSIONS = ("sam2.1", "sam2")
# Meta's release names; ComfyUI SAM2 packs keep these stems (sometimes with -fp16 / .safetensors).
EXPECTED_FILES = tuple(f"{v}_hiera_{s}.pt" for v in VERSIONS for s in SIZES)

# Hiera trunk (embed_dim, block count) per size; read off `image_encoder.trunk.*` when the file
# name says nothing. Tiny and small share the width and differ in depth.
_TRUNK_SHAPES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}

_IMAGE_MEAN = (0.485, 0.456, 0.406)  # SAM2's input normalisation (ImageNet statistics)
_IMAGE_STD = (0.229, 0.224, 0.225)
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --- loading --------------------------------------------------------------------------------


@dataclass
class SAM2Model:
    """A loaded SAM2 video predictor and what it was loaded as."""

    predictor: Any  # sam2.sam2_video_predictor.SAM2VideoPredictor
    config: str  # bundled config name ("sam2.1/sam2.1_hiera_t") or the yaml path / "<mapping>"
    path: Path
    device: torch.device
    precision: Precision = "fp32"

    @property
    def image_size(self) -> int:
        return int(self.predictor.image_size)


def bundled_config(version: str, size: str) -> str:
    """The name of the config bundled in `sam2` for a version and size: `sam2.1/sam2.1_hiera_b+`."""
    if version not in VERSIONS or size not in SIZES:
        raise AA2InputError(
            f"Unknown SAM2 model {version!r} {size!r}: versions are {', '.join(VERSIONS)}, "
            f"sizes {', '.join(SIZES)}."
        )
    return f"{version}/{version}_hiera_{_SIZE_TAG[size]}"


def config_from_filename(name: str) -> str | None:
    """The bundled config a checkpoint's file name names, or None if it names no size.

    Accepts Meta's names and the usual renamings: `sam2.1_hiera_base_plus.pt`,
    `sam2_1_hiera_tiny-fp16.safetensors`, `sam2_hiera_b+.pt`, `sam2.1-hiera-large.safetensors`.
    Without a `2.1`/`2_1` the file is taken to be SAM2 (1.0).
    """
    stem = Path(name).name.lower()
    version = "sam2.1" if re.search(r"sam\s*2[._-]?1", stem) else "sam2"
    patterns = {
        "base_plus": r"base[_-]?plus|b\+|_bp\b|[_-]b[_.-]",
        "large": r"large|[_-]l(?=[_.-]|$)",
        "small": r"small|[_-]s(?=[_.-]|$)",
        "tiny": r"tiny|[_-]t(?=[_.-]|$)",
    }
    # Strip the version prefix so "sam2.1" never reads as a size tag.
    rest = re.sub(r"^.*?hiera", "", stem) if "hiera" in stem else stem
    for size, pattern in patterns.items():
        if re.search(pattern, rest):
            return bundled_config(version, size)
    return None


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The bundled config whose shapes a state dict has, or None if it matches none of them."""
    patch = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {
        int(m.group(1))
        for key in state_dict
        if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", key))
    }
    size = _TRUNK_SHAPES.get((int(patch.shape[0]), len(blocks)))
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in state_dict else "sam2"
    return bundled_config(version, size)


def load_sam2(
    path: str | Path,
    *,
    config: str | Path | Mapping | None = None,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
) -> SAM2Model:
    """Load a SAM2/SAM2.1 checkpoint as a video predictor, from local files only.

    path: a `.pt`/`.pth` or `.safetensors` file, or a folder holding exactly one SAM2 checkpoint
        (ComfyUI's `models/sam2`).
    config: None picks the bundled config from the file name, then from the weights' shapes; or a
        bundled name (`"sam2.1_hiera_t"`, `"sam2.1/sam2.1_hiera_b+.yaml"`), a yaml path, or a
        mapping with a `model` node (the tests' micro config).
    device: "cpu", "cuda", "cuda:1", "mps". precision: "fp32", or "bf16" / "fp16" (autocast
        over fp32 weights; module docstring).
    """
    if precision not in _DTYPES:
        raise AA2InputError(f"precision must be 'fp32', 'bf16' or 'fp16'; got {precision!r}.")
    device = _check_device(device)
    file = _resolve_file(Path(path))
    state_dict = _read_state_dict(file)

    if config is None:
        config = _pick_config(file, state_dict)
    _require_sam2()
    model_cfg, config_label = _model_config(config)
    predictor = _instantiate(model_cfg)
    _load_strict(predictor, state_dict, file, config_label)
    predictor = predictor.to(device).eval()
    return SAM2Model(predictor, config_label, file, device, precision)


# --- prompts and propagation ----------------------------------------------------------------


@dataclass(frozen=True)
class ObjectPrompt:
    """What picks one object (the character, or a thing it touches) on the prompt frame.

    positive / negative: click points `(x, y)` in pixels on the object / on what is not it (in a
    multi-person video, a negative click on the other person keeps them out). box: `(x0, y0, x1,
    y1)` in pixels. mask: `[H, W]` at the frames' size. Points and a box can be combined; a mask
    stands alone (SAM2 takes a mask *or* clicks on a frame).
    """

    positive: Sequence[tuple[float, float]] = ()
    negative: Sequence[tuple[float, float]] = ()
    box: tuple[float, float, float, float] | None = None
    mask: torch.Tensor | None = field(default=None, compare=False)


def segment_video(
    model: SAM2Model,
    frames: torch.Tensor,
    prompts: Sequence[ObjectPrompt],
    *,
    prompt_frame: int = 0,
    threshold: float | None = 0.0,
    bounded_memory: bool = True,
    offload_state_to_cpu: bool = False,
    progress: Any = None,
    _memory_log: list[int] | None = None,
) -> torch.Tensor:
    """Masks of each prompted object on every frame: SAM2's video predictor, both directions.

    frames: `[F, 3, H, W]` float 0..1 (F = 1 segments an image). prompts: one per object, all on
    frame `prompt_frame`; objects are tracked independently (one SAM2 object id each, no
    overlap constraint), so adding an object never changes another's mask.
    threshold: masks are `logits > threshold`; None returns the logits (float32) instead.
    bounded_memory: drop per-frame state the model can no longer read (module docstring);
        False keeps SAM2's unbounded state (for comparison).
    progress: optional callable `progress(done, total)`, called once per frame.

    Returns `[O, F, H, W]` bool (or float32 logits) on the CPU, O = len(prompts).
    """
    _check_frames(frames)
    count, _, height, width = frames.shape
    if not isinstance(prompt_frame, int) or not 0 <= prompt_frame < count:
        raise AA2InputError(
            f"prompt_frame must be a frame index in 0..{count - 1}; got {prompt_frame!r}."
        )
    if not prompts:
        raise AA2InputError(
            "No object to segment: give at least one ObjectPrompt (clicks, a box or a mask)."
        )
    for i, prompt in enumerate(prompts):
        _check_prompt(prompt, i, height, width)

    predictor = model.predictor
    out = torch.empty(
        (len(prompts), count, height, width),
        dtype=torch.bool if threshold is not None else torch.float32,
    )
    with torch.inference_mode(), _autocast(model):
        state = _init_state(predictor, frames, model.device, offload_state_to_cpu)
        for obj_id, prompt in enumerate(prompts):
            _add_prompt(predictor, state, prompt_frame, obj_id, prompt)

        # The prompt frames' memories are encoded here (propagate_in_video repeats it as a no-op).
        predictor.propagate_in_video_preflight(state)
        _store_memory_as(state, model)
        horizon = memory_horizon(predictor)
        done = 0
        # Forward from the prompt frame to the end, then backward to the start; the prompt frame
        # is yielded by both passes with the same (conditioning) output.
        for reverse in (False, True):
            if reverse and prompt_frame == 0:
                break
            passes = predictor.propagate_in_video(
                state, start_frame_idx=prompt_frame, reverse=reverse
            )
            for frame_idx, _, logits in passes:
                _store_memory_as(state, model)
                masks = rearrange(logits, "o 1 h w -> o h w").float().cpu()
                out[:, frame_idx] = masks > threshold if threshold is not None else masks
                if bounded_memory:
                    _prune_state(state, frame_idx, prompt_frame, horizon)
                if _memory_log is not None:
                    _memory_log.append(_stored_frames(state))
                if frame_idx != prompt_frame or not reverse:
                    done += 1
                    if progress is not None:
                        progress(done, count)
        # The state holds device tensors; drop it before returning so memory is freed now.
        del state
    return out


def memory_horizon(predictor: Any) -> int:
    """How many frames back (along the propagation) SAM2 still reads a frame's output.

    Mask memories reach `(num_maskmem - 1)` frames at stride r (plus rounding to the stride);
    object pointers reach `max_obj_ptrs_in_encoder - 1` frames.
    """
    stride = max(1, int(predictor.memory_temporal_stride_for_eval))
    masks = int(predictor.num_maskmem) * stride + 1
    pointers = int(predictor.max_obj_ptrs_in_encoder) if predictor.use_obj_ptrs_in_encoder else 0
    return max(masks, pointers)


# --- object images and masks from elsewhere -------------------------------------------------


def object_frames(frames: torch.Tensor, masks: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
    """The object sequence I_o (§3.2): the driving frames with everything but the objects filled.

    frames: `[F, 3, H, W]` float 0..1. masks: `[F, H, W]` for one object, or `[O, F, H, W]` for
    several (their union is kept: the paper's object guider sees all interacting objects in one
    image). Binarised at 0.5. Pixels inside the mask are bit-for-bit the frames'. The default
    fill, mid grey, is the same "no content" value the environment frames use (0 after the VAE's
    -1..1 scaling).
    """
    _check_frames(frames)
    if isinstance(masks, torch.Tensor) and masks.ndim == 4 and masks.shape[1] == frames.shape[0]:
        masks = masks.bool().any(dim=0) if masks.dtype == torch.bool else (masks >= 0.5).any(0)
    masks = normalize_masks(masks, frames, resize=False)
    if not 0.0 <= float(fill) <= 1.0:
        raise AA2InputError(f"fill must be a grey level in 0..1; got {fill}.")
    inside = rearrange(masks >= 0.5, "f h w -> f 1 h w").to(frames.device)
    return torch.where(inside, frames, torch.full_like(frames, float(fill)))


def normalize_masks(
    masks: torch.Tensor,
    frames: torch.Tensor,
    *,
    resize: bool = True,
    allow_aspect_change: bool = False,
) -> torch.Tensor:
    """Any mask from another node (hand-painted, ComfyUI's SAM3, other SAM2 packs) as `[F, H, W]`.

    masks: `[F, H, W]` (ComfyUI MASK), `[H, W]`, `[F, 1, H, W]` or `[1, H, W]`; float 0..1, bool,
        or uint8 0..255. One mask is repeated over all frames; otherwise the counts must match.
    frames: `[F, 3, H, W]`, giving the count and size. A mask of another size is resized
        (bilinear, soft values kept) if `resize` and its aspect ratio is the frames' (within 1%,
        or any ratio with `allow_aspect_change`): a different aspect usually means a different
        crop, which would misplace the mask.

    Returns `[F, H, W]` float32 in 0..1 on the frames' device.
    """
    _check_frames(frames)
    count, _, height, width = frames.shape
    if not isinstance(masks, torch.Tensor):
        raise AA2InputError(f"The mask must be a torch tensor; got {type(masks).__name__}.")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    elif masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or min(masks.shape) < 1:
        raise AA2InputError(
            f"A mask must be [F, H, W], [H, W] or [F, 1, H, W]; got shape {tuple(masks.shape)}."
        )
    if masks.dtype == torch.bool:
        masks = masks.float()
    elif masks.dtype == torch.uint8:
        masks = masks.float() / 255.0
    elif masks.dtype.is_floating_point:
        masks = masks.float()
        low, high = float(masks.min()), float(masks.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise AA2InputError(
                f"Mask values must lie in 0..1; these range {low:.3g}..{high:.3g}. "
                "Normalise the mask (divide 0..255 masks by 255)."
            )
        masks = masks.clamp(0, 1)
    else:
        raise AA2InputError(f"Masks must be float, bool or uint8; got {masks.dtype}.")

    if masks.shape[0] == 1 and count > 1:
        masks = masks.expand(count, -1, -1)
    elif masks.shape[0] != count:
        raise AA2InputError(
            f"The mask has {masks.shape[0]} frames but the video has {count}. Give one mask per "
            "frame, or a single mask to use on every frame; trim or extend one to the other."
        )

    mh, mw = masks.shape[1:]
    if (mh, mw) != (height, width):
        if not resize:
            raise AA2InputError(
                f"The mask is {size_text(mh, mw)} but the frames are {size_text(height, width)}; resize one to the "
                "other (normalize_masks does it)."
            )
        if not allow_aspect_change and abs((mh / mw) / (height / width) - 1) > 0.01:
            raise AA2InputError(
                f"The mask is {size_text(mh, mw)}, aspect {mw / mh:.3f}, but the frames are "
                f"{size_text(height, width)}, aspect {width / height:.3f}: it was probably made for a "
                "different crop. Crop it the same way as the video, or pass "
                "allow_aspect_change=True to stretch it."
            )
        masks = nnf.interpolate(
            rearrange(masks, "f h w -> f 1 h w"), size=(height, width), mode="bilinear",
            align_corners=False, antialias=mh > height or mw > width,
        )
        masks = rearrange(masks, "f 1 h w -> f h w").clamp(0, 1)
    return masks.contiguous().to(frames.device)


# --- helpers: checks ------------------------------------------------------------------------


def _check_frames(frames: object) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        hint = ""
        if isinstance(frames, torch.Tensor) and frames.ndim == 4 and frames.shape[-1] == 3:
            hint = (" These look channels-last (ComfyUI's IMAGE layout); convert with "
                    "einops.rearrange(frames, 'f h w c -> f c h w').")
        raise AA2InputError(f"Frames must be [F, 3, H, W]; got {shape}.{hint}")
    if not frames.dtype.is_floating_point:
        raise AA2InputError(
            f"Frames must be float in 0..1; got {frames.dtype}. Divide 8-bit frames by 255."
        )
    if min(frames.shape) < 1:
        raise AA2InputError(f"Frames have an empty axis: {tuple(frames.shape)}.")


def _check_prompt(prompt: ObjectPrompt, index: int, height: int, width: int) -> None:
    who = f"Prompt {index} (object {index})"
    if not isinstance(prompt, ObjectPrompt):
        raise AA2InputError(f"{who} must be an ObjectPrompt; got {type(prompt).__name__}.")
    has_clicks = bool(prompt.positive) or bool(prompt.negative) or prompt.box is not None
    if prompt.mask is None and not (prompt.positive or prompt.box is not None):
        raise AA2InputError(
            f"{who} has nothing that says where the object is: give at least one positive click, "
            "a box or a mask (negative clicks alone only say where it is not)."
        )
    if prompt.mask is not None and has_clicks:
        raise AA2InputError(
            f"{who} has both a mask and clicks/box; SAM2 takes one or the other on a frame. "
            "Use the mask alone, or the clicks and box alone."
        )
    for kind, points in (("positive", prompt.positive), ("negative", prompt.negative)):
        for point in points:
            if len(point) != 2:
                raise AA2InputError(f"{who}: a {kind} click must be (x, y); got {point!r}.")
            x, y = float(point[0]), float(point[1])
            if not (0 <= x <= width and 0 <= y <= height):
                raise AA2InputError(
                    f"{who}: the {kind} click ({x:g}, {y:g}) lies outside the {size_text(height, width)} "
                    "frame. Clicks are pixels of the frames given, x from the left, y from the top."
                )
    if prompt.box is not None:
        if len(prompt.box) != 4:
            raise AA2InputError(f"{who}: the box must be (x0, y0, x1, y1); got {prompt.box!r}.")
        x0, y0, x1, y1 = map(float, prompt.box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise AA2InputError(
                f"{who}: the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have x0 < x1, y0 < y1 and "
                f"lie inside the {size_text(height, width)} frame."
            )
    if prompt.mask is not None:
        mask = prompt.mask
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (height, width):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise AA2InputError(
                f"{who}: the mask must be [H, W] = [{height}, {width}], the frames' size; got "
                f"{shape}. normalize_masks resizes masks from other nodes."
            )
        if not bool((mask >= 0.5).any() if mask.dtype != torch.bool else mask.any()):
            raise AA2InputError(f"{who}: the mask is empty; it must cover the object.")


def _check_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise AA2InputError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'mps'.") from error
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise AA2InputError(f"Device {device} is not available on this machine.")
    return device


# --- helpers: files and config --------------------------------------------------------------


def _resolve_file(path: Path) -> Path:
    suffixes = {".pt", ".pth", ".safetensors"}
    if path.is_dir():
        found = sorted(
            p for p in path.iterdir() if p.suffix in suffixes and "sam2" in p.name.lower()
        )
        if len(found) == 1:
            return found[0]
        if not found:
            raise AA2WeightsError(
                f"No SAM2 checkpoint in {path}. Put one of {', '.join(EXPECTED_FILES)} "
                "(from Meta's SAM2 release, or the .safetensors conversions) into that folder."
            )
        raise AA2WeightsError(
            f"{path} holds several SAM2 checkpoints ({', '.join(p.name for p in found)}); "
            "name the one to use."
        )
    if not path.is_file():
        raise AA2WeightsError(
            f"SAM2 checkpoint {path.name} not found in {path.parent}. Expected one of "
            f"{', '.join(EXPECTED_FILES)} (or the same names as .safetensors) in that folder; "
            "nothing is downloaded."
        )
    if path.suffix not in suffixes:
        raise AA2WeightsError(
            f"{path.name} is not a SAM2 checkpoint file: expected .pt, .pth or .safetensors."
        )
    return path


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, read by the pack's one reader (which tells an empty, truncated or corrupt
    file, a renamed safetensors file, a pickle holding code and NaN/inf weights apart, naming the
    file), then checked to be SAM2's before seconds are spent building a model."""
    state = read_state_dict(file, wrappers=("model",))  # Meta's checkpoints: {"model": state_dict}
    if not any(key.startswith("image_encoder.trunk.") for key in state):
        raise AA2WeightsError(
            f"{file} is not a SAM2 checkpoint: it has no image_encoder.trunk.* weights (its "
            f"{len(state)} tensors are named like {sorted(state)[:3]}). Expected one of "
            f"{', '.join(EXPECTED_FILES)}, from Meta's SAM2 release or a safetensors conversion of it."
        )
    return state


def _pick_config(file: Path, state_dict: Mapping[str, torch.Tensor]) -> str:
    """The bundled config for a file, checked before anything is built (a large model takes
    seconds to build, and a wrong pick would only fail after that)."""
    by_name = config_from_filename(file.name)
    by_shape = config_from_state_dict(state_dict)
    if by_shape is None:
        said = f" (its name says {by_name})" if by_name else ""
        raise AA2WeightsError(
            f"{file.name}{said} has the shapes of none of the bundled SAM2 configs (tiny, small, "
            "base_plus, large; SAM2 or SAM2.1). If it is a SAM2 variant, pass its config= (a yaml "
            f"file); otherwise use one of {', '.join(EXPECTED_FILES)}."
        )
    if by_name is not None and by_name != by_shape:
        raise AA2WeightsError(
            f"{file.name} is named as {by_name} but its weights are {by_shape}. Rename the file "
            "after the model it holds, or pass config= to say which it is."
        )
    return by_shape


def _model_config(config: str | Path | Mapping) -> tuple[Any, str]:
    """The `model` node of a config (OmegaConf), resolved, and a label for messages."""
    from omegaconf import OmegaConf

    if isinstance(config, Mapping) or OmegaConf.is_config(config):
        cfg = OmegaConf.create(dict(config) if isinstance(config, Mapping) else config)
        label = "<mapping>"
    else:
        text = str(config)
        as_path = Path(text)
        if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
            cfg, label = OmegaConf.load(as_path), str(as_path)
        else:
            label = _bundled_name(text)
            cfg = OmegaConf.load(str(resources.files("sam2") / "configs" / f"{label}.yaml"))
    if "model" not in cfg:
        raise AA2InputError(f"The SAM2 config {label} has no 'model' node.")
    # The overrides build_sam2_video_predictor applies (the video predictor class and its
    # post-processing), so a model loaded here tracks exactly as one loaded by sam2 itself.
    overrides = {
        "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "sam_mask_decoder_extra_args": {
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        "binarize_mask_from_pts_for_mem_enc": True,
        # Hole filling needs sam2's CUDA extension; without it sam2 warns on every frame and
        # skips it, so it is off unless the extension is there.
        "fill_hole_area": 8 if _has_sam2_extension() else 0,
    }
    cfg = OmegaConf.merge(cfg, {"model": overrides})
    OmegaConf.resolve(cfg)
    return cfg.model, label


def _bundled_name(text: str) -> str:
    """A bundled config's name from "sam2.1_hiera_t", "sam2.1/sam2.1_hiera_t.yaml", "…_tiny"."""
    stem = Path(text).name.removesuffix(".yaml").removesuffix(".yml")
    for version in VERSIONS:
        for size, tag in _SIZE_TAG.items():
            if stem in (f"{version}_hiera_{tag}", f"{version}_hiera_{size}"):
                return bundled_config(version, size)
    raise AA2InputError(
        f"Unknown SAM2 config {text!r}: use a bundled one ("
        + ", ".join(bundled_config(v, s).split("/")[1] for v in VERSIONS for s in SIZES)
        + "), a path to a .yaml file, or a mapping."
    )


def _require_sam2() -> None:
    try:
        import sam2  # noqa: F401  (its __init__ registers the config module with Hydra)
        import hydra.utils  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError as error:
        raise AA2Error(
            f"SAM2 segmentation needs the `sam2` package ({error}). Install it without letting "
            "pip replace torch: `pip install hydra-core iopath` then "
            "`SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps sam2==1.1.0`."
        ) from error


def _instantiate(model_cfg: Any) -> Any:
    from hydra.utils import instantiate

    return instantiate(model_cfg, _recursive_=True)


def _load_strict(predictor: Any, state_dict: Mapping, file: Path, label: str) -> None:
    own = predictor.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        problems = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        for what, keys in problems:
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
        raise AA2WeightsError(
            f"{file.name} does not fit the SAM2 config {label}: {'; '.join(parts)}. The file is "
            "another SAM2 size or version than its name or the chosen config says: pass the "
            "right config=, or rename the file after the model it holds."
        )
    # load_state_dict would copy integer weights into the float parameters without a word
    check_dtype_kinds(own, state_dict, f"SAM2 model ({label})", str(file))
    predictor.load_state_dict(state_dict, strict=True)


def _has_sam2_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except Exception:
        return False
    return True


# --- helpers: running the predictor ---------------------------------------------------------


class _FrameSource:
    """Frames `[F, 3, H, W]` seen as SAM2's per-frame inputs, converted when asked for.

    Stands in for the list (or async JPEG loader) `init_state` would build: `len` and
    `[i] -> [3, S, S]` normalised on the compute device.
    """

    def __init__(self, frames: torch.Tensor, image_size: int, device: torch.device):
        self.frames, self.image_size, self.device = frames, image_size, device
        self.mean = torch.tensor(_IMAGE_MEAN, device=device)[:, None, None]
        self.std = torch.tensor(_IMAGE_STD, device=device)[:, None, None]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        frame = self.frames[index : index + 1].to(self.device, torch.float32)
        # SAM2 squashes every frame to a square (its loader does the same with PIL).
        frame = nnf.interpolate(frame, size=(self.image_size,) * 2, mode="bilinear",
                                align_corners=False, antialias=True)
        return (frame[0].clamp(0, 1) - self.mean) / self.std


def _init_state(predictor: Any, frames: torch.Tensor, device: torch.device, offload: bool) -> dict:
    """`predictor.init_state` with frames from memory instead of a JPEG folder or mp4."""
    import sam2.sam2_video_predictor as video_module

    source = _FrameSource(frames, int(predictor.image_size), device)
    original = video_module.load_video_frames

    def from_memory(video_path, **kwargs):
        if video_path is source:
            return source, frames.shape[2], frames.shape[3]
        return original(video_path=video_path, **kwargs)

    video_module.load_video_frames = from_memory
    try:
        return predictor.init_state(source, offload_state_to_cpu=offload)
    finally:
        video_module.load_video_frames = original


def _add_prompt(predictor: Any, state: dict, frame: int, obj_id: int, prompt: ObjectPrompt) -> None:
    if prompt.mask is not None:
        mask = prompt.mask if prompt.mask.dtype == torch.bool else prompt.mask >= 0.5
        predictor.add_new_mask(state, frame_idx=frame, obj_id=obj_id, mask=mask.cpu())
        return
    points = [*prompt.positive, *prompt.negative]
    labels = [1] * len(prompt.positive) + [0] * len(prompt.negative)
    predictor.add_new_points_or_box(
        state,
        frame_idx=frame,
        obj_id=obj_id,
        points=torch.tensor(points, dtype=torch.float32).reshape(-1, 2) if points else None,
        labels=torch.tensor(labels, dtype=torch.int32) if points else None,
        box=torch.tensor(prompt.box, dtype=torch.float32) if prompt.box is not None else None,
    )


def _prune_state(state: dict, frame_idx: int, prompt_frame: int, horizon: int) -> None:
    """Drop non-conditioning outputs no later step can read (see the module docstring)."""
    for outputs in state["output_dict_per_obj"].values():
        stored = outputs["non_cond_frame_outputs"]
        for t in [t for t in stored
                  if abs(t - frame_idx) > horizon and abs(t - prompt_frame) > horizon]:
            del stored[t]


def _store_memory_as(state: dict, model: SAM2Model) -> None:
    """In fp16, recast the mask memories sam2 stored in bfloat16 (see the module docstring)."""
    if model.precision != "fp16":
        return
    for outputs in state["output_dict_per_obj"].values():
        for stored in (outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]):
            for out in stored.values():
                features = out.get("maskmem_features")
                if features is not None and features.dtype == torch.bfloat16:
                    out["maskmem_features"] = features.to(torch.float16)


def _stored_frames(state: dict) -> int:
    """How many frames' outputs the state holds, over all objects (for the tests' memory check)."""
    return sum(
        len(o["non_cond_frame_outputs"]) + len(o["cond_frame_outputs"])
        for o in state["output_dict_per_obj"].values()
    )


def _autocast(model: SAM2Model) -> contextlib.AbstractContextManager:
    if model.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(model.device.type, dtype=_DTYPES[model.precision])

