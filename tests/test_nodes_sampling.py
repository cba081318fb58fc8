"""The sampling and pose nodes, run as ComfyUI runs them (keyword inputs, ComfyUI types), without ComfyUI."""

from __future__ import annotations

import pytest
import torch

from comfy_contract import contract_problems

F, H, W = 6, 64, 64


@pytest.fixture(scope="module")
def nodes(pack, tiny_weights):
    pack.nodes.host.set_models_dir(tiny_weights)
    yield pack.nodes
    pack.nodes.host.set_models_dir(None)


@pytest.fixture(scope="module")
def hosted(nodes):
    (model,) = nodes.nodes_model.LoadAA2Model().load(base="animateanyone2/aa2-tiny.safetensors")
    return model


def _image(frames=F, seed=0):
    return torch.rand(frames, H, W, 3, generator=torch.Generator().manual_seed(seed))


def _mask(frames=F):
    mask = torch.zeros(frames, H, W)
    mask[:, 16:48, 20:44] = 1
    return mask


@pytest.fixture(scope="module")
def pose(nodes):
    node = nodes.nodes_pose.PoseDepthModulate()
    conventions = list(nodes.nodes_pose.CONVENTIONS)
    pose, skeleton, depth = node.prepare(W, H, conventions[0], skeleton_images=_image(seed=1), depth=_image(seed=2))
    return pose


def _run(node, hosted, pose, **kwargs):
    args = dict(aa2_model=hosted, pose=pose, seed=3, steps=2, cfg=2.0, sampler_name="default", environment="auto",
                paste_environment=False, reference_image=_image(1, seed=4), driving_frames=_image(seed=5),
                agnostic_mask=_mask(), object_frames=_image(seed=6))
    args.update(kwargs)
    return node.sample(**args)


@pytest.mark.parametrize("name", ["AA2EncodeReference", "AA2Sampler", "LongVideoChainer", "AA2Sigmas",
                                  "PoseDepthModulate"])
def test_nodes_are_registered_and_meet_the_node_contract(pack, name):
    assert name in pack.NODE_CLASS_MAPPINGS and name in pack.NODE_DISPLAY_NAME_MAPPINGS
    assert contract_problems(pack.NODE_CLASS_MAPPINGS[name]) == []


def test_pose_node_makes_skeleton_and_structured_depth(nodes, pose):
    assert pose["skeleton"].shape == (F, 3, H, W) and pose["depth"].shape == (F, 3, H, W)
    assert bool((pose["depth"][pose["skeleton"].amax(1, keepdim=True).expand_as(pose["depth"]) < 8 / 255] == 0).all())


def test_pose_node_draws_dwpose_keypoints_at_the_requested_size(nodes):
    person = {"pose_keypoints_2d": [0.5, 0.2, 1, 0.5, 0.4, 1] + [0, 0, 0] * 16}
    keypoints = [{"people": [person], "canvas_width": 128, "canvas_height": 256}] * 3
    node = nodes.nodes_pose.PoseDepthModulate()
    pose, skeleton, _ = node.prepare(128, 192, list(nodes.nodes_pose.CONVENTIONS)[0], pose_keypoints=keypoints)
    assert pose["skeleton"].shape == (3, 3, 192, 128) and pose["depth"] is None
    assert skeleton.shape == (3, 192, 128, 3) and skeleton.sum() > 0


def test_pose_node_needs_exactly_one_pose_source(nodes, pack):
    node = nodes.nodes_pose.PoseDepthModulate()
    with pytest.raises(pack.aa2.errors.AA2InputError, match="exactly one"):
        node.prepare(W, H, list(nodes.nodes_pose.CONVENTIONS)[0])


def test_sampler_node_returns_comfy_image_and_latent(nodes, hosted, pose):
    frames, latent = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    assert frames.shape == (F, H, W, 3) and frames.dtype == torch.float32
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert latent["samples"].shape == (1, 4, F, H // 8, W // 8)


def test_encoded_reference_gives_the_same_video_as_the_image(nodes, hosted, pose):
    (reference,) = nodes.nodes_sampling.AA2EncodeReference().encode(hosted, _image(1, seed=4), W, H)
    direct, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    reused, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, reference=reference, reference_image=None)
    torch.testing.assert_close(direct, reused, atol=1e-5, rtol=0)


