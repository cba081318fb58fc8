"""Pose and depth from the driving frames: Sapiens (built in, TorchScript) and DWPose (ONNX, optional).

Each node loads its model from a ComfyUI model folder on first use and keeps it on the node
instance, until the file or the settings change. Poses come out as POSE_KEYPOINT (what
comfyui_controlnet_aux's DWPose node emits) plus the rendered skeletons, to check.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from einops import repeat

from ..aa2.conditioning.dwpose import DETECTOR_FILE, POSE_FILE, dwpose_keypoints, load_dwpose, providers_for
from ..aa2.conditioning.masks import mask_boxes
from ..aa2.conditioning.sapiens import load_sapiens, sapiens_depth, sapiens_pose
from ..aa2.conditioning.skeleton import render_skeleton
from . import host
from .boundary import choice, frames_to_image, image_to_frames, mask_to_frames, match_frames
from .nodes_pose import CONVENTIONS

CATEGORY = "AnimateAnyone2/conditioning"
SAPIENS_SLOT = {"sapiens": "Sapiens TorchScript exports (*_torchscript.pt2)"}
SAPIENS_EXTENSIONS = (".pt2", ".pt", ".pth")  # .pth are listed so that choosing one explains itself
DWPOSE_SLOT = {"dwpose": f"DWPose's ONNX files ({DETECTOR_FILE}, {POSE_FILE})"}
NO_DETECTOR = "none (mask boxes, else whole frames)"
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHUNK = 4  # frames per call: progress (and Cancel) between chunks
DEPTH_CONVENTION = next(label for label, value in CONVENTIONS.items() if value == "depth")
MASK_TOOLTIP = ("Optional character mask (e.g. from Object Segment): its box on each frame is the person's box; "
                "frames where it is empty fall back to {}.")


def _mask_boxes(mask: torch.Tensor | None, frames: torch.Tensor) -> list | None:
    """Per frame, the person box around the mask in the frames' pixels (None where it is empty)."""
    if mask is None:
        return None
    masks = match_frames(mask_to_frames(mask, "mask"), frames.shape[0], "mask")
    return mask_boxes(masks, tuple(frames.shape[-2:]))


def _in_chunks(run, frames: torch.Tensor, boxes: list | None) -> list:
    """`run(frames, boxes)` (returning a list) over CHUNK frames at a time, reporting progress."""
    progress, out = host.Progress(frames.shape[0]), []
    for start in range(0, frames.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        out += run(frames[part], None if boxes is None else boxes[part])
        progress.update_absolute(min(start + CHUNK, frames.shape[0]))
    return out


def _with_preview(keypoints: list[dict], frames: torch.Tensor, hands: bool, face: bool) -> tuple:
    h, w = frames.shape[-2:]
    skeleton = render_skeleton(keypoints, int(h), int(w), person="all", hands=hands, face=face)
    return keypoints, frames_to_image(skeleton, host.intermediate_device())


def _default(choices: list[str], file_name: str) -> dict:
    """`{"default": entry}` for the first entry named `file_name`, so the usual file is preselected."""
    named = [c for c in choices if c.rsplit("/", 1)[-1] == file_name]
    return {"default": named[0]} if named else {}


class _KeepsModel:
    """The last model this node loaded, reused while its file and settings stay the same."""

    _kept: tuple | None = None

    def _model(self, key: tuple, load):
        if self._kept is None or self._kept[0] != key:
            self._kept = None  # let the old model go before the new one loads
            self._kept = (key, load())
        return self._kept[1]


class _SapiensNode(_KeepsModel):
    CATEGORY = CATEGORY
    TASK = "pose"

    @classmethod
    def _model_inputs(cls) -> dict:
        choices = host.list_models("sapiens", extensions=SAPIENS_EXTENSIONS)
        return {
            "frames": ("IMAGE", {"tooltip": "The driving video."}),
            "model": (choices, {"tooltip": f"A Sapiens {cls.TASK} TorchScript export from models/sapiens, "
                                f"e.g. sapiens_0.3b_..._torchscript.pt2."}),
            "precision": (list(PRECISIONS), {"default": "fp32", "tooltip": "fp16 / bf16 halve the memory on GPUs."}),
        }

    @contextlib.contextmanager
    def _loaded(self, name: str, precision: str):
        """The model, on the host's device for this run and back on the offload device after it."""
        choice(precision, PRECISIONS, "precision")
        path = host.resolve_model(name, SAPIENS_SLOT)
        key = (str(path), host.files_signature([path]), precision)
        model = self._model(key, lambda: load_sapiens(path, self.TASK, device=host.offload_device(),
                                                      dtype=PRECISIONS[precision]))
        device = host.torch_device()
        try:
            yield dataclasses.replace(model, module=model.module.to(device), device=device)
        finally:
            model.module.to(model.device)
            host.free_memory()


class AA2SapiensPose(_SapiensNode):
    DESCRIPTION = ("Whole-body keypoints of the driving person with Sapiens, the extractor the paper uses: one "
                   "person per frame, in the character mask's box when one is connected.")
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose_keypoints", "skeleton")
    OUTPUT_TOOLTIPS = ("Keypoints in frame pixels, as DWPose nodes emit them (for AA2 Pose Depth Modulate).",
                       "The keypoints drawn as skeletons, to check.")
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls._model_inputs(), "optional": {
            "mask": ("MASK", {"tooltip": MASK_TOOLTIP.format("the whole frame")}),
            "hands": ("BOOLEAN", {"default": True, "tooltip": "Keep the hands (Goliath and COCO-WholeBody models)."}),
            "face": ("BOOLEAN", {"default": True, "tooltip": "Keep the face (COCO-WholeBody models only)."}),
        }}

    def extract(self, frames, model, precision="fp32", mask=None, hands=True, face=True):
        video = image_to_frames(frames, "frames")
        with self._loaded(model, precision) as sapiens:
            keypoints = _in_chunks(lambda f, b: sapiens_pose(sapiens, f, boxes=b, hands=hands, face=face),
                                   video, _mask_boxes(mask, video))
        return _with_preview(keypoints, video, hands, face)


