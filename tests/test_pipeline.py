"""The inference pipeline and the long-video chainer, on the tiny pack checkpoint."""

from __future__ import annotations

import pytest
import torch

import aa2.pipeline.animate as animate_module
from aa2.errors import AA2Cancelled, AA2InputError
from aa2.pipeline.animate import animate, environment_is_learned, resolve_environment_mode
from aa2.pipeline.inputs import AnimationInputs, SamplingSettings, clip_seed, plan_clips
from aa2.pipeline.reference import encode_reference
from aa2.pipeline.vae_codec import encode_frames
from aa2.sampling.k_samplers import K_SAMPLERS
from aa2.sampling.registry import SAMPLERS
from aa2.weights.sources import ModelSources, load_model

H = W = 64


def _inputs(frames=10, seed=0, environment=True, objects=True, depth=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(frames, H, W)
    mask[:, 16:48, 20:44] = 1
    return AnimationInputs(
        reference=torch.rand(3, 80, 64, generator=g),
        pose=torch.rand(frames, 3, H, W, generator=g),
        depth=torch.rand(frames, 3, H, W, generator=g) if depth else None,
        environment=torch.rand(frames, 3, H, W, generator=g) if environment else None,
        mask=mask if environment else None,
        objects=torch.rand(frames, 3, H, W, generator=g) if objects else None,
    )


FAST = SamplingSettings(steps=2, clip_length=6, cfg=2.0)


@pytest.fixture(scope="module")
def moore_model(tiny_weights):
    return load_model(ModelSources.from_path(tiny_weights / "animateanyone2" / "aa2-tiny-moore").replace(
        vae=tiny_weights / "vae" / "aa2-tiny-vae.safetensors",
        image_encoder=tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors"))


# ---------------------------------------------------------------------------------- clip planning


@pytest.mark.parametrize("frames,length,motion,overlap", [(1, 16, 1, 0), (16, 16, 1, 0), (40, 16, 1, 0),
                                                          (40, 16, 2, 3), (17, 8, 0, 0), (33, 16, 4, 4)])
def test_clips_cover_every_frame_once_within_the_motion_window(frames, length, motion, overlap):
    plans = plan_clips(frames, length, motion, overlap, seed=5)
    covered = [f for p in plans for f in p.generated]
    assert sorted(set(covered)) == list(range(frames))
    assert all(p.stop - p.start <= length for p in plans)
    for before, after in zip(plans, plans[1:]):
        assert after.start == before.stop - after.carried - after.overlap  # carried frames are the previous tail
        assert after.carried == min(motion, before.stop - before.start)
    assert len({p.seed for p in plans}) == len(plans) and plans[1:] == plans[1:]
    assert [p.seed for p in plans] == [clip_seed(5, i) for i in range(len(plans))]


# ---------------------------------------------------------------------------------- results


def test_same_seed_same_video_other_seed_other_video(tiny_model):
    a = animate(tiny_model, _inputs(), FAST)
    b = animate(tiny_model, _inputs(), FAST)
    c = animate(tiny_model, _inputs(), SamplingSettings(**{**FAST.__dict__, "seed": 1}))
    assert a.frames.shape == (10, H, W, 3) and a.latents.shape == (1, 4, 10, H // 8, W // 8)
    assert 0 <= a.frames.min() and a.frames.max() <= 1
    assert torch.equal(a.frames, b.frames)
    assert not torch.allclose(a.latents, c.latents)


def test_given_initial_latents_replace_the_seeded_noise(tiny_model):
    noise = torch.randn(1, 4, 10, H // 8, W // 8, generator=torch.Generator().manual_seed(9))
    a = animate(tiny_model, _inputs(), FAST, latents=noise)
    b = animate(tiny_model, _inputs(), SamplingSettings(**{**FAST.__dict__, "seed": 77}), latents=noise)
    torch.testing.assert_close(a.latents, b.latents, atol=1e-5, rtol=0)  # the seed only drew the noise
    with pytest.raises(AA2InputError, match="latents must be"):
        animate(tiny_model, _inputs(), FAST, latents=noise[:, :, :3])


def test_the_first_clip_re_renders_alone_identically(tiny_model):
    inputs = _inputs(frames=10)
    whole = animate(tiny_model, inputs, FAST)
    first = AnimationInputs(inputs.reference, *(None if x is None else x[:6] for x in (
        inputs.pose, inputs.depth, inputs.environment, inputs.mask, inputs.objects)))
    alone = animate(tiny_model, first, FAST)  # the source frames of clip 0, the same seed
    torch.testing.assert_close(alone.frames, whole.frames[:6], atol=1e-5, rtol=0)


def test_chainer_carries_the_last_latents_into_the_next_clip(tiny_model, monkeypatch):
    calls = []
    real = animate_module.denoise_clip

    def spy(guided, noise, **kwargs):
        clean = real(guided, noise, **kwargs)
        calls.append((kwargs["known"], clean.clone()))
        return clean

    monkeypatch.setattr(animate_module, "denoise_clip", spy)
    settings = SamplingSettings(steps=2, clip_length=6, motion_frames=2, cfg=1.0)
    animate(tiny_model, _inputs(frames=12, environment=False), settings)
    assert len(calls) == 3 and calls[0][0] is None
    for (_, before), (known, after) in zip(calls, calls[1:]):
        assert torch.equal(known.latents[:, :, :2], before[:, :, -2:])  # as latents: no decode/encode
        assert bool((known.mask[:, :, :2] == 1).all()) and bool((known.mask[:, :, 2:] == 0).all())
        assert torch.equal(after[:, :, :2], before[:, :, -2:])  # held fixed while the rest is denoised


def test_memory_is_flat_one_clip_on_the_denoiser_at_a_time(tiny_model):
    """However long the video, the DenoisingNet and the VAE only ever see one clip's frames."""
    seen, decoded = [], []
    net_hook = tiny_model.denoising_net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    vae_hook = tiny_model.vae.decoder.register_forward_pre_hook(lambda m, args: decoded.append(args[0].shape[0]))
    try:
        animate(tiny_model, _inputs(frames=30, environment=False, objects=False, depth=False),
                SamplingSettings(steps=1, clip_length=6, vae_chunk=4, cfg=1.0))
    finally:
        net_hook.remove()
        vae_hook.remove()
    assert max(seen) == 6 and max(decoded) <= 4 and len(seen) == len(plan_clips(30, 6, 1, 0, 0))


def test_reference_net_runs_once_per_video_and_never_for_a_given_reference(tiny_model):
    calls = []
    hook = tiny_model.reference_net.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        animate(tiny_model, _inputs(frames=14), FAST)
        assert len(calls) == 1
        reference = encode_reference(tiny_model, _inputs().reference, (H, W))
        assert len(calls) == 2
        for seed in (1, 2):
            animate(tiny_model, _inputs(frames=14), SamplingSettings(**{**FAST.__dict__, "seed": seed}),
                    reference=reference)
        assert len(calls) == 2
    finally:
        hook.remove()


def test_guidance_runs_both_branches_in_one_batch_per_step(tiny_model):
    batches = []
    hook = tiny_model.denoising_net.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        animate(tiny_model, _inputs(frames=6), SamplingSettings(steps=3, clip_length=6, cfg=3.5))
        animate(tiny_model, _inputs(frames=6), SamplingSettings(steps=3, clip_length=6, cfg=1.0))
    finally:
        hook.remove()
    assert batches == [2, 2, 2, 1, 1, 1]


def test_progress_counts_every_step_of_every_clip(tiny_model):
    reports = []
    animate(tiny_model, _inputs(frames=14), FAST, progress=lambda done, total, x0: reports.append((done, total, x0)))
    clips = len(plan_clips(14, 6, 1, 0, 0))
    assert [r[0] for r in reports] == list(range(1, clips * 2 + 1))
    assert {r[1] for r in reports} == {clips * 2}
    assert reports[0][2].shape[:2] == (1, 4)


def test_cancel_between_steps_leaves_the_model_usable(tiny_model):
    before = animate(tiny_model, _inputs(), FAST)
    count = {"n": 0}

    def cancel():
        count["n"] += 1
        return count["n"] > 2

    with pytest.raises(AA2Cancelled):
        animate(tiny_model, _inputs(), FAST, cancel=cancel)
    assert all(reader.reference is None for reader in tiny_model.reference_attention.readers.values())
    after = animate(tiny_model, _inputs(), FAST)
    assert torch.equal(before.frames, after.frames)


# ---------------------------------------------------------------------------------- environment


def test_environment_mode_follows_what_the_weights_learned(tiny_model, moore_model):
    assert environment_is_learned(tiny_model) and not environment_is_learned(moore_model)
    assert resolve_environment_mode(tiny_model, "auto", True) == (True, False)
    assert resolve_environment_mode(moore_model, "auto", True) == (False, True)
    assert resolve_environment_mode(tiny_model, "input+blend", True) == (True, True)
    assert resolve_environment_mode(tiny_model, "auto", False) == (False, False)
    with pytest.raises(AA2InputError, match="blend"):
        resolve_environment_mode(moore_model, "input", True)


def test_blend_mode_keeps_the_environment_latents_outside_the_mask(moore_model):
    inputs = _inputs(frames=6, objects=False, depth=False)
    result = animate(moore_model, inputs, SamplingSettings(steps=2, clip_length=6, cfg=2.0))
    from aa2.conditioning.masks import environment_frames, latent_mask

    env = encode_frames(moore_model.vae, environment_frames(inputs.environment, inputs.mask))
    outside = (latent_mask(inputs.mask)[:, 0] < 0.5)  # [F, h, w]
    got, want = result.latents[0].permute(1, 0, 2, 3), env[0].permute(1, 0, 2, 3)  # [F, 4, h, w]
    assert torch.equal(got.permute(0, 2, 3, 1)[outside], want.permute(0, 2, 3, 1)[outside])
    inside = ~outside
    assert not torch.allclose(got.permute(0, 2, 3, 1)[inside], want.permute(0, 2, 3, 1)[inside])


def test_pasting_puts_back_the_exact_pixels_outside_the_feathered_mask(tiny_model):
    inputs = _inputs(frames=6)
    result = animate(tiny_model, inputs, SamplingSettings(steps=1, clip_length=6, paste_environment=True, feather=4))
    far = torch.ones(H, W, dtype=torch.bool)
    far[16 - 9 : 48 + 9, 20 - 9 : 44 + 9] = False  # the mask grown by more than twice the feather
    env = inputs.environment.permute(0, 2, 3, 1)
    assert torch.equal(result.frames[:, far], env[:, far])
    assert not torch.allclose(result.frames[:, 30, 30], env[:, 30, 30])  # the character is generated


# ---------------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_registry_sampler_renders_and_keeps_the_known_region(moore_model, name):
    """Moore weights blend the environment: outside the mask the latents are held, whichever sampler runs."""
    from aa2.conditioning.masks import environment_frames, latent_mask

    inputs = _inputs(frames=4, objects=False, depth=False)
    result = animate(moore_model, inputs, SamplingSettings(steps=2, clip_length=4, sampler=name))
    assert torch.isfinite(result.latents).all()
    env = encode_frames(moore_model.vae, environment_frames(inputs.environment, inputs.mask))
    outside = latent_mask(inputs.mask)[:, 0] < 0.5  # [F, h, w]
    got, want = result.latents[0].permute(1, 2, 3, 0), env[0].permute(1, 2, 3, 0)  # [F, h, w, 4]
    assert torch.equal(got[outside], want[outside])
    assert not torch.allclose(got[~outside], want[~outside])


@pytest.mark.parametrize("name", sorted(K_SAMPLERS))
def test_k_diffusion_samplers_drive_the_model_with_their_own_sigmas(tiny_model, name):
    inputs = _inputs(frames=6)
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    seen = []

    def sampler(model, x, sigmas, **kwargs):
        seen.append(float(x.std()))
        return K_SAMPLERS[name](model, x, sigmas, **kwargs)

    progress = []
    result = animate(tiny_model, inputs, FAST, sampler=sampler, sigmas=sigmas,
                     progress=lambda done, total, x0: progress.append((done, total)))
    assert torch.isfinite(result.latents).all()
    assert seen[0] == pytest.approx(14.6, rel=0.1)  # the sampler starts at its own first sigma
    assert progress == [(1, 3), (2, 3), (3, 3)]  # three sigmas' steps, not FAST.steps (2)
    with pytest.raises(AA2InputError, match="k-diffusion"):
        animate(tiny_model, inputs, FAST, sigmas=sigmas)


def test_frames_per_vae_call_change_memory_not_the_video(tiny_model):
    inputs = _inputs(frames=5)
    one, many = (animate(tiny_model, inputs, SamplingSettings(steps=1, clip_length=5, vae_chunk=n)) for n in (1, 4))
    assert SamplingSettings().vae_chunk == 0  # automatic: one frame per call on the CPU (tests/test_vae_codec.py)
    torch.testing.assert_close(one.frames, many.frames, atol=1e-5, rtol=0)  # batch size changes CPU summation order
    assert not torch.equal(one.frames[0], one.frames[1])


def test_model_in_bfloat16_renders_float_frames(tiny_weights):
    model = load_model(ModelSources.from_path(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"))
    model.to(torch.bfloat16)
    result = animate(model, _inputs(frames=4), SamplingSettings(steps=1, clip_length=4))
    assert result.frames.dtype == torch.float32 and torch.isfinite(result.frames).all()


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change,message", [
    (lambda i: setattr(i, "pose", i.pose[..., :60]), "multiple of 64"),
    (lambda i: setattr(i, "depth", i.depth[:3]), "depth has 3 frames but the pose has 4"),
    (lambda i: setattr(i, "mask", None), "without mask"),
    (lambda i: setattr(i, "mask", torch.zeros_like(i.mask)), "empty"),
    (lambda i: setattr(i, "reference", i.reference[None]), "one RGB image"),
])
def test_bad_inputs_are_refused_before_sampling(tiny_model, change, message):
    inputs = _inputs(frames=4)
    change(inputs)
    with pytest.raises(AA2InputError, match=message):
        animate(tiny_model, inputs, FAST)


@pytest.mark.parametrize("part,message", [("depth", "no depth branch"), ("objects", "no object guider")])
def test_inputs_for_parts_the_weights_lack_are_refused_not_dropped(moore_model, part, message):
    inputs = _inputs(frames=4, objects=part == "objects", depth=part == "depth")
    with pytest.raises(AA2InputError, match=message):
        animate(moore_model, inputs, FAST)


@pytest.mark.parametrize("settings,message", [
    (SamplingSettings(clip_length=40), "clip_length"),
    (SamplingSettings(clip_length=4, motion_frames=2, overlap=2), "new frames"),
    (SamplingSettings(steps=0), "steps"),
    (SamplingSettings(cfg=0.5), "cfg"),
    (SamplingSettings(sampler="heun"), "unknown sampler"),
])
def test_bad_settings_are_refused(tiny_model, settings, message):
    with pytest.raises(AA2InputError, match=message):
        animate(tiny_model, _inputs(frames=4), settings)


def test_a_reference_encoded_for_another_size_is_refused(tiny_model):
    reference = encode_reference(tiny_model, _inputs().reference, (128, 64))
    with pytest.raises(AA2InputError, match="encode it again"):
        animate(tiny_model, _inputs(frames=4), FAST, reference=reference)
