"""Moore-AnimateAnyone (and MIMO) weights: a folder of four `.pth` files.

`denoising_unet.pth` and `reference_unet.pth` hold diffusers `UNet2DConditionModel` key names
(the reference one without `conv_norm_out`/`conv_out`, which its ReferenceNet never had);
`pose_guider.pth` is the Animate Anyone 1 pose guider; `motion_module.pth` is in AnimateDiff v2's
layout. These weights were trained with reference attention in every block (`fusion="full"`), with
v-prediction, zero-terminal SNR and trailing timesteps: the config returned here records that so
sampling uses the schedule the weights need.

MIMO's `denoising_unet.pth` has an 8-channel `conv_in`: noise latents + the background video's
latents. That is AA2's environment input without its mask channel, so such weights get the
environment input, with the mask channel's weights at zero.

Neither has weights for what Animate Anyone 2 adds: the object guider with its spatial blending, and
the depth branch of the pose modulation. For inference they are left out (`new_parts=False`): built
fresh they would do nothing — each starts as an identity — yet the object guider and blending alone
are ~174 M parameters (0.7 GB in fp32). Training from these weights asks for them (`new_parts=True`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import MIMO_SCHEDULER, MOORE_SCHEDULER, AA2Config
from ..errors import AA2WeightsError
from ..models.aa2_model import ModelParts
from .animatediff import motion_module_to_original, read_motion_module
from .files import read_state_dict, write_pickle
from .shapes import infer_pose_shape, infer_unet_shape

FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")


def is_moore_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in FILES[:3])


def looks_like_moore_folder(path: str | Path) -> bool:
    """A folder holding any of the four files: complete or not, it is one Moore model to offer.

    Listing only complete folders made one with a file missing vanish from the dropdown, leaving the
    user "Value not in list"; offered, it loads into a message naming what is missing.
    """
    path = Path(path)
    return path.is_dir() and not (path / "unet").is_dir() and any((path / name).is_file() for name in FILES)


def read_moore_folder(folder: str | Path, base: AA2Config | None = None, *,
                      new_parts: bool = False) -> tuple[AA2Config, ModelParts]:
    """Read the four files into `ModelParts` and the config they imply.

    `motion_module.pth` may be absent when a separate AnimateDiff file is given instead.
    `new_parts`: also build the AA2 parts these files have no weights for (object guider, spatial
    blending, depth branch), freshly initialised — for training; without, the model has none.
    """
    folder = Path(folder)
    missing = [name for name in FILES[:3] if not (folder / name).is_file()]
    if missing:
        raise AA2WeightsError(
            f"the Moore-AnimateAnyone folder {folder} is missing {' and '.join(missing)}: it needs "
            f"{', '.join(FILES[:3])} side by side ({FILES[3]} too, unless a separate motion module is given). "
            "Copy the missing file(s) from the same download into it."
        )
    denoising = read_state_dict(folder / FILES[0])
    # A stage-2 save may carry motion weights too; motion_module.pth is their authoritative copy.
    denoising = {k: v for k, v in denoising.items() if ".motion_modules." not in k}
    unet_shape, in_channels = infer_unet_shape(denoising, str(folder / FILES[0]))
    if in_channels not in (4, 8):
        raise AA2WeightsError(
            f"{folder / FILES[0]} has a {in_channels}-channel conv_in; Moore-AnimateAnyone has 4 and MIMO 8."
        )
    pose_guider = read_state_dict(folder / FILES[2])
    pose_shape = infer_pose_shape(pose_guider, str(folder / FILES[2]))
    config = (base or AA2Config()).replace(
        unet=unet_shape,
        pose=dataclasses.replace(pose_shape, use_depth=new_parts),
        use_object_guider=new_parts,
        fusion="full",
        use_environment=in_channels == 8,
        scheduler=MIMO_SCHEDULER if in_channels == 8 else MOORE_SCHEDULER,
    )
    parts = ModelParts(
        denoising_unet=denoising,
        reference_unet=read_state_dict(folder / FILES[1]),
        pose_guider=pose_guider,
        sources={
            "denoising_unet": str(folder / FILES[0]),
            "reference_unet": str(folder / FILES[1]),
            "pose_guider": str(folder / FILES[2]),
        },
    )
    if (folder / FILES[3]).is_file():
        motion_shape, parts.motion = read_motion_module(folder / FILES[3])
        config = config.replace(motion=motion_shape)
        parts.sources["motion"] = str(folder / FILES[3])
    return config, parts


def write_moore_folder(folder: str | Path, model) -> Path:
    """Save an `AA2Model` in Moore-AnimateAnyone's four-file layout (for fixtures and export).

    Only what Animate Anyone 1 has is written: the UNets' spatial weights, the skeleton pose
    guider and the motion modules (environment channels beyond MIMO's 8 are dropped).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet = model.denoising_net.unet.state_dict()
    spatial = {k: v.clone() for k, v in unet.items() if ".motion_modules." not in k}
    keep = 8 if model.config.use_environment else 4
    spatial["conv_in.weight"] = spatial["conv_in.weight"][:, :keep].clone()
    write_pickle(folder / FILES[0], spatial)
    write_pickle(folder / FILES[1], _moore_reference_state(model))
    write_pickle(folder / FILES[2], dict(model.denoising_net.pose_modulation.skeleton_guider.state_dict()))
    write_pickle(folder / FILES[3], motion_module_to_original(model.denoising_net.unet, model.config.motion))
    return folder


def _moore_reference_state(model) -> dict:
    """The ReferenceNet as Moore's `reference_unet.pth` holds it: every layer but the output ones.

    Our ReferenceNet drops the tail that runs after the last banked self-attention (nobody reads it);
    Moore's code builds the whole UNet and checks every key, so the tail is written as zeros. Their
    forward does run it, but its output is discarded, so zeros change nothing they compute.
    """
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    state = {k: v.clone() for k, v in model.reference_net.state_dict().items()}
    with init_empty_weights():
        whole = UNet2DConditionModel(**model.config.unet.diffusers_config())
    for key, meta in whole.state_dict().items():
        if key not in state and not key.startswith(("conv_norm_out.", "conv_out.")):
            state[key] = torch.zeros(meta.shape, dtype=next(iter(state.values())).dtype)
    return state
