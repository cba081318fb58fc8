"""A diffusers folder (unet/, vae/, image_encoder/) read strictly offline, checked against from_pretrained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from aa2.config import tiny
from aa2.errors import AA2WeightsError
from aa2.weights.files import write_safetensors
from aa2.weights.diffusers_folder import (
    load_unet_folder,
    load_vae_folder,
    read_diffusers_folder,
    read_unet_folder,
    read_vae_folder,
)

# Same tensors, same ops; file-backed tensors may change CPU summation order (see test_weights_ldm).
ATOL = RTOL = 1e-5


def _randomised(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """A tiny diffusers folder as `save_pretrained` writes it (safetensors)."""
    torch.manual_seed(0)
    config = tiny()
    root = tmp_path_factory.mktemp("tiny-diffusers")
    _randomised(UNet2DConditionModel(**config.unet.diffusers_config())).save_pretrained(root / "unet")
    _randomised(AutoencoderKL(**config.vae.diffusers_config())).save_pretrained(root / "vae")
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder.transformers_config()))
    _randomised(encoder).save_pretrained(root / "image_encoder")
    return root


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _unet_out(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 1, 32, generator=g)
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=context).sample


def _vae_out(vae) -> torch.Tensor:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        return vae.decode(vae.encode(x).latent_dist.mean).sample


def test_reads_every_part_with_its_shape(folder):
    result = read_diffusers_folder(folder)
    config = tiny()
    assert result.unet_shape == config.unet and result.in_channels == 4
    assert result.vae_shape == config.vae
    assert result.image_encoder_shape == config.image_encoder  # projection checked against the UNet's 32
    assert set(result.sources) == {"unet", "vae", "image_encoder"}


def test_unet_and_vae_match_diffusers_from_pretrained(folder):
    theirs_unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True).eval()
    theirs_vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True).eval()
    ours_unet, ours_vae = load_unet_folder(folder / "unet"), load_vae_folder(folder / "vae")
    torch.testing.assert_close(_unet_out(ours_unet), _unet_out(theirs_unet), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(_vae_out(ours_vae), _vae_out(theirs_vae), atol=ATOL, rtol=RTOL)


def test_parts_can_be_read_alone(folder):
    result = read_diffusers_folder(folder, parts=("vae",))
    assert result.unet is None and result.image_encoder is None and result.vae


def test_every_missing_part_is_listed_at_once(folder, tmp_path):
    root = _copy(folder, tmp_path)
    shutil.rmtree(root / "vae")
    (root / "unet" / "config.json").unlink()
    (root / "image_encoder" / "model.safetensors").unlink()
    with pytest.raises(AA2WeightsError) as error:
        read_diffusers_folder(root)
    message = str(error.value)
    assert "missing unet/config.json" in message
    assert "vae/ is missing" in message
    assert "missing image_encoder/model.safetensors" in message


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(AA2WeightsError, match="diffusers folder not found"):
        read_diffusers_folder(tmp_path / "nowhere")


def test_fp16_variant_and_bin_weights_are_found(folder, tmp_path):
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    unet.to(torch.float16).save_pretrained(tmp_path / "unet", variant="fp16")
    state, _, _ = read_unet_folder(tmp_path / "unet")
    assert state["conv_in.weight"].dtype == torch.float16
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=False)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.bin").is_file()
    state, _ = read_vae_folder(tmp_path / "vae")
    assert torch.equal(state["encoder.conv_in.weight"], vae.state_dict()["encoder.conv_in.weight"])


def test_sharded_weights_are_joined(folder, tmp_path):
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    unet.save_pretrained(tmp_path / "unet", max_shard_size="200KB")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    state, _, _ = read_unet_folder(tmp_path / "unet")
    assert set(state) == set(unet.state_dict())


def test_vae_scaling_factor_comes_from_config(folder, tmp_path):
    root = _copy(folder, tmp_path)
    path = root / "vae" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "scaling_factor": 0.13025}))
    assert read_vae_folder(root / "vae")[1].scaling_factor == 0.13025


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"time_cond_proj_dim": 256}, "time_cond_proj_dim=256"),  # an LCM UNet
        ({"attention_head_dim": [5, 10, 20, 20]}, "attention_head_dim=[5, 10, 20, 20]"),  # SD2's heads
        ({"use_linear_projection": True}, "use_linear_projection=True"),
        ({"flip_sin_to_cos": False}, "flip_sin_to_cos=False"),
    ],
)
def test_unet_config_the_pack_does_not_build_is_refused(folder, tmp_path, change, expected):
    root = _copy(folder, tmp_path)
    path = root / "unet" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(AA2WeightsError) as error:
        read_unet_folder(root / "unet")
    assert "unet/config.json describes a model the pack does not build" in str(error.value)
    assert expected in str(error.value)


def test_repeated_head_count_list_is_sd15s(folder, tmp_path):
    root = _copy(folder, tmp_path)
    path = root / "unet" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "attention_head_dim": [8, 8, 8, 8]}))
    assert read_unet_folder(root / "unet")[1] == tiny().unet


def test_weights_not_fitting_the_config_are_named(folder, tmp_path):
    root = _copy(folder, tmp_path)
    state, _, _ = read_unet_folder(root / "unet")
    del state["up_blocks.1.attentions.0.proj_out.weight"]
    write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", state)
    pattern = r"(?s)unet does not fit the SD1\.5 UNet.*up_blocks\.1\.attentions\.0\.proj_out"
    with pytest.raises(AA2WeightsError, match=pattern):
        load_unet_folder(root / "unet")


def test_reading_never_opens_a_network_connection(folder, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load_unet_folder(folder / "unet")
    load_vae_folder(folder / "vae")
    assert read_diffusers_folder(folder).image_encoder
