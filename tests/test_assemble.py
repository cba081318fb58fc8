"""One place assembles the conditioning (`aa2.pipeline.assemble`): its missing-part policy, and every
caller going through it — the CLI and the nodes refuse, evaluation and training drop and say so."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch

from aa2.errors import AA2InputError, interface
from aa2.pipeline.assemble import ConditioningParts, assemble_inputs, dropped_text
from test_train import SyntheticClips, data_dir

F, H, W = 2, 64, 64


def _conditions(depth: bool, objects: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(F, H, W)
    mask[:, 16:48, 20:44] = 1
    return dict(reference=torch.rand(3, H, W, generator=g), pose=torch.rand(F, 3, H, W, generator=g),
                depth=torch.rand(F, 3, H, W, generator=g) if depth else None, depth_kind="structured",
                environment=torch.rand(F, 3, H, W, generator=g), mask=mask,
                objects=torch.rand(F, 3, H, W, generator=g) if objects else None)


@pytest.mark.parametrize("has_depth,has_objects,give_depth,give_objects",
                         list(itertools.product([True, False], repeat=4)))
@pytest.mark.parametrize("missing", ["refuse", "drop"])
def test_policy_feeds_what_the_model_has_and_refuses_or_drops_the_rest(has_depth, has_objects, give_depth,
                                                                        give_objects, missing):
    parts = ConditioningParts(depth=has_depth, objects=has_objects)
    lacking = [name for name, given, has in (("depth", give_depth, has_depth), ("objects", give_objects, has_objects))
               if given and not has]
    conditions = _conditions(give_depth, give_objects)
    if lacking and missing == "refuse":
        part = {"depth": "no depth branch", "objects": "no object guider"}[lacking[0]]  # depth is checked first
        with pytest.raises(AA2InputError, match=part):
            assemble_inputs(**conditions, parts=parts, missing=missing)
        return
    assembled = assemble_inputs(**conditions, parts=parts, missing=missing)
    assert assembled.dropped == tuple(lacking)
    inputs = assembled.inputs
    assert (inputs.depth is not None) == (give_depth and has_depth)
    assert (inputs.objects is not None) == (give_objects and has_objects)
    if inputs.depth is not None:
        assert inputs.depth is conditions["depth"]  # structured already: passed through untouched
    inputs.validate()


def test_an_unknown_policy_is_refused():
    with pytest.raises(AA2InputError, match="refuse, drop"):
        assemble_inputs(**_conditions(False, False), missing="ignore")


def test_raw_depth_becomes_structured_and_an_object_mask_cuts_the_driving_frames():
    from aa2.conditioning.sam2_segment import object_frames
    from aa2.conditioning.structured_depth import structured_depth

    conditions = _conditions(False, False)
    raw = torch.rand(F, H, W, generator=torch.Generator().manual_seed(1))
    object_mask = torch.zeros(F, H, W)
    object_mask[:, 40:56, 8:24] = 1
    driving = torch.rand(F, 3, H, W, generator=torch.Generator().manual_seed(2))
    inputs = assemble_inputs(**{**conditions, "depth": raw, "depth_kind": "inverse"}, object_mask=object_mask,
                             driving=driving).inputs
    assert torch.equal(inputs.depth, structured_depth(conditions["pose"], raw, convention="inverse"))
    assert torch.equal(inputs.objects, object_frames(driving, object_mask))
    with pytest.raises(AA2InputError, match="not both"):
        assemble_inputs(**_conditions(False, True), object_mask=object_mask)


def test_the_refusal_is_worded_for_the_interface_in_use():
    parts = ConditioningParts(depth=False, objects=False)
    with interface("cli"), pytest.raises(AA2InputError, match="leave out --depth"):
        assemble_inputs(**_conditions(True, False), parts=parts)
    with pytest.raises(AA2InputError, match="disconnect the objects"):
        assemble_inputs(**_conditions(False, True), parts=parts)
    assert dropped_text(("depth", "objects")).startswith("left out depth") and dropped_text(()) == ""


# ------------------------------------------------------------------------------------ the callers


@pytest.fixture(scope="module")
def moore_checkpoint(tiny_weights, tmp_path_factory):
    """A Moore-AnimateAnyone folder converted to a pack checkpoint (no depth branch, no object guider)."""
    from aa2.cli import main

    out = tmp_path_factory.mktemp("moore") / "moore.safetensors"
    assert main(["convert", str(tiny_weights / "animateanyone2" / "aa2-tiny-moore"), str(out),
                 "--vae", str(tiny_weights / "vae" / "aa2-tiny-vae.safetensors"),
                 "--image-encoder", str(tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors"),
                 "--dtype", "fp32"]) == 0
    return out


@pytest.fixture(scope="module")
def moore_model(moore_checkpoint):
    from aa2.weights.sources import ModelSources, load_model

    model = load_model(ModelSources.from_path(moore_checkpoint))
    assert ConditioningParts.of(model) == ConditioningParts(depth=False, objects=False)
    return model


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """Clip 0 has depth, clip 1 depth and objects (both annotated, as SynthWorld's are)."""
    clips = SyntheticClips(data_dir(tmp_path_factory.mktemp("clips"), 2), 4, (64, 64))
    return [clips[0], {**clips[1], "has_depth": True}]


def test_evaluating_moore_weights_on_an_object_annotated_clip_renders_and_says_what_it_left_out(
        moore_model, annotated, caplog):
    """The bug: evaluation fed a clip's objects to weights without an object guider and failed, while
    their depth was dropped without a word. Now both are dropped, and said."""
    from aa2.pipeline.inputs import SamplingSettings
    from train.render import animation_inputs, render_clip

    sample = annotated[1]
    assert sample["has_objects"] and sample["has_depth"]
    assembled = animation_inputs(moore_model, sample)
    assert assembled.dropped == ("depth", "objects")
    assert assembled.inputs.depth is None and assembled.inputs.objects is None
    with caplog.at_level(logging.WARNING, logger="train.render"):
        frames = render_clip(moore_model, sample, SamplingSettings(steps=1, cfg=1.0))
    assert frames.shape == (4, 3, 64, 64) and torch.isfinite(frames).all()
    assert [r.getMessage() for r in caplog.records] == [f"clip v1@0: {dropped_text(('depth', 'objects'))}"]


def test_evaluating_full_weights_drops_nothing_and_feeds_depth_and_objects(tiny_model, annotated):
    from train.render import animation_inputs

    assembled = animation_inputs(tiny_model, annotated[1])
    assert assembled.dropped == () and assembled.inputs.depth is not None and assembled.inputs.objects is not None


def test_training_a_model_without_the_parts_drops_the_annotations_and_names_them(moore_model, annotated):
    from train.batch import build_batch
    from train.config import DataSettings

    batch = build_batch(moore_model, annotated, DataSettings(clip_length=4, size=(64, 64)),
                        torch.Generator().manual_seed(0), single_frame=False)
    assert batch.dropped == ("depth", "objects")
    assert batch.depth is None and batch.object_latents is None
    assert "dropped" not in batch.as_dict()  # a note for the log, not a model input


def test_training_the_full_model_drops_nothing(tiny_model, annotated):
    from train.batch import build_batch
    from train.config import DataSettings

    batch = build_batch(tiny_model, annotated, DataSettings(clip_length=4, size=(64, 64)),
                        torch.Generator().manual_seed(0), single_frame=False)
    assert batch.dropped == () and batch.depth is not None and batch.object_latents is not None


def test_cli_and_nodes_refuse_depth_for_weights_without_a_depth_branch_each_in_its_own_words(
        pack, moore_model, moore_checkpoint, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from aa2 import animate_command
    from aa2.cli import main
    from aa2.demo import make_scene, write_scene

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before a request they cannot serve was refused")

    monkeypatch.setattr(animate_command, "load_for_device", no_load)  # the checkpoint's stored config tells

    files = write_scene(make_scene(4, 64), tmp_path / "scene")
    argv = ["animate", "--reference", str(files.reference), "--pose", str(files.pose), "--video", str(files.video),
            "--mask", str(files.mask), "--depth", str(files.depth), "--models", str(moore_checkpoint),
            "--out", str(tmp_path / "out.mp4"), "--quiet", "--device", "cpu"]
    assert main(argv) == 2
    cli = capsys.readouterr().err
    assert "no depth branch" in cli and "leave out --depth" in cli and "disconnect" not in cli

    skeleton = torch.rand(F, 3, H, W, generator=torch.Generator().manual_seed(3))
    with pytest.raises(pack.aa2.errors.AA2InputError, match="no depth branch") as error:
        pack.nodes.nodes_sampling.AA2Sampler().sample(
            aa2_model=SimpleNamespace(model=moore_model), pose={"skeleton": skeleton, "depth": skeleton.clone()},
            seed=0, steps=1, cfg=1.0, sampler_name="default", environment="auto", paste_environment=False,
            reference_image=torch.rand(1, H, W, 3))
    assert "disconnect the depth" in str(error.value) and "--depth" not in str(error.value)


def test_a_base_tells_its_parts_without_loading_its_weights(moore_checkpoint, tiny_weights):
    from aa2.pipeline.assemble import ConditioningParts

    assert ConditioningParts.of_base(moore_checkpoint) == ConditioningParts(depth=False, objects=False)
    assert ConditioningParts.of_base(tiny_weights / "animateanyone2" / "aa2-tiny-moore") == \
        ConditioningParts(depth=False, objects=False)
    assert ConditioningParts.of_base(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors") == ConditioningParts()
    assert ConditioningParts.of_base(tiny_weights / "checkpoints" / "aa2-tiny-sd15.safetensors") is None  # the load tells
