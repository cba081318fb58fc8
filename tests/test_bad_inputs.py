"""Bad values never end as "success" with NaN frames: non-finite inputs and weights are refused by
name before heavy work, sampling that diverges stops at the step it happened, and messages are
worded for the interface that raised them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from aa2.checks import unit_range
from aa2.errors import AA2Error, AA2InputError, AA2WeightsError, interface, size_text
from aa2.pipeline import animate as pipeline
from aa2.pipeline import clip_denoiser
from aa2.pipeline.inputs import AnimationInputs, SamplingSettings, match_pose_length
from aa2.weights.files import read_safetensors_metadata, read_state_dict, write_safetensors
from aa2.weights.sources import ModelSources, load_model

H = W = 64


def _inputs(frames: int = 3) -> AnimationInputs:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(frames, H, W)
    mask[:, 16:48, 20:44] = 1
    return AnimationInputs(
        reference=torch.rand(3, 80, 64, generator=g),
        pose=torch.rand(frames, 3, H, W, generator=g),
        depth=torch.rand(frames, 3, H, W, generator=g),
        environment=torch.rand(frames, 3, H, W, generator=g),
        mask=mask,
        objects=torch.rand(frames, 3, H, W, generator=g),
    )


@pytest.mark.parametrize("name, index", [("reference", None), ("pose", 2), ("depth", 1), ("environment", 0),
                                         ("mask", 2), ("objects", 1)])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_input_is_refused_naming_it_and_its_frame(name, index, value):
    inputs = _inputs()
    tensor = getattr(inputs, name).clone()
    (tensor if index is None else tensor[index]).view(-1)[7] = value
    setattr(inputs, name, tensor)
    expected = "the reference image holds NaN" if index is None else f"{name} frame {index} holds NaN or infinite"
    with pytest.raises(AA2InputError, match=expected):
        inputs.validate()


def test_animate_refuses_a_nan_reference_before_running_the_model(monkeypatch):
    inputs = _inputs()
    inputs.reference[0, 0, 0] = float("nan")
    model = SimpleNamespace()  # any use of the model would raise AttributeError, not the input error
    with pytest.raises(AA2InputError, match="reference image holds NaN"):
        pipeline.animate(model, inputs)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.5])
def test_settings_refuse_a_guidance_scale_that_is_not_a_number_at_least_one(value):
    with pytest.raises(AA2InputError, match="cfg must be a number >= 1"):
        SamplingSettings(cfg=value).check()


def test_settings_refuse_an_unknown_environment_mode_instead_of_acting_on_its_letters():
    with pytest.raises(AA2InputError, match="environment must be one of auto, input, blend"):
        SamplingSettings(environment="inputs").check()  # "input" in "inputs": once taken as 'input'


@pytest.mark.parametrize("sigmas", [torch.tensor([]), torch.tensor([14.6]), torch.ones(2, 3),
                                    torch.tensor([14.6, float("nan"), 0.0]), torch.tensor([14.6, -1.0])])
def test_custom_sigmas_no_sampler_can_walk_are_refused(sigmas):
    from aa2.sampling.sigmas import check_sigmas

    with pytest.raises(AA2InputError, match="SIGMAS must be"):
        check_sigmas(sigmas)


def test_clip_length_zero_is_refused_not_taken_as_the_default():
    with pytest.raises(AA2InputError, match="clip_length must be at least 1"):
        SamplingSettings(clip_length=0).validate(trained_frames=16, max_frames=32)
    assert SamplingSettings(clip_length=None).validate(trained_frames=16, max_frames=32) == 16


def diverge_from_the_second_model_call(monkeypatch) -> None:
    """Make the guided model's output NaN from its second call on, as a half-precision overflow would."""
    real = clip_denoiser.GuidedModel.__call__
    calls = {"n": 0}

    def nan_from_the_second_call(self, x, t):
        calls["n"] += 1
        out = real(self, x, t)
        return out * float("nan") if calls["n"] >= 2 else out

    monkeypatch.setattr(clip_denoiser.GuidedModel, "__call__", nan_from_the_second_call)


