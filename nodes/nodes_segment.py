"""SAM2 nodes: the character's mask and the objects it touches, tracked through the driving video."""

from __future__ import annotations

import json
import math

import torch

from ..aa2.conditioning.sam2_segment import EXPECTED_FILES, ObjectPrompt, load_sam2, object_frames, segment_video
from ..aa2.errors import AA2InputError
from . import host
from .boundary import frames_to_image, frames_to_mask, image_to_frames, mask_to_frames, match_frames

CATEGORY = "AnimateAnyone2/segmentation"
SAM2_SLOT = {"sam2": "SAM2 / SAM2.1 checkpoints (" + ", ".join(EXPECTED_FILES[:4]) + ", ...)"}


class AA2LoadSAM2:
    DESCRIPTION = "Loads a SAM2 / SAM2.1 checkpoint (.pt or .safetensors, any size) from models/sam2, offline."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AA2_SAM2",)
    RETURN_NAMES = ("sam2",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (host.list_models("sam2"), {"tooltip": "A file from models/sam2, e.g. sam2.1_hiera_small.pt."}),
            "precision": (["fp32", "bf16", "fp16"], {"default": "fp32", "tooltip": "bf16 / fp16 run under autocast "
                          "(fp32 weights): bf16 on recent GPUs and CPUs, fp16 on GPUs without bf16."}),
        }}

    def load(self, model, precision="fp32"):
        path = host.resolve_model(model, SAM2_SLOT)
        return (load_sam2(path, device=host.torch_device(), precision=precision),)


