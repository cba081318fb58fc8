"""The assembled network: what each AA2 input does, and what it leaves alone."""

from __future__ import annotations

import pytest
import torch

from aa2.errors import AA2InputError
from aa2.models.denoising_net import DenoisingConditions
from aa2.weights.sources import ModelSources, load_model

F, H, W = 4, 8, 8  # frames and latent size
# Comparing a batch of 2 with batches of 1: CPU kernels block the sums differently per batch size,
# measured up to ~4e-5 on outputs of magnitude ~2. A real mix-up of halves differs by ~1.
BATCH_TOL = {"atol": 1e-4, "rtol": 0}


@pytest.fixture(scope="module")
def sd15_model(tiny_weights):
    """SD1.5 + AnimateDiff as a user starts: every AA2 part at its starting value."""
    root = tiny_weights
    sources = ModelSources.from_path(root / "checkpoints" / "aa2-tiny-sd15.safetensors").replace(
        motion_module=root / "animatediff_models" / "aa2-tiny-mm-v2.ckpt",
        image_encoder=root / "clip_vision" / "aa2-tiny-clip-vision.safetensors",
    )
    return load_model(sources)


def _inputs(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, F, H, W, generator=g)
    context = torch.randn(batch, 1, 32, generator=g)
    environment = torch.cat([torch.randn(batch, 4, F, H, W, generator=g),
                             (torch.rand(batch, 1, F, H, W, generator=g) > 0.5).float()], dim=1)
    skeleton = torch.rand(batch, 3, F, H * 8, W * 8, generator=g)
    depth = torch.rand(batch, 3, F, H * 8, W * 8, generator=g)
    objects = torch.randn(batch, 4, F, H, W, generator=g)
    return latents, context, environment, skeleton, depth, objects


def _run(model, latents, context, conditions=None, t=400):
    with torch.no_grad():
        return model.denoising_net(latents, t, context, conditions)


def test_reference_net_runs_once_and_its_features_serve_every_step(tiny_model):
    latents, context, *_ = _inputs()
    calls = []
    handle = tiny_model.reference_net.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            bank = tiny_model.encode_reference(latents[:, :, 0], context)
        tiny_model.bind_reference(bank)
        outputs = [_run(tiny_model, latents, context, t=t) for t in (900, 500, 100)]
        tiny_model.bind_reference(None)
        plain = _run(tiny_model, latents, context, t=100)
    finally:
        handle.remove()
        tiny_model.bind_reference(None)
    assert len(calls) == 1
    assert not torch.allclose(outputs[-1], plain, atol=1e-4)  # the reference is actually attended to


def test_aa2_fusion_reads_mid_and_up_blocks_only_full_reads_all(tiny_model, tiny_weights):
    latents, context, *_ = _inputs()
    with torch.no_grad():
        bank = tiny_model.encode_reference(latents[:, :, 0], context)
    assert bank and all(p.startswith(("mid_block", "up_blocks")) for p in bank)
    moore = load_model(ModelSources.from_path(tiny_weights / "animateanyone2" / "aa2-tiny-moore").replace(
        vae=tiny_weights / "vae" / "aa2-tiny-vae.safetensors",
        image_encoder=tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors"))
    with torch.no_grad():
        full = moore.encode_reference(latents[:, :, 0], context)
    assert any(p.startswith("down_blocks") for p in full) and set(bank) < set(full)


def test_unconditional_half_of_a_guidance_batch_sees_no_reference(tiny_model):
    latents, context, *_ = _inputs(batch=2)
    try:
        with torch.no_grad():
            bank = tiny_model.encode_reference(latents[1:, :, 0], context[1:])
        tiny_model.bind_reference(bank, unconditional_half=True)
        guided = _run(tiny_model, latents, context)
        tiny_model.bind_reference(None)
        unconditional = _run(tiny_model, latents[:1], context[:1])
        tiny_model.bind_reference(bank)
        conditional = _run(tiny_model, latents[1:], context[1:])
    finally:
        tiny_model.bind_reference(None)
    torch.testing.assert_close(guided[:1], unconditional, **BATCH_TOL)
    torch.testing.assert_close(guided[1:], conditional, **BATCH_TOL)


def test_parts_at_their_starting_values_leave_a_pretrained_net_unchanged(sd15_model):
    """Environment channels, pose modulation and object blending all start as identities."""
    latents, context, environment, skeleton, depth, objects = _inputs()
    net = sd15_model.denoising_net
    with torch.no_grad():
        conditions = DenoisingConditions(
            environment=environment,
            pose_features=net.pose_modulation(skeleton, depth),
            object_features=net.encode_objects(objects),
        )
    plain = _run(sd15_model, latents, context)
    conditioned = _run(sd15_model, latents, context, conditions)
    assert torch.equal(plain, conditioned)


def test_each_aa2_input_changes_the_output_of_trained_weights(tiny_model):
    latents, context, environment, skeleton, depth, objects = _inputs()
    net = tiny_model.denoising_net
    plain = _run(tiny_model, latents, context)
    with torch.no_grad():
        pose = net.pose_modulation(skeleton, depth)
        object_features = net.encode_objects(objects)
    for conditions in (DenoisingConditions(environment=environment), DenoisingConditions(pose_features=pose),
                       DenoisingConditions(object_features=object_features)):
        assert not torch.allclose(_run(tiny_model, latents, context, conditions), plain, atol=1e-4)


def test_without_objects_blending_is_skipped_bit_identically(tiny_model):
    latents, context, environment, *_ = _inputs()
    conditions = DenoisingConditions(environment=environment)
    with_hooks = _run(tiny_model, latents, context, conditions)
    net = tiny_model.denoising_net
    net.detach()
    try:
        sample = torch.cat([latents, environment], dim=1)
        with torch.no_grad():
            bare = net.unet(sample, 400, encoder_hidden_states=context.repeat_interleave(F, 0)).sample
    finally:
        net.attach()
    assert torch.equal(with_hooks, bare)


def test_conditions_are_shared_across_a_guidance_batch_without_copies(tiny_model):
    latents, context, environment, *_ = _inputs()
    once = _run(tiny_model, latents, context, DenoisingConditions(environment=environment))
    twice = _run(tiny_model, latents.repeat(2, 1, 1, 1, 1), context.repeat(2, 1, 1),
                 DenoisingConditions(environment=environment))
    torch.testing.assert_close(twice[0], once[0], **BATCH_TOL)
    torch.testing.assert_close(twice[1], once[0], **BATCH_TOL)


def test_environment_of_the_wrong_shape_is_refused_with_both_shapes(tiny_model):
    latents, context, environment, *_ = _inputs()
    with pytest.raises(AA2InputError, match=r"\[B, 5, F, h, w\]"):
        _run(tiny_model, latents, context, DenoisingConditions(environment=environment[:, :, :2]))


def test_environment_for_weights_without_that_input_points_to_blending(tiny_weights):
    model = load_model(ModelSources.from_path(tiny_weights / "animateanyone2" / "aa2-tiny-moore").replace(
        vae=tiny_weights / "vae" / "aa2-tiny-vae.safetensors",
        image_encoder=tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors"))
    latents, context, environment, *_ = _inputs()
    with pytest.raises(AA2InputError, match="environment blending"):
        _run(model, latents, context, DenoisingConditions(environment=environment))


def test_model_is_frozen_and_in_eval_mode_after_loading(tiny_model):
    assert not tiny_model.training
    assert not any(p.requires_grad for p in tiny_model.parameters())