@pytest.mark.parametrize("sampler", ["ddim", "k_euler"])
def test_sampling_that_diverges_stops_naming_the_step(tiny_model, monkeypatch, sampler):
    diverge_from_the_second_model_call(monkeypatch)
    seen = []
    settings = SamplingSettings(steps=3, clip_length=3, sampler=sampler)
    inputs = AnimationInputs(reference=torch.rand(3, H, W), pose=torch.rand(3, 3, H, W))
    with pytest.raises(AA2Error, match="sampling diverged at step 2 of 3"):
        pipeline.animate(tiny_model, inputs, settings, progress=lambda d, t, x: seen.append(d))
    assert seen == [1]  # stopped at once: no further steps, nothing decoded


def test_nan_weights_in_a_pack_checkpoint_are_refused_naming_the_file(tiny_weights, tmp_path):
    source = tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"
    state = read_state_dict(source)
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state[key] = state[key].clone()
    state[key][0, 0, 0, 0] = float("nan")
    broken = write_safetensors(tmp_path / "diverged.safetensors", state, read_safetensors_metadata(source))
    with pytest.raises(AA2WeightsError, match=r"diverged\.safetensors holds NaN or infinite weights.*conv_in"):
        load_model(ModelSources.from_path(broken))


def test_advice_is_worded_for_the_interface_that_raised_it():
    model = SimpleNamespace(denoising_net=SimpleNamespace(
        pose_modulation=SimpleNamespace(depth_guider=None), object_guider=None))
    inputs = _inputs()
    with pytest.raises(AA2InputError, match="disconnect the depth"):
        pipeline.check_model_takes(model, inputs)
    with interface("cli"), pytest.raises(AA2InputError, match="leave out --depth") as error:
        pipeline.check_model_takes(model, inputs)
    assert "disconnect" not in str(error.value)
    inputs.depth = None
    with interface("cli"), pytest.raises(AA2InputError, match="leave out --objects / --object-mask"):
        pipeline.check_model_takes(model, inputs)
    with pytest.raises(AA2InputError, match="disconnect the objects"):  # the context ended with its block
        pipeline.check_model_takes(model, inputs)


# ------------------------------------------------------------------------------------ lengths and sizes


@pytest.mark.parametrize("name", ["environment", "objects", "depth"])
@pytest.mark.parametrize("frames", [2, 5])
def test_a_sequence_of_another_length_than_the_pose_is_refused_naming_both(name, frames):
    inputs, other = _inputs(3), _inputs(frames)
    setattr(inputs, name, getattr(other, name))
    with pytest.raises(AA2InputError, match=f"{name} has {frames} frames but the pose has 3"):
        inputs.validate()


def test_a_longer_driving_video_is_cut_only_when_asked_and_then_said(caplog):
    video = torch.rand(5, 3, H, W)
    with pytest.raises(AA2InputError, match="Image From Batch \\(batch_index 0, length 3\\)"):
        match_pose_length(video, 3, "driving_frames")
    with interface("cli"), pytest.raises(AA2InputError, match="--max-frames 3"):
        match_pose_length(video, 3, "driving_frames")
    with caplog.at_level("WARNING", logger="aa2"):
        assert torch.equal(match_pose_length(video, 3, "driving_frames", trim=True), video[:3])
    assert "driving_frames has 5 frames, the pose 3" in caplog.text
    with pytest.raises(AA2InputError, match="driving_frames has 2 frames but the pose has 3"):
        match_pose_length(video[:2], 3, "driving_frames", trim=True)  # a shorter one cannot be cut to fit


def test_the_sampler_node_refuses_a_driving_video_longer_than_the_pose(pack):
    pose = {"skeleton": torch.rand(3, 3, H, W), "depth": None}
    mask = torch.zeros(5, H, W)
    mask[:, 8:40, 8:40] = 1
    every = pack.aa2.pipeline.assemble.ConditioningParts()
    with pytest.raises(pack.aa2.errors.AA2InputError, match="driving_frames has 5 frames but the pose has 3"):
        pack.nodes.nodes_sampling._inputs(torch.rand(1, H, W, 3), pose, torch.rand(5, H, W, 3), mask[:1], None, every)
    with pytest.raises(pack.aa2.errors.AA2InputError, match="object_frames has 4 frames but the pose has 3"):
        pack.nodes.nodes_sampling._inputs(torch.rand(1, H, W, 3), pose, None, None, torch.rand(4, H, W, 3), every)