def test_chainer_renders_more_frames_than_one_clip(nodes, hosted):
    frames = 11
    node = nodes.nodes_pose.PoseDepthModulate()
    pose, _, _ = node.prepare(W, H, list(nodes.nodes_pose.CONVENTIONS)[0], skeleton_images=_image(frames, seed=1))
    out, latent = _run(nodes.nodes_sampling.LongVideoChainer(), hosted, pose, clip_length=4, motion_frames=1,
                       overlap=1, driving_frames=_image(frames, seed=5), agnostic_mask=_mask(frames),
                       object_frames=None)
    assert out.shape == (frames, H, W, 3) and latent["samples"].shape[2] == frames


def test_chainer_with_one_clip_equals_the_sampler(nodes, hosted, pose):
    one, one_latent = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    chained, chained_latent = _run(nodes.nodes_sampling.LongVideoChainer(), hosted, pose, clip_length=F,
                                   motion_frames=1, overlap=0)
    assert torch.equal(one, chained) and torch.equal(one_latent["samples"], chained_latent["samples"])


def test_one_mask_serves_every_frame_and_sizes_are_fitted_to_the_pose(nodes, hosted, pose):
    big = torch.nn.functional.interpolate(_image().permute(0, 3, 1, 2), size=(128, 128)).permute(0, 2, 3, 1)
    frames, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, driving_frames=big, agnostic_mask=_mask(1))
    assert frames.shape == (F, H, W, 3)


def test_host_sampler_and_sigmas_drive_the_model(nodes, hosted, pose):
    """A ComfyUI SAMPLER is an object with sampler_function + extra_options; AA2 Sigmas gives its sigmas."""
    from types import SimpleNamespace

    from aa2.sampling.k_samplers import sample_euler

    seen = {}

    def function(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        seen.update(options=options, seed=extra_args["seed"], sampling=model.inner_model.inner_model.model_sampling)
        return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback)

    sampler = SimpleNamespace(sampler_function=function, extra_options={"eta": 0.5})
    (sigmas,) = nodes.nodes_sampling.AA2Sigmas().sigmas(hosted, "karras", 3)
    frames, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, sampler=sampler, sigmas=sigmas)
    assert torch.isfinite(frames).all() and seen["options"] == {"eta": 0.5} and seen["seed"] == 3
    assert float(seen["sampling"].sigma_max) == pytest.approx(float(sigmas[0]), rel=1e-4)


def test_sigmas_without_a_sampler_are_refused(nodes, hosted, pose, pack):
    (sigmas,) = nodes.nodes_sampling.AA2Sigmas().sigmas(hosted, "normal", 3)
    with pytest.raises(pack.aa2.errors.AA2InputError, match="SAMPLER"):
        _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, sigmas=sigmas)


def test_sampler_node_refuses_more_than_one_clip(nodes, hosted, pack):
    node = nodes.nodes_pose.PoseDepthModulate()
    pose, _, _ = node.prepare(W, H, list(nodes.nodes_pose.CONVENTIONS)[0], skeleton_images=_image(40, seed=1))
    with pytest.raises(pack.aa2.errors.AA2InputError, match="Long Video Chainer"):
        _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)


def test_interrupted_run_leaves_the_model_usable(nodes, hosted, pose, monkeypatch):
    host = nodes.host
    calls = {"n": 0}

    class Interrupted(Exception):
        pass

    def check():
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted()

    monkeypatch.setattr(host, "check_interrupted", check)
    with pytest.raises(Interrupted):
        _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    monkeypatch.undo()
    model = hosted.model
    assert all(reader.reference is None for reader in model.reference_attention.readers.values())
    frames, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    assert torch.isfinite(frames).all()
