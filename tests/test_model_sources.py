"""Every weight format, through `make-tiny-weights` -> the real loaders -> a forward pass.

Where diffusers itself reads the same file offline, our state dicts must equal its tensors
exactly (same conversion of the same file), and a plain diffusers motion UNet built from them
must give our DenoisingNet's output.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel

from aa2.cli import main
from aa2.config import MOORE_SCHEDULER, MotionShape
from aa2.errors import AA2WeightsError
from aa2.models.denoising_net import DenoisingConditions
from aa2.models.motion_norm import use_frame_norm
from aa2.weights.checkpoint import read_checkpoint
from aa2.weights.sources import ModelSources, base_kind, load_model, read_sources

FRAMES = 4


def _paths(root):
    return {
        "pack": root / "animateanyone2" / "aa2-tiny.safetensors",
        "moore": root / "animateanyone2" / "aa2-tiny-moore",
        "mimo": root / "animateanyone2" / "aa2-tiny-mimo",
        "sd15": root / "checkpoints" / "aa2-tiny-sd15.safetensors",
        "sd15_ckpt": root / "checkpoints" / "aa2-tiny-sd15.ckpt",
        "diffusers": root / "diffusers" / "aa2-tiny-sd15",
        "vae": root / "vae" / "aa2-tiny-vae.safetensors",
        "clip": root / "clip_vision" / "aa2-tiny-clip-vision.safetensors",
        "mm_v2": root / "animatediff_models" / "aa2-tiny-mm-v2.ckpt",
        "mm_v3": root / "animatediff_models" / "aa2-tiny-mm-v3.safetensors",
    }


@pytest.fixture(scope="module")
def paths(tiny_weights):
    return _paths(tiny_weights)


def _sources(paths, name):
    extras = {
        "pack": {},
        "moore": {"vae": paths["vae"], "image_encoder": paths["clip"]},
        "mimo": {"vae": paths["diffusers"] / "vae", "image_encoder": paths["diffusers"] / "image_encoder"},
        "sd15": {"motion_module": paths["mm_v2"], "image_encoder": paths["clip"]},
        "sd15_ckpt": {"motion_module": paths["mm_v3"], "image_encoder": paths["clip"]},
        "diffusers": {"motion_module": paths["mm_v2"]},
    }[name]
    return ModelSources.from_path(paths[name]).replace(**extras)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, FRAMES, 8, 8, generator=g), torch.randn(1, 1, 32, generator=g)


@pytest.mark.parametrize("name", ["pack", "moore", "mimo", "sd15", "sd15_ckpt", "diffusers"])
def test_every_base_format_loads_and_denoises(paths, name):
    model = load_model(_sources(paths, name))
    latents, context = _inputs()
    with torch.no_grad():
        out = model.denoising_net(latents, 500, context)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert out.abs().sum() > 0


def test_each_format_records_what_its_weights_need(paths):
    assert base_kind(paths["pack"]) == "aa2" and base_kind(paths["moore"]) == "moore"
    assert base_kind(paths["sd15"]) == "sd15" and base_kind(paths["diffusers"]) == "diffusers"
    moore, _ = read_sources(_sources(paths, "moore"))
    assert moore.fusion == "full" and not moore.use_environment and moore.scheduler == MOORE_SCHEDULER
    mimo, _ = read_sources(_sources(paths, "mimo"))
    assert mimo.fusion == "full" and mimo.use_environment and mimo.scheduler.prediction_type == "v_prediction"
    sd15, _ = read_sources(_sources(paths, "sd15"))
    assert sd15.fusion == "aa2" and sd15.scheduler.prediction_type == "epsilon"
    # DDIM's last step as each base's authors sampled it (aa2.config.SchedulerSettings.set_alpha_to_one)
    assert moore.scheduler.set_alpha_to_one and mimo.scheduler.set_alpha_to_one and not sd15.scheduler.set_alpha_to_one
    v3, _ = read_sources(_sources(paths, "sd15_ckpt"))
    assert v3.motion == MotionShape(use_mid_block=False)


def test_single_file_formats_equal_what_diffusers_reads(paths):
    """Same file, our converter vs diffusers' own single-file loader: identical tensors."""
    _, parts = read_sources(_sources(paths, "sd15"))
    config_dir = str(paths["diffusers"])
    unet = UNet2DConditionModel.from_single_file(str(paths["sd15"]), config=config_dir, subfolder="unet")
    vae = AutoencoderKL.from_single_file(str(paths["vae"]), config=config_dir, subfolder="vae")
    for ours, theirs in ((parts.denoising_unet, unet.state_dict()), (parts.vae, vae.state_dict())):
        assert set(ours) == set(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_motion_module_equals_what_diffusers_reads(paths, tmp_path):
    _, parts = read_sources(_sources(paths, "sd15"))
    config = read_sources(_sources(paths, "sd15"))[0]
    MotionAdapter(**config.motion.adapter_config(config.unet)).save_config(tmp_path)
    adapter = MotionAdapter.from_single_file(str(paths["mm_v2"]), config=str(tmp_path))
    theirs = adapter.state_dict()
    assert set(parts.motion) == set(theirs)
    assert all(torch.allclose(parts.motion[k], theirs[k]) for k in theirs)


def test_denoising_net_without_aa2_inputs_is_the_plain_motion_unet(paths, tmp_path):
    """No environment, pose, objects or reference: exactly diffusers' UNetMotionModel on the same files.

    Frame-wise GroupNorm is applied to the diffusers model too: it is how AnimateDiff's motion
    modules were trained (see aa2.models.motion_norm), not an AA2 input.
    """
    config, _ = read_sources(_sources(paths, "diffusers"))
    model = load_model(_sources(paths, "diffusers"))
    MotionAdapter(**config.motion.adapter_config(config.unet)).save_config(tmp_path)
    adapter = MotionAdapter.from_single_file(str(paths["mm_v2"]), config=str(tmp_path))
    unet2d = UNet2DConditionModel.from_pretrained(paths["diffusers"] / "unet")
    plain = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    use_frame_norm(plain)
    latents, context = _inputs()
    with torch.no_grad():
        ours = model.denoising_net(latents, 321, context)
        theirs = plain(latents, 321, encoder_hidden_states=context.repeat_interleave(FRAMES, 0)).sample
    # Not bit-identical only because conv_in has 9 inputs here (5 of them zero weights on zero
    # input): the convolution sums in another order. Measured 2e-5 on outputs of magnitude ~2.
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_pack_checkpoint_round_trips_every_tensor_and_the_config(paths, tmp_path, tiny_model):
    out = tmp_path / "copy.safetensors"
    assert main(["convert", str(paths["pack"]), str(out), "--dtype", "fp32"]) == 0
    config, _ = read_checkpoint(out)
    assert config == tiny_model.config
    again = load_model(ModelSources.from_path(out))
    ours, theirs = tiny_model.state_dict(), again.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_convert_moore_folder_keeps_its_forward_pass_and_schedule(paths, tmp_path):
    out = tmp_path / "moore.safetensors"
    argv = ["convert", str(paths["moore"]), str(out), "--vae", str(paths["vae"]),
            "--image-encoder", str(paths["clip"]), "--dtype", "fp32"]
    assert main(argv) == 0
    direct, converted = load_model(_sources(paths, "moore")), load_model(ModelSources.from_path(out))
    assert converted.config == direct.config and converted.config.scheduler == MOORE_SCHEDULER
    for (name, x), (_, y) in zip(direct.state_dict().items(), converted.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    latents, context = _inputs(1)
    with torch.no_grad():
        for model in (direct, converted):
            model.bind_reference(model.encode_reference(latents[:, :, 0], context))
        a, b = (m.denoising_net(latents, 10, context) for m in (direct, converted))
    # Same weights bit for bit, but safetensors hands them out at the file's byte offsets, and CPU kernels
    # round differently on memory that is not 64-byte aligned (~5e-6 here, with outputs of order 1).
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_moore_weights_leave_out_the_parts_they_never_trained_unless_training_asks(paths):
    """Inference from Animate Anyone 1 weights carries no object guider, blending or depth branch; training
    from them (`new_parts`) gets those parts freshly built, starting as identities, and the same output."""
    bare = load_model(_sources(paths, "moore"))
    full = load_model(_sources(paths, "moore").replace(new_parts=True))
    assert bare.denoising_net.object_guider is None and bare.denoising_net.spatial_blend is None
    assert bare.denoising_net.pose_modulation.depth_guider is None
    assert full.denoising_net.object_guider is not None and full.denoising_net.pose_modulation.depth_guider is not None
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(full) > count(bare)
    latents, context = _inputs(2)
    pose = torch.rand(1, 3, FRAMES, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = []
        for model in (bare, full):
            model.bind_reference(model.encode_reference(latents[:, :, 0], context))
            conditions = DenoisingConditions(pose_features=model.denoising_net.pose_modulation(pose))
            outs.append(model.denoising_net(latents, 10, context, conditions))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)


def test_info_says_what_each_base_is_and_what_it_still_needs(paths, capsys):
    assert main(["info", str(paths["moore"])]) == 0
    moore = capsys.readouterr().out
    assert "Moore-AnimateAnyone folder" in moore and "v_prediction" in moore and "trailing" in moore
    assert "object guider + spatial blending left out" in moore and "needs besides: vae, image_encoder" in moore
    assert main(["info", str(paths["sd15"])]) == 0
    sd15 = capsys.readouterr().out
    assert "SD1.5 single-file checkpoint" in sd15 and "add a motion module" in sd15
    assert main(["info", str(paths["pack"])]) == 0
    pack = capsys.readouterr().out
    assert "pack checkpoint" in pack and "needs besides" not in pack and "depth branch built" in pack


def test_convert_to_half_precision_halves_the_file_and_still_loads(paths, tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    assert main(["convert", str(paths["pack"]), str(full), "--dtype", "fp32"]) == 0
    assert main(["convert", str(paths["pack"]), str(half), "--dtype", "fp16"]) == 0
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model = load_model(ModelSources.from_path(half))
    assert next(model.denoising_net.parameters()).dtype == torch.float16


def test_a_missing_part_is_named_with_the_file_that_would_supply_it(paths):
    with pytest.raises(AA2WeightsError) as error:
        read_sources(ModelSources.from_path(paths["sd15"]))
    message = str(error.value)
    assert "motion" in message and "animatediff_models" in message and "clip_vision" in message


def test_cli_reports_missing_parts_as_a_message_not_a_traceback(paths, tmp_path, capsys):
    assert main(["convert", str(paths["sd15"]), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and "motion" in err


@pytest.mark.parametrize("wrong", ["mm_v2", "clip", "vae"])
def test_a_part_file_given_as_the_base_is_refused_with_what_it_is(paths, wrong):
    with pytest.raises(AA2WeightsError, match="not an SD1.5 checkpoint|no UNet"):
        read_sources(ModelSources.from_path(paths[wrong]))


def test_folders_that_are_not_models_are_refused(tmp_path):
    with pytest.raises(AA2WeightsError, match="not found"):
        base_kind(tmp_path / "nothing")
    with pytest.raises(AA2WeightsError, match="neither a Moore-AnimateAnyone folder"):
        base_kind(tmp_path)


def test_moore_folder_missing_a_file_names_it(paths, tmp_path):
    folder = shutil.copytree(paths["moore"], tmp_path / "moore")
    (folder / "pose_guider.pth").unlink()
    with pytest.raises(AA2WeightsError, match="pose_guider.pth"):
        from aa2.weights.moore import read_moore_folder

        read_moore_folder(folder)


def test_motion_module_for_another_unet_is_refused(paths, tmp_path):
    from aa2.weights.ldm import read_sd15_checkpoint, write_sd15_checkpoint

    from aa2.config import UNetShape

    checkpoint = read_sd15_checkpoint(paths["sd15"])

    other = UNet2DConditionModel(**UNetShape(block_out_channels=(16, 16, 32, 32), cross_attention_dim=32,
                                             norm_num_groups=16, attention_heads=4).diffusers_config())
    path = write_sd15_checkpoint(tmp_path / "narrow.safetensors", other.state_dict(), checkpoint.vae)
    sources = ModelSources.from_path(path).replace(motion_module=paths["mm_v2"], image_encoder=paths["clip"])
    with pytest.raises(AA2WeightsError, match="motion"):
        read_sources(sources)