def test_sizes_in_messages_are_width_first_and_labelled():
    assert size_text(768, 512) == "512×768 (width × height)"
    inputs = _inputs()
    inputs.pose = torch.rand(3, 3, 96, 64)
    with pytest.raises(AA2InputError, match=r"frames are 64×96 \(width × height\).*e\.g\. to 64×128 \(width"):
        inputs.validate()
    inputs = _inputs()
    inputs.environment = torch.rand(3, 3, H, 128)
    with pytest.raises(AA2InputError, match=r"environment frames are 128×64 \(width × height\) but the pose is 64×64"):
        inputs.validate()
    inputs = _inputs()
    inputs.mask = torch.ones(3, 128, H)
    with pytest.raises(AA2InputError, match=r"mask is 64×128 \(width × height\)"):
        inputs.validate()


# ------------------------------------------------------------------------------------ value ranges


def test_uint8_images_are_scaled_and_float_0_to_255_is_refused():
    u8 = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    assert torch.allclose(unit_range(u8), u8.float() / 255)
    with pytest.raises(AA2InputError, match="reference_image holds values up to 255.*looks like 0..255"):
        unit_range(u8.float(), "reference_image")
    with pytest.raises(AA2InputError, match=r"-1..1"):
        unit_range(torch.tensor([-1.0, 1.0]))
    with pytest.raises(AA2InputError, match="integer image \\(int32\\)"):
        unit_range(torch.tensor([1, 2], dtype=torch.int32))
    ok = torch.tensor([0.0, 1.2])  # resampling overshoot is left to the consumer's clamp
    assert torch.equal(unit_range(ok), ok)


def test_a_comfyui_image_in_0_to_255_is_refused_at_the_boundary_and_uint8_converted(pack):
    boundary = pack.nodes.boundary
    image = torch.rand(2, H, W, 3)
    assert torch.allclose(boundary.image_to_frames((image * 255).round().to(torch.uint8)),
                          boundary.image_to_frames(image), atol=1 / 255)  # half a step of rounding, both ways
    with pytest.raises(pack.aa2.errors.AA2InputError, match="driving_frames holds values up to"):
        boundary.image_to_frames(image * 255, "driving_frames")


@pytest.mark.parametrize("size", [(1, 1), (64, 32), (8, 12)])
def test_skeleton_images_of_another_shape_are_refused_naming_both_sizes(size):
    from aa2.conditioning.skeleton import prepare_skeleton_images

    images = torch.rand(2, 3, *size)
    expected = rf"{size[1]}×{size[0]} \(width × height\) but the output is 128×64 \(width × height\)"
    with pytest.raises(AA2InputError, match=expected):
        prepare_skeleton_images(images, 64, 128)
    assert prepare_skeleton_images(torch.rand(2, 3, 32, 64), 64, 128).shape == (2, 3, 64, 128)  # same aspect: scaled


def _keypoints(frames: int, person=None) -> list[dict]:
    people = [] if person is None else [{"pose_keypoints_2d": person}]
    return [{"people": people, "canvas_width": W, "canvas_height": H} for _ in range(frames)]


def test_pose_keypoints_with_nobody_on_any_frame_are_refused(pack):
    from aa2.conditioning.skeleton import render_skeleton

    assert not render_skeleton(_keypoints(3), H, W).any()  # the renderer alone draws what it is given
    with pytest.raises(AA2InputError, match="no person on any of its 3 frames"):
        render_skeleton(_keypoints(3), H, W, require_person=True)
    node = pack.nodes.nodes_pose.PoseDepthModulate()
    convention = list(pack.nodes.nodes_pose.CONVENTIONS)[0]
    with pytest.raises(pack.aa2.errors.AA2InputError, match="no person on any of its 3 frames"):
        node.prepare(W, H, convention, pose_keypoints=_keypoints(3))
    body = [0.0] * 54
    body[3:9] = [20.0, 20.0, 1.0, 30.0, 40.0, 1.0]  # neck and right shoulder: one limb
    frames = _keypoints(3) + _keypoints(1, body)  # a person on one frame is enough
    assert node.prepare(W, H, convention, pose_keypoints=frames)[0]["skeleton"][3].any()