def _number(value, what: str) -> float:
    """A finite coordinate; anything else (a word, null, NaN) is named with the input it came from."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise AA2InputError(f"{what}: {value!r} is not a finite number of pixels")
    return number


def _points(text: str, what: str) -> list[tuple[float, float]]:
    """`[[x, y], ...]` or `[{"x": .., "y": ..}, ...]` (what points-editor nodes emit); empty text: none."""
    if not text or not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise AA2InputError(f"{what} must be JSON like [[120, 340], [200, 310]] or [{{\"x\": 120, \"y\": 340}}]: "
                            f"{error}") from error
    points = []
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict) and {"x", "y"} <= set(item):
            points.append((_number(item["x"], what), _number(item["y"], what)))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            points.append((_number(item[0], what), _number(item[1], what)))
        else:
            raise AA2InputError(f"{what}: {item!r} is not a point [x, y] or {{\"x\": x, \"y\": y}}")
    return points


def _box(text: str, what: str = "box") -> tuple[float, float, float, float] | None:
    if not text or not text.strip():
        return None
    values = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    if len(values) != 4:
        raise AA2InputError(f"{what} must be four numbers x0, y0, x1, y1 in pixels; got {text!r}")
    return tuple(_number(value, what) for value in values)


def _object_prompts(text: str) -> list[ObjectPrompt]:
    """objects_json: `[{"positive": [[x, y]], "negative": [...], "box": [x0, y0, x1, y1]}, ...]`."""
    try:
        objects = json.loads(text)
    except json.JSONDecodeError as error:
        raise AA2InputError(f"objects_json is not valid JSON: {error}") from error
    prompts = []
    for i, item in enumerate(objects if isinstance(objects, list) else [objects]):
        if not isinstance(item, dict):
            raise AA2InputError(f"objects_json object {i} is {item!r}; each object is a dict like "
                                '{"positive": [[x, y]], "negative": [], "box": [x0, y0, x1, y1]}')
        where = f"objects_json object {i}"
        prompts.append(ObjectPrompt(_points(json.dumps(item.get("positive", [])), f"{where} positive"),
                                    _points(json.dumps(item.get("negative", [])), f"{where} negative"),
                                    _box(json.dumps(item["box"]), f"{where} box") if item.get("box") else None))
    return prompts


class ObjectSegment:
    DESCRIPTION = (
        "Tracks what you point at through the whole video with SAM2: the character (for the shape-agnostic "
        "mask) or the objects it touches (for the object guider). Click points and/or a box on one frame, or "
        "a mask; several objects can be given as a JSON list and are tracked separately, then merged."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("mask", "object_frames")
    OUTPUT_TOOLTIPS = ("The tracked mask on every frame (all objects merged).",
                       "The frames cut out by the mask (grey elsewhere): the object sequence for the sampler.")
    FUNCTION = "segment"

    @classmethod
    def INPUT_TYPES(cls):
        text = {"default": "", "multiline": False}
        return {
            "required": {
                "sam2": ("AA2_SAM2", {"tooltip": "From AA2 Load SAM2."}),
                "frames": ("IMAGE", {"tooltip": "The driving video."}),
                "prompt_frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "The frame the prompts "
                                 "are placed on; tracking runs forwards and backwards from it."}),
            },
            "optional": {
                "positive_points": ("STRING", {**text, "tooltip": "Clicks on the object, JSON: [[x, y], ...] or a "
                                    "points editor's [{\"x\":..,\"y\":..}]."}),
                "negative_points": ("STRING", {**text, "tooltip": "Clicks on what is NOT the object (e.g. another "
                                    "person in a multi-person video)."}),
                "box": ("STRING", {**text, "tooltip": "x0, y0, x1, y1 in pixels around the object."}),
                "objects_json": ("STRING", {"default": "", "multiline": True, "tooltip": "Several objects at once: "
                                 "[{\"positive\": [[x,y]], \"negative\": [], \"box\": [x0,y0,x1,y1]}, ...]."}),
                "prompt_mask": ("MASK", {"tooltip": "A mask on the prompt frame instead of clicks (any mask node)."}),
            },
        }

    def segment(self, sam2, frames, prompt_frame, positive_points="", negative_points="", box="",
                objects_json="", prompt_mask=None):
        video = image_to_frames(frames, "frames")
        prompts = []
        if objects_json and objects_json.strip():
            prompts += _object_prompts(objects_json)
        if positive_points.strip() or negative_points.strip() or box.strip():
            prompts.append(ObjectPrompt(_points(positive_points, "positive_points"),
                                        _points(negative_points, "negative_points"), _box(box)))
        if prompt_mask is not None:
            mask = mask_to_frames(prompt_mask, "prompt_mask")
            prompts.append(ObjectPrompt(mask=mask[min(prompt_frame, mask.shape[0] - 1)]))
        if not prompts:
            raise AA2InputError("give the object to track: positive points, a box, objects_json or a prompt_mask")
        progress = host.Progress(video.shape[0])
        masks = segment_video(sam2, video, prompts, prompt_frame=prompt_frame,
                              progress=lambda done, total: progress.update_absolute(done, total))
        merged = masks.any(dim=0).float()
        out = host.intermediate_device()
        return frames_to_mask(merged, out), frames_to_image(object_frames(video, merged), out)


class AA2ObjectFrames:
    DESCRIPTION = ("Cuts the objects out of the driving frames with a mask from any node (SAM3, other SAM2 packs, "
                   "hand-painted): the object sequence the sampler's object guider reads.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("object_frames",)
    FUNCTION = "cut"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "The driving video."}),
            "mask": ("MASK", {"tooltip": "The objects' mask, one per frame or one for all."}),
        }}

    def cut(self, frames, mask):
        video = image_to_frames(frames, "frames")
        masks = match_frames(mask_to_frames(mask, "mask"), video.shape[0], "mask")
        if tuple(masks.shape[-2:]) != tuple(video.shape[-2:]):
            masks = torch.nn.functional.interpolate(masks[:, None], size=video.shape[-2:], mode="nearest")[:, 0]
        return (frames_to_image(object_frames(video, masks), host.intermediate_device()),)


NODE_CLASS_MAPPINGS = {"AA2LoadSAM2": AA2LoadSAM2, "ObjectSegment": ObjectSegment, "AA2ObjectFrames": AA2ObjectFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"AA2LoadSAM2": "AA2 Load SAM2", "ObjectSegment": "AA2 Object Segment (SAM2)",
                              "AA2ObjectFrames": "AA2 Object Frames from Mask"}
