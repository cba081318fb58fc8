"""PoseDepthModulate: the driving motion as the depth-wise pose modulation's two inputs (paper 3.4)."""

from __future__ import annotations

from ..aa2.conditioning.retarget import retarget_poses
from ..aa2.conditioning.skeleton import prepare_skeleton_images, render_skeleton
from ..aa2.conditioning.structured_depth import structured_depth
from ..aa2.errors import AA2InputError
from . import host
from .boundary import choice, frames_to_image, image_to_frames

CATEGORY = "AnimateAnyone2/conditioning"
CONVENTIONS = {
    "inverse (Depth Anything, MiDaS: near is bright)": "inverse",
    "depth (Sapiens, metric: far is bright)": "depth",
}


class PoseDepthModulate:
    DESCRIPTION = (
        "Prepares the motion for Animate Anyone 2: skeleton maps (drawn from DWPose keypoints, or taken "
        "as rendered images) and the structured depth (depth kept only on the skeleton, normalised per "
        "frame). Optionally retargets the driving skeleton to the reference character's proportions."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AA2_POSE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("pose", "skeleton", "structured_depth")
    OUTPUT_TOOLTIPS = ("Skeleton + structured depth for the sampler.", "The skeleton maps, to check.",
                       "The structured depth maps, to check (black when no depth is connected).")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 64, "max": 2048, "step": 64}
        return {
            "required": {
                "width": ("INT", {"default": 512, **size, "tooltip": "Output width (a multiple of 64)."}),
                "height": ("INT", {"default": 768, **size, "tooltip": "Output height (a multiple of 64)."}),
                "depth_convention": (list(CONVENTIONS), {"tooltip": "Which way the connected depth runs; "
                                     "depth preprocessor nodes (Depth Anything, MiDaS) give inverse depth."}),
            },
            "optional": {
                "pose_keypoints": ("POSE_KEYPOINT", {"tooltip": "From a DWPose / OpenPose estimator node."}),
                "skeleton_images": ("IMAGE", {"tooltip": "Or skeleton images already drawn by a pose node."}),
                "depth": ("IMAGE", {"tooltip": "Depth maps of the driving frames (any depth node)."}),
                "reference_keypoints": ("POSE_KEYPOINT", {"tooltip": "The reference image's keypoints: when "
                                        "connected, the driving skeleton takes the character's proportions."}),
                "hands": ("BOOLEAN", {"default": True, "tooltip": "Draw hands (from keypoints)."}),
                "face": ("BOOLEAN", {"default": True, "tooltip": "Draw the face (from keypoints)."}),
            },
        }

    def prepare(self, width, height, depth_convention, pose_keypoints=None, skeleton_images=None, depth=None,
                reference_keypoints=None, hands=True, face=True):
        choice(depth_convention, CONVENTIONS, "depth_convention")
        if (pose_keypoints is None) == (skeleton_images is None):
            raise AA2InputError("connect exactly one of pose_keypoints (DWPose) or skeleton_images")
        if pose_keypoints is not None:
            if reference_keypoints is not None:
                pose_keypoints = retarget_poses(pose_keypoints, reference_keypoints, hands=hands, face=face)
            skeleton = render_skeleton(pose_keypoints, height, width, hands=hands, face=face, require_person=True)
        else:
            if reference_keypoints is not None:
                raise AA2InputError("retargeting needs pose_keypoints, not skeleton images")
            skeleton = prepare_skeleton_images(image_to_frames(skeleton_images, "skeleton_images"), height, width)
        structured = None
        if depth is not None:
            frames = image_to_frames(depth, "depth")
            structured = structured_depth(skeleton, frames, convention=CONVENTIONS[depth_convention], resize=True)
        out = host.intermediate_device()
        preview = structured if structured is not None else skeleton.new_zeros(skeleton.shape)
        pose = {"skeleton": skeleton, "depth": structured}
        return pose, frames_to_image(skeleton, out), frames_to_image(preview, out)


NODE_CLASS_MAPPINGS = {"PoseDepthModulate": PoseDepthModulate}
NODE_DISPLAY_NAME_MAPPINGS = {"PoseDepthModulate": "AA2 Pose Depth Modulate"}