class AA2SapiensDepth(_SapiensNode):
    DESCRIPTION = ("Depth of the driving frames with Sapiens, as the paper extracts it. Far is bright: set AA2 Pose "
                   f"Depth Modulate's depth_convention to '{DEPTH_CONVENTION}'.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("depth",)
    OUTPUT_TOOLTIPS = (f"Depth scaled to 0..1 per frame, far = bright (larger = farther). In AA2 Pose Depth "
                       f"Modulate choose depth_convention '{DEPTH_CONVENTION}'.",)
    FUNCTION = "extract"
    TASK = "depth"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls._model_inputs()}

    def extract(self, frames, model, precision="fp32"):
        video = image_to_frames(frames, "frames")
        with self._loaded(model, precision) as sapiens:
            depth = torch.cat(_in_chunks(lambda f, _: [sapiens_depth(sapiens, f)], video, None))
        lo, hi = depth.amin(dim=(1, 2), keepdim=True), depth.amax(dim=(1, 2), keepdim=True)
        shown = (depth - lo) / (hi - lo).clamp_min(1e-12)  # order kept: structured depth re-normalises anyway
        return (frames_to_image(repeat(shown, "f h w -> f c h w", c=3), host.intermediate_device()),)


class AA2DWPose(_KeepsModel):
    DESCRIPTION = ("Whole-body keypoints with DWPose's ONNX files (yolox_l.onnx + dw-ll_ucoco_384.onnx in "
                   "models/dwpose), the skeletons Animate Anyone 1 was trained on. Needs onnxruntime.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose_keypoints", "skeleton")
    OUTPUT_TOOLTIPS = AA2SapiensPose.OUTPUT_TOOLTIPS
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        files = host.list_models("dwpose", extensions=(".onnx",))
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The driving video."}),
                "detector": (files + [NO_DETECTOR], {**_default(files, DETECTOR_FILE), "tooltip": "The person "
                             f"detector from models/dwpose ({DETECTOR_FILE}); not run on frames the mask boxes."}),
                "pose_model": (files, {**_default(files, POSE_FILE), "tooltip": f"The pose model from models/dwpose "
                               f"({POSE_FILE})."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": MASK_TOOLTIP.format("the detector")}),
                "max_people": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Keep the best-scored detected "
                               "people per frame; 0 keeps everyone."}),
                "hands": ("BOOLEAN", {"default": True, "tooltip": "Keep the hands."}),
                "face": ("BOOLEAN", {"default": True, "tooltip": "Keep the face."}),
            },
        }

    def extract(self, frames, detector, pose_model, mask=None, max_people=0, hands=True, face=True):
        video = image_to_frames(frames, "frames")
        detector_path = None if detector == NO_DETECTOR else host.resolve_model(detector, DWPOSE_SLOT)
        pose_path = host.resolve_model(pose_model, DWPOSE_SLOT)
        providers = providers_for(host.torch_device())
        key = (str(detector_path), str(pose_path), host.files_signature([detector_path, pose_path]), providers)
        model = self._model(key, lambda: load_dwpose(detector_path, pose_path, providers=providers))
        keypoints = _in_chunks(lambda f, b: dwpose_keypoints(model, f, boxes=b, max_people=max_people or None,
                                                             hands=hands, face=face), video, _mask_boxes(mask, video))
        return _with_preview(keypoints, video, hands, face)


NODE_CLASS_MAPPINGS = {"AA2SapiensPose": AA2SapiensPose, "AA2SapiensDepth": AA2SapiensDepth, "AA2DWPose": AA2DWPose}
NODE_DISPLAY_NAME_MAPPINGS = {"AA2SapiensPose": "AA2 Sapiens Pose", "AA2SapiensDepth": "AA2 Sapiens Depth",
                              "AA2DWPose": "AA2 DWPose (ONNX)"}
