"""From the conditions a user or a dataset has to the ones a model takes — the one place that decides.

Animate Anyone 2 conditions the DenoisingNet on the reference, the skeleton, the structured depth
(§3.4, depth-wise pose modulation), the environment with the character cut out by its
shape-agnostic mask (§3.2) and the object sequence (§3.3, the object guider). Not every model has a
part for every condition: Moore-AnimateAnyone / MIMO weights never learned depth or objects and
load without those parts, and the ablation variants (`train.init_model --variant no_depth |
no_objects | aa1`) are built without them. What happens to a condition the model has no part for
is a *policy*, named by every caller:

* "refuse" (the CLI and the nodes, and `animate` itself): an `AA2InputError` naming the input and
  the fix, worded for the interface in use (`aa2.errors.worded`). A user who connected depth to
  weights that cannot see it should know, not get a video that silently ignored it.
* "drop" (evaluation of Moore/MIMO weights on annotated clips, and training an ablation variant on
  data that has every annotation): the condition is left out and named in `dropped`, so the caller
  can say so in its log or its results. The environment outside the character still shows the
  objects, so a model without an object guider is still fairly scored.

Layouts are aa2's core ones (`aa2.pipeline.inputs`): frames `[F, 3, H, W]` 0..1, masks `[F, H, W]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from ..errors import AA2InputError, worded
from .inputs import AnimationInputs

MissingPolicy = Literal["refuse", "drop"]
MISSING_POLICIES: tuple[str, ...] = get_args(MissingPolicy)
DepthKind = Literal["inverse", "depth", "structured"]  # what a depth input holds (structured: §3.4 already)
DEPTH_KINDS: tuple[str, ...] = get_args(DepthKind)


@dataclass(frozen=True)
class ConditioningParts:
    """Which optional conditioning parts a model has: the depth branch of its pose modulation, and
    the object guider (with spatial blending)."""

    depth: bool = True
    objects: bool = True

    @classmethod
    def of(cls, model) -> "ConditioningParts":
        """The parts an `AA2Model` was built with (read from its modules, which is what runs)."""
        net = model.denoising_net
        return cls(depth=net.pose_modulation.depth_guider is not None, objects=net.object_guider is not None)

    @classmethod
    def of_base(cls, base: str | Path) -> "ConditioningParts | None":
        """The parts a base will load with, known without reading its weights, so a request it cannot
        serve is refused before the load (seconds to minutes for SD1.5 sizes): a pack checkpoint's
        stored config; a Moore / MIMO folder has neither part (left out when it loads). None when
        only the load can tell (SD1.5 and diffusers bases, which build both)."""
        from ..weights.checkpoint import read_checkpoint_config
        from ..weights.sources import base_kind

        kind = base_kind(base)
        if kind == "moore":
            return cls(depth=False, objects=False)
        if kind == "aa2" and Path(base).suffix.lower() == ".safetensors":
            config = read_checkpoint_config(base)
            return cls(depth=config.pose.use_depth, objects=config.use_object_guider)
        return None


@dataclass(frozen=True)
class UsedParts:
    """What to feed: whether depth and objects go in, and which given conditions were `dropped`."""

    depth: bool
    objects: bool
    dropped: tuple[str, ...] = ()


def parts_to_use(parts: ConditioningParts, *, depth: bool, objects: bool,
                 missing: MissingPolicy = "refuse") -> UsedParts:
    """The policy itself: given which conditions are present (`depth`, `objects`), which to feed a
    model with `parts`. "refuse" raises for a condition without a part; "drop" leaves it out and
    names it in `dropped`."""
    if missing not in MISSING_POLICIES:
        raise AA2InputError(f"the policy for missing parts is one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    dropped = []
    if depth and not parts.depth:
        if missing == "refuse":
            raise AA2InputError(
                "depth was given, but this model has no depth branch (Moore-AnimateAnyone / MIMO weights never "
                "learned depth, so it is left out when they are loaded): "
                + worded(comfyui="disconnect the depth", cli="leave out --depth")
                + ", or load weights trained with depth-wise pose modulation"
            )
        dropped.append("depth")
    if objects and not parts.objects:
        if missing == "refuse":
            raise AA2InputError(
                "object frames were given, but this model has no object guider (Moore-AnimateAnyone / MIMO weights "
                "never learned one, so it is left out when they are loaded): "
                + worded(comfyui="disconnect the objects", cli="leave out --objects / --object-mask")
                + " — the environment outside the character's mask still keeps them — or load Animate Anyone 2 "
                "weights"
            )
        dropped.append("objects")
    return UsedParts(depth=depth and parts.depth, objects=objects and parts.objects, dropped=tuple(dropped))


def dropped_text(dropped: tuple[str, ...]) -> str:
    """One line for a log: which conditions were left out, and why."""
    why = {"depth": "depth (the model has no depth branch)", "objects": "objects (the model has no object guider; "
           "the environment still shows them)"}
    return "left out " + " and ".join(why[name] for name in dropped) if dropped else ""


@dataclass
class AssembledInputs:
    """`inputs` for `animate`, and the conditions the policy `dropped` (empty under "refuse")."""

    inputs: AnimationInputs
    dropped: tuple[str, ...] = ()


def assemble_inputs(
    reference: torch.Tensor,
    pose: torch.Tensor,
    *,
    depth: torch.Tensor | None = None,
    depth_kind: DepthKind = "structured",
    environment: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    objects: torch.Tensor | None = None,
    object_mask: torch.Tensor | None = None,
    driving: torch.Tensor | None = None,
    parts: ConditioningParts | None = None,
    missing: MissingPolicy = "refuse",
) -> AssembledInputs:
    """What a model with `parts` takes from these conditions (None: every part, as the CLI has
    before its weights are loaded; `animate` then refuses what they lack).

    `reference [3, H_ref, W_ref]`, `pose [F, 3, H, W]` skeleton maps. `depth`: `[F, H, W]` or
    `[F, C, H, W]`, reduced to structured depth on the skeleton (§3.4) unless `depth_kind` says it
    already is. `environment [F, 3, H, W]` with `mask [F, H, W]`, the character's shape-agnostic
    mask (made by the caller: its formulation differs between inference, training and ablations).
    `objects`: the object sequence, already cut out; or `object_mask [F, H, W]` to cut it from
    `driving` (default: `environment`) with `sam2_segment.object_frames` (§3.2).
    A dropped condition is not computed at all.
    """
    if depth_kind not in DEPTH_KINDS:
        raise AA2InputError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}, got {depth_kind!r}")
    if objects is not None and object_mask is not None:
        raise AA2InputError("give the object frames or an object mask to cut them out with, not both")
    has_objects = objects is not None or object_mask is not None
    used = parts_to_use(parts or ConditioningParts(), depth=depth is not None, objects=has_objects, missing=missing)
    if used.depth and depth_kind != "structured":
        from ..conditioning.structured_depth import structured_depth

        depth = structured_depth(pose, depth, convention=depth_kind)
    if used.objects and object_mask is not None:
        from ..conditioning.sam2_segment import object_frames

        source = driving if driving is not None else environment
        if source is None:
            raise AA2InputError("an object mask cuts the objects out of the driving video: give the driving frames too")
        objects = object_frames(source, object_mask)
    inputs = AnimationInputs(reference=reference, pose=pose, depth=depth if used.depth else None,
                             environment=environment, mask=mask, objects=objects if used.objects else None)
    return AssembledInputs(inputs, used.dropped)
