"""The sampling and pose nodes, run as ComfyUI runs them (keyword inputs, ComfyUI types), without ComfyUI."""

from __future__ import annotations

import pytest
import torch

from comfy_contract import EmptyNoise, HostVAE, RandomNoise, VAEDecode, contract_problems

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
    assert latent["samples"].shape == (F, 4, H // 8, W // 8) and latent["samples"].dtype == torch.float32


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
    assert out.shape == (frames, H, W, 3) and latent["samples"].shape == (frames, 4, H // 8, W // 8)


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


@pytest.mark.parametrize("sampler_name", ["default", "ddim", "euler", "euler_ancestral", "dpmpp_2m",
                                          "dpmpp_2m_karras", "unipc", "lcm", "k_euler", "k_dpmpp_2m"])
def test_every_dropdown_sampler_renders_through_the_node(nodes, hosted, pose, sampler_name):
    assert sampler_name in nodes.nodes_sampling.SAMPLER_NAMES  # the list is the registry's (test_sampler_registry)
    frames, latent = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, sampler_name=sampler_name)
    assert frames.shape == (F, H, W, 3) and torch.isfinite(latent["samples"]).all()


def test_a_k_sampler_name_follows_connected_sigmas_without_a_sampler(nodes, hosted, pose, pack, monkeypatch):
    guided = pack.aa2.pipeline.clip_denoiser.GuidedModel
    real, calls = guided.__call__, []
    monkeypatch.setattr(guided, "__call__", lambda self, x, t: calls.append(t) or real(self, x, t))
    (sigmas,) = nodes.nodes_sampling.AA2Sigmas().sigmas(hosted, "karras", 3)
    frames, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, sampler_name="k_euler", sigmas=sigmas, steps=20)
    assert torch.isfinite(frames).all() and len(calls) == 3  # the sigmas' three steps, not the widget's 20


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


SCALE = 0.18215  # SD1.5's VAE scaling factor (comfy/latent_formats.py SD15), the tiny VAE's too


def test_latent_boundary_round_trips_aa2_latents_and_unscales_them(pack):
    boundary = pack.nodes.boundary
    latents = torch.randn(1, 4, F, 3, 5, generator=torch.Generator().manual_seed(0))
    latent = boundary.latents_to_latent(latents, SCALE)
    assert set(latent) == {"samples"} and latent["samples"].shape == (F, 4, 3, 5)  # frames are the batch
    torch.testing.assert_close(latent["samples"][2] * SCALE, latents[0, :, 2], rtol=1e-6, atol=0)
    # x / s * s is exact up to one rounding each way: 1e-6 relative is a few float32 ulps.
    torch.testing.assert_close(boundary.latent_to_latents(latent, SCALE), latents, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("latent", [
    {"samples": torch.zeros(1, 4, F, 8, 8)},  # aa2's own 5-D layout, or a video model's
    {"samples": torch.zeros(F, 16, 8, 8)},  # a 16-channel (SD3 / Flux) latent
    {"noise_mask": torch.zeros(1, 8, 8)},
    torch.zeros(F, 4, 8, 8),  # a bare tensor, not the LATENT dict
])
def test_a_latent_of_the_wrong_shape_gets_a_clear_error(pack, latent):
    with pytest.raises(pack.aa2.errors.AA2InputError, match=r"LATENT, samples \[frames, 4"):
        pack.nodes.boundary.latent_to_latents(latent, SCALE)


def test_sampler_latent_through_core_vae_decode_gives_the_samplers_frames(nodes, hosted, pose, pack):
    """AA2 Sampler -> core VAE Decode. ComfyUI itself is not importable in the suite, so VAE Decode
    and the host VAE are re-stated from ComfyUI 0.3.64 (tests/comfy_contract.py: `vae.decode(
    samples["samples"])`, no scaling) over the pack's own VAE weights. Unscaled LATENT in, the same
    frames out as the sampler decoded itself, and as the pack's decode of the same latents."""
    from aa2.pipeline.vae_codec import decode_latents

    frames, latent = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    vae = hosted.ready().vae
    (decoded,) = VAEDecode().decode(HostVAE(vae), latent)
    assert decoded.shape == frames.shape == (F, H, W, 3)
    # The same float32 ops on the same values; only the decoder's batch (F frames here, one per call
    # in the pipeline) differs, which may reorder a convolution's sums: 1e-5 is far below 1/255.
    torch.testing.assert_close(decoded, frames, atol=1e-5, rtol=0)
    own = decode_latents(vae, pack.nodes.boundary.latent_to_latents(latent, vae.config.scaling_factor))
    torch.testing.assert_close(decoded, own.permute(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_noise_input_gives_the_initial_noise_and_its_seed_is_the_runs(nodes, hosted, pose, pack):
    """A NOISE that yields exactly the seed's own initial noise renders exactly the seed's video."""
    from einops import rearrange

    seed = 11
    clip_seed = pack.aa2.pipeline.inputs.clip_seed(seed, 0)

    class SeedsOwnNoise:
        def __init__(self):
            self.seed = seed

        def generate_noise(self, input_latent):
            f, c, h, w = input_latent["samples"].shape
            noise = torch.randn(1, c, f, h, w, generator=torch.Generator().manual_seed(clip_seed))
            return rearrange(noise, "1 c f h w -> f c h w")

    by_seed, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, seed=seed)
    by_noise, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, seed=0, noise=SeedsOwnNoise())
    assert torch.equal(by_seed, by_noise)


def test_random_noise_decides_the_video_whatever_the_seed_widget(nodes, hosted, pose):
    one, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, seed=1, noise=RandomNoise(5))
    two, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, seed=2, noise=RandomNoise(5))
    other, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, seed=1, noise=RandomNoise(6))
    assert torch.equal(one, two) and not torch.equal(one, other)