# ------------------------------------------------------------------------------------ raw library errors


@pytest.mark.parametrize("coordinate", [1e12, -1e30, 5e5])
def test_huge_keypoint_coordinates_are_an_input_error_naming_the_frame(coordinate):
    from aa2.conditioning.skeleton import render_skeleton

    body = [0.0] * 54
    body[3:9] = [20.0, 20.0, 1.0, coordinate, 40.0, 1.0]
    frames = _keypoints(2, [0.0] * 54) + _keypoints(1, body)
    with pytest.raises(AA2InputError, match="POSE_KEYPOINT frame 2: a body keypoint .* lies far outside its 64×64"):
        render_skeleton(frames, H, W, coords="pixels")


# ------------------------------------------------------------------------------------ weight folders


def test_a_moore_folder_missing_a_file_is_listed_and_names_the_file_at_load(pack, tiny_weights, tmp_path):
    import shutil

    broken = tmp_path / "animateanyone2" / "moore-no-guider"
    shutil.copytree(tiny_weights / "animateanyone2" / "aa2-tiny-moore", broken)
    (broken / "pose_guider.pth").unlink()
    nodes = pack.nodes
    nodes.host.set_models_dir(tmp_path)
    try:
        assert "animateanyone2/moore-no-guider" in nodes.nodes_model.base_choices()
        with pytest.raises(pack.aa2.errors.AA2WeightsError, match="moore-no-guider is missing pose_guider.pth"):
            nodes.nodes_model.LoadAA2Model().load("animateanyone2/moore-no-guider")
    finally:
        nodes.host.set_models_dir(None)


def test_a_pack_checkpoint_resaved_without_metadata_is_recognised_by_its_keys(tiny_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"))
    stripped = tmp_path / "aa2-fp16.safetensors"
    save_file({k: v.half() for k, v in state.items()}, str(stripped))  # what another tool's fp16 re-save does
    with pytest.raises(AA2WeightsError, match="is an Animate Anyone 2 pack checkpoint whose metadata was lost") as info:
        load_model(ModelSources.from_path(stripped))
    assert "python -m aa2 convert" in str(info.value) and "motion module" not in str(info.value)


def test_a_lagging_finite_watch_names_the_bad_step_one_step_late_or_at_flush():
    from aa2.checks import FiniteWatch

    good, bad = torch.zeros(4), torch.tensor([0.0, float("nan")])
    watch = FiniteWatch(lag=True)  # the GPU's way, here on CPU tensors
    assert watch.step(1, good) is None and watch.step(2, bad) is None  # step 2 not read yet
    assert watch.step(3, good) == 2  # read once step 3 is queued behind it
    assert watch.step(4, torch.tensor([float("inf")])) is None and watch.flush() == 4  # the end of a clip reads the last
    assert watch.flush() is None
    immediate = FiniteWatch()  # CPU tensors: read at once
    assert immediate.step(1, good) is None and immediate.step(2, bad) == 2


def test_on_a_gpu_divergence_stops_one_step_later_still_naming_the_step(tiny_model, monkeypatch):
    from aa2.checks import FiniteWatch

    diverge_from_the_second_model_call(monkeypatch)
    monkeypatch.setattr(pipeline, "FiniteWatch", lambda: FiniteWatch(lag=True))  # as CUDA tensors are watched
    seen = []
    inputs = AnimationInputs(reference=torch.rand(3, H, W), pose=torch.rand(3, 3, H, W))
    with pytest.raises(AA2Error, match="sampling diverged at step 2 of 4"):
        pipeline.animate(tiny_model, inputs, SamplingSettings(steps=4, clip_length=3), progress=lambda d, t, x: seen.append(d))
    assert seen == [1, 2]  # one step later than on the CPU, and still nothing decoded
