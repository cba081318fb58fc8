"""SD1.5 single-file checkpoints and VAE files in the original LDM layout, read offline.

Fixtures are tiny diffusers models written in the real LDM format by our own diffusers -> LDM key
map; the map is proved by round trip, and diffusers' own `from_single_file` (given a local config,
so it stays offline) reads the same files to the same tensors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from aa2.config import UNetShape, sd15, tiny
from aa2.errors import AA2WeightsError
from aa2.weights.files import read_state_dict, write_safetensors
from aa2.weights.ldm import (
    TEXT_PREFIX,
    convert_sd15_checkpoint,
    load_sd15_checkpoint,
    load_vae_file,
    read_sd15_checkpoint,
    read_vae_file,
    sd15_to_ldm,
    unet_from_state,
    unet_to_ldm,
    vae_to_ldm,
    write_sd15_checkpoint,
    write_vae_file,
)

# The tensors themselves are compared bit for bit. Outputs are compared with a tolerance: tensors
# taken as they were read from a file (`assign=True`) can sit at another memory alignment than a
# model's own, which changes CPU kernels' float32 summation order (measured: up to ~6e-6 on outputs
# of magnitude ~1-10 for these tiny random models).
ATOL = RTOL = 1e-5


def _unet(shape: UNetShape, in_channels: int = 4, **extra) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**{**shape.diffusers_config(in_channels), **extra}).eval()


@pytest.fixture(scope="session")
def models() -> tuple[UNet2DConditionModel, AutoencoderKL]:
    unet = _unet(tiny().unet)
    vae = AutoencoderKL(**tiny().vae.diffusers_config()).eval()
    # random norms and biases, so a swapped or misnamed key cannot hide behind default values
    with torch.no_grad():
        for p in [*unet.parameters(), *vae.parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
    return unet, vae


@pytest.fixture(scope="session")
def text_encoder() -> dict[str, torch.Tensor]:
    """A stand-in for the CLIP text model every SD1.5 file carries; readers must ignore it."""
    return {"text_model.embeddings.token_embedding.weight": torch.randn(10, 8),
            "text_model.final_layer_norm.weight": torch.ones(8)}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, models, text_encoder):
    unet, vae = models
    path = tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors"
    return write_sd15_checkpoint(path, unet.state_dict(), vae.state_dict(), text_encoder)


@pytest.fixture(scope="session")
def diffusers_config_dir(tmp_path_factory, models):
    """`unet/config.json` and `vae/config.json`: what `from_single_file` needs to stay offline."""
    folder = tmp_path_factory.mktemp("config")
    unet, vae = models
    unet.save_config(folder / "unet")
    vae.save_config(folder / "vae")
    return folder


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def _unet_out(unet: UNet2DConditionModel, cross_dim: int = 32, in_channels: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, in_channels, 16, 16, generator=generator)
    context = torch.randn(1, 2, cross_dim, generator=generator)
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=context).sample


def _vae_out(vae: AutoencoderKL) -> torch.Tensor:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        return vae.decode(vae.encode(x).latent_dist.mean).sample


# ---------------------------------------------------------------- the key map


def test_round_trip_diffusers_ldm_diffusers_is_identical_and_total(models):
    unet, vae = models
    state = sd15_to_ldm(unet.state_dict(), vae.state_dict())
    assert len(state) == len(unet.state_dict()) + len(vae.state_dict())  # every key mapped, none merged
    result = convert_sd15_checkpoint(state, "memory")
    _identical(result.unet, unet.state_dict())
    _identical(result.vae, vae.state_dict())
    assert result.unet_shape == tiny().unet and result.in_channels == 4
    assert result.vae_shape == tiny().vae


def test_full_size_sd15_key_map_has_the_real_ldm_names():
    with torch.device("meta"):  # real SD1.5 sizes without allocating 3 GB
        unet = UNet2DConditionModel(**sd15().unet.diffusers_config())
        vae = AutoencoderKL(**sd15().vae.diffusers_config())
    ldm_unet, ldm_vae = unet_to_ldm(unet.state_dict()), vae_to_ldm(vae.state_dict())
    assert len(ldm_unet) == 686 and len(ldm_vae) == 248
    # names as they stand in v1-5-pruned-emaonly (without their prefixes)
    for key in ("input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight",
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.proj_in.weight",
                "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.bias",
                "time_embed.0.weight", "out.2.weight"):
        assert key in ldm_unet, key
    for key in ("encoder.down.0.block.0.conv1.weight", "encoder.down.1.block.0.nin_shortcut.weight",
                "decoder.up.3.upsample.conv.weight", "decoder.up.0.block.0.nin_shortcut.weight",
                "decoder.mid.attn_1.proj_out.weight", "encoder.norm_out.weight", "post_quant_conv.weight"):
        assert key in ldm_vae, key
    assert ldm_vae["encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)  # linear -> 1x1 conv
    assert ldm_unet["input_blocks.0.0.weight"].shape == (320, 4, 3, 3)
    result = convert_sd15_checkpoint(
        {**{"model.diffusion_model." + k: v for k, v in ldm_unet.items()},
         **{"first_stage_model." + k: v for k, v in ldm_vae.items()}}, "meta")
    assert result.unet_shape == sd15().unet and result.vae_shape == sd15().vae
    assert set(result.unet) == set(unet.state_dict()) and set(result.vae) == set(vae.state_dict())


# ---------------------------------------------------------------- reading checkpoints


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_checkpoint_reads_to_the_original_weights_and_ignores_the_text_encoder(tmp_path, models, text_encoder, suffix):
    unet, vae = models
    path = write_sd15_checkpoint(tmp_path / f"m{suffix}", unet.state_dict(), vae.state_dict(), text_encoder)
    assert any(k.startswith(TEXT_PREFIX) for k in read_state_dict(path))
    result = read_sd15_checkpoint(path)
    _identical(result.unet, unet.state_dict())
    _identical(result.vae, vae.state_dict())


def test_loaded_models_match_diffusers_from_single_file(checkpoint, diffusers_config_dir, models):
    ours_unet, ours_vae = load_sd15_checkpoint(checkpoint)
    theirs_unet = UNet2DConditionModel.from_single_file(
        str(checkpoint), config=str(diffusers_config_dir), subfolder="unet", local_files_only=True)
    theirs_vae = AutoencoderKL.from_single_file(
        str(checkpoint), config=str(diffusers_config_dir), subfolder="vae", local_files_only=True)
    torch.testing.assert_close(_unet_out(ours_unet), _unet_out(theirs_unet), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(_vae_out(ours_vae), _vae_out(theirs_vae), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(_unet_out(ours_unet), _unet_out(models[0]), atol=ATOL, rtol=RTOL)
    assert ours_vae.config.scaling_factor == theirs_vae.config.scaling_factor == 0.18215


def test_loaded_models_are_built_without_random_init(checkpoint):
    unet, vae = load_sd15_checkpoint(checkpoint)
    devices = {p.device.type for p in [*unet.parameters(), *vae.parameters()]}
    assert devices == {"cpu"}  # nothing left on the meta device


def test_inpainting_in_channels_are_reported_for_the_caller(tmp_path, models):
    unet9 = _unet(tiny().unet, in_channels=9)
    path = write_sd15_checkpoint(tmp_path / "inpaint.safetensors", unet9.state_dict(), models[1].state_dict())
    result = read_sd15_checkpoint(path)
    assert result.in_channels == 9
    loaded = unet_from_state(result.unet, result.unet_shape, result.in_channels, str(path))
    torch.testing.assert_close(_unet_out(loaded, in_channels=9), _unet_out(unet9, in_channels=9), atol=ATOL, rtol=RTOL)


def test_checkpoint_without_vae_gives_unet_only(tmp_path, models):
    path = write_sd15_checkpoint(tmp_path / "unet-only.safetensors", models[0].state_dict(), None)
    result = read_sd15_checkpoint(path)
    assert result.vae is None and result.unet
    with pytest.raises(AA2WeightsError, match="has a UNet but no VAE"):
        load_sd15_checkpoint(path)


# ---------------------------------------------------------------- refusing other families


def test_sdxl_is_refused_by_its_conditioner_keys(tmp_path, models):
    state = sd15_to_ldm(models[0].state_dict(), None)
    state["conditioner.embedders.1.model.text_projection"] = torch.zeros(4, 4)
    path = write_safetensors(tmp_path / "sdxl.safetensors", state)
    with pytest.raises(AA2WeightsError, match=r"sdxl\.safetensors looks like SDXL .*use an SD1\.5-based checkpoint"):
        read_sd15_checkpoint(path)


def test_sdxl_is_refused_by_its_2048_wide_context(tmp_path):
    unet = _unet(dataclasses.replace(tiny().unet, cross_attention_dim=2048))
    path = write_sd15_checkpoint(tmp_path / "xl.safetensors", unet.state_dict(), None)
    with pytest.raises(AA2WeightsError, match="looks like SDXL .*cross-attention width 2048"):
        read_sd15_checkpoint(path)


def test_sd2_is_refused_by_its_context_and_linear_proj_in(tmp_path):
    unet = _unet(dataclasses.replace(tiny().unet, cross_attention_dim=1024), use_linear_projection=True)
    path = write_sd15_checkpoint(tmp_path / "sd21.safetensors", unet.state_dict(), None)
    with pytest.raises(AA2WeightsError, match=r"looks like SD2\.x \(cross-attention width 1024, linear proj_in\)"):
        read_sd15_checkpoint(path)


def test_sd2_is_refused_by_its_openclip_text_encoder(tmp_path, models):
    state = sd15_to_ldm(models[0].state_dict(), None)
    state["cond_stage_model.model.ln_final.weight"] = torch.ones(4)
    path = write_safetensors(tmp_path / "sd2.safetensors", state)
    with pytest.raises(AA2WeightsError, match=r"looks like SD2\.x .*OpenCLIP"):
        read_sd15_checkpoint(path)


@pytest.mark.parametrize(
    ("state", "guess"),
    [
        ({"first_stage_model.encoder.down.0.block.0.conv1.weight": torch.zeros(1)}, "a VAE"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(1)}, "a LoRA"),
        ({"down_blocks.0.motion_modules.0.proj_in.weight": torch.zeros(1)}, "AnimateDiff motion module"),
        ({"input_blocks.0.0.weight": torch.zeros(1)}, "bare UNet"),
        ({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)}, "CLIP vision"),
        ({"something.else": torch.zeros(1)}, "unrecognised weights"),
    ],
)
def test_a_file_without_unet_says_what_it_looks_like(tmp_path, state, guess):
    path = write_safetensors(tmp_path / "other.safetensors", state)
    with pytest.raises(AA2WeightsError) as error:
        read_sd15_checkpoint(path)
    assert "other.safetensors is not an SD1.5 checkpoint: it has no UNet" in str(error.value)
    assert guess in str(error.value)


def test_strict_load_names_the_file_and_offending_keys(checkpoint):
    result = read_sd15_checkpoint(checkpoint)
    state = dict(result.unet)
    del state["mid_block.attentions.0.proj_out.bias"]
    state["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
    with pytest.raises(AA2WeightsError) as error:
        unet_from_state(state, result.unet_shape, 4, str(checkpoint))
    message = str(error.value)
    assert str(checkpoint) in message and "SD1.5 UNet" in message
    assert "mid_block.attentions.0.proj_out.bias" in message
    assert "conv_out.weight: file has (4, 32, 1, 1), the SD1.5 UNet needs (4, 32, 3, 3)" in message


# ---------------------------------------------------------------- standalone VAE files


@pytest.mark.parametrize(("layout", "prefix"), [("ldm", ""), ("ldm", "first_stage_model."), ("diffusers", ""),
                                                  ("diffusers", "vae.")])
def test_vae_file_in_any_layout_reads_to_the_original(tmp_path, models, layout, prefix):
    vae = models[1]
    path = write_vae_file(tmp_path / "vae.safetensors", vae.state_dict(), layout=layout, prefix=prefix)
    state, shape = read_vae_file(path)
    _identical(state, vae.state_dict())
    assert shape == tiny().vae


def test_vae_ckpt_with_training_leftovers_loads(tmp_path, models, diffusers_config_dir):
    vae = models[1]
    ldm = vae_to_ldm(vae.state_dict())
    leftovers = {"loss.discriminator.main.0.weight": torch.zeros(2), "model_ema.decay": torch.tensor(0.999)}
    path = tmp_path / "vae-ft-mse.ckpt"
    torch.save({"state_dict": {**ldm, **leftovers}}, path)
    ours = load_vae_file(path)
    theirs = AutoencoderKL.from_single_file(
        str(write_vae_file(tmp_path / "v.safetensors", vae.state_dict())),
        config=str(diffusers_config_dir), subfolder="vae", local_files_only=True)
    torch.testing.assert_close(_vae_out(ours), _vae_out(theirs), atol=ATOL, rtol=RTOL)


def test_old_diffusers_vae_attention_names_are_modernised(tmp_path, models):
    old = {}
    for key, tensor in models[1].state_dict().items():
        for new, previous in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                              (".to_out.0.", ".proj_attn.")):
            key = key.replace(new, previous)
        old[key] = tensor
    path = write_safetensors(tmp_path / "old.safetensors", old)
    state, _ = read_vae_file(path)
    _identical(state, models[1].state_dict())


def test_whole_checkpoint_in_the_vae_slot_is_refused(checkpoint):
    with pytest.raises(AA2WeightsError, match="is a whole checkpoint .* not a VAE file"):
        read_vae_file(checkpoint)


def test_non_vae_in_the_vae_slot_says_what_it_is(tmp_path):
    path = write_safetensors(tmp_path / "lora.safetensors", {"lora_unet_x.lora_up.weight": torch.zeros(2)})
    with pytest.raises(AA2WeightsError, match=r"lora\.safetensors is not a VAE: it looks like a LoRA"):
        read_vae_file(path)


def test_reading_never_opens_a_network_connection(checkpoint, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    unet, vae = load_sd15_checkpoint(checkpoint)
    assert unet.config.in_channels == 4 and vae.config.latent_channels == 4


def test_keys_diffusers_converters_would_drop_silently_are_named(tmp_path, models):
    state = sd15_to_ldm(models[0].state_dict(), models[1].state_dict())
    state["model.diffusion_model.input_blocks.1.2.extra_adapter.weight"] = torch.zeros(2)
    path = write_safetensors(tmp_path / "extra.safetensors", state)
    with pytest.raises(AA2WeightsError, match=r"1 UNet keys are not part of an SD1\.5 UNet.*extra_adapter"):
        read_sd15_checkpoint(path)
    vae_state = vae_to_ldm(models[1].state_dict())
    vae_state["decoder.mid.attn_2.q.weight"] = torch.zeros(2)
    path = write_safetensors(tmp_path / "vae-extra.safetensors", vae_state)
    with pytest.raises(AA2WeightsError, match=r"1 VAE keys are not part of an SD1\.5 VAE.*attn_2"):
        read_vae_file(path)


def test_writer_refuses_keys_it_has_no_ldm_name_for(models):
    state = {**models[0].state_dict(), "down_blocks.0.motion_modules.0.proj_in.weight": torch.zeros(1)}
    with pytest.raises(AA2WeightsError, match="no LDM name for the UNet key 'down_blocks.0.motion_modules"):
        unet_to_ldm(state)
    assert len(unet_to_ldm(state, skip_unknown=True)) == len(models[0].state_dict())