def test_chainer_takes_noise_for_the_whole_video(nodes, hosted):
    frames = 7
    node = nodes.nodes_pose.PoseDepthModulate()
    pose, _, _ = node.prepare(W, H, list(nodes.nodes_pose.CONVENTIONS)[0], skeleton_images=_image(frames, seed=1))
    args = dict(clip_length=4, motion_frames=1, overlap=0, driving_frames=_image(frames, seed=5),
                agnostic_mask=_mask(frames), object_frames=None, noise=RandomNoise(9))
    one, _ = _run(nodes.nodes_sampling.LongVideoChainer(), hosted, pose, seed=1, **args)
    two, _ = _run(nodes.nodes_sampling.LongVideoChainer(), hosted, pose, seed=2, **args)
    assert one.shape == (frames, H, W, 3) and torch.equal(one, two)


@pytest.mark.parametrize("noise, message", [
    (EmptyNoise(), "all zeros"),
    (object(), "must be a ComfyUI NOISE"),
])
def test_noise_that_cannot_start_a_render_is_refused(nodes, hosted, pose, pack, noise, message):
    with pytest.raises(pack.aa2.errors.AA2InputError, match=message):
        _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, noise=noise)


def test_a_stale_latent_link_from_an_old_workflow_says_what_replaced_it(nodes, hosted, pose, pack):
    """API-format workflows from before NOISE may still link the old `latent` (noise) input."""
    with pytest.raises(pack.aa2.errors.AA2InputError, match="RandomNoise"):
        _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, latent={"samples": torch.zeros(1, 4, F, 8, 8)})


def test_longer_inputs_are_refused_unless_cut_longer_inputs_then_their_first_frames_are_used(nodes, hosted, pose,
                                                                                             pack, caplog):
    longer = dict(driving_frames=torch.cat([_image(seed=5), _image(2, seed=9)]),
                  agnostic_mask=torch.cat([_mask(), _mask(2)]),
                  object_frames=torch.cat([_image(seed=6), _image(2, seed=10)]))
    with pytest.raises(pack.aa2.errors.AA2InputError, match="cut_longer_inputs"):
        _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, **longer)
    with caplog.at_level("WARNING", logger="aa2"):
        cut, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose, cut_longer_inputs=True, **longer)
    exact, _ = _run(nodes.nodes_sampling.AA2Sampler(), hosted, pose)
    assert torch.equal(cut, exact)
    for name in longer:  # each cut is said, naming the input
        assert f"{name} has {F + 2} frames, the pose {F}" in caplog.text
