"""AnimateDiff motion modules: written in the released layout, read back, and checked against diffusers.

Fixtures are tiny `MotionAdapter`s with SD1.5's structure (four levels, two layers each) in three
variants — v2-like (mid block, 32 positions), v1-like (no mid block, 24) and v3-like (no mid block,
32) — with random weights, so a swapped or dropped tensor changes the output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from aa2.config import MotionShape, UNetShape, tiny
from aa2.errors import AA2WeightsError
from aa2.weights.animatediff import (
    load_motion_adapter,
    motion_block_channels,
    motion_module_to_original,
    read_motion_module,
    write_motion_module,
)
from aa2.weights.files import write_safetensors

SENTINEL = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
TINY_UNET = tiny().unet
VARIANTS = {
    "v2": MotionShape(max_seq_length=32, use_mid_block=True),
    "v1": MotionShape(max_seq_length=24, use_mid_block=False),
    "v3": MotionShape(max_seq_length=32, use_mid_block=False),
}
FRAMES = 4


def _random_adapter(shape: MotionShape, seed: int) -> MotionAdapter:
    # MotionAdapter zero-initialises proj_out, which would make every motion module an identity:
    # random weights make the comparisons below able to fail.
    torch.manual_seed(seed)
    adapter = MotionAdapter(**shape.adapter_config(TINY_UNET))
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.normal_(0.0, 0.2)
    return adapter.eval()


@pytest.fixture(scope="session")
def adapters() -> dict[str, MotionAdapter]:
    return {name: _random_adapter(shape, seed) for seed, (name, shape) in enumerate(VARIANTS.items())}


@pytest.fixture(scope="session")
def files(adapters, tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("animatediff_models")
    return {
        (name, suffix): write_motion_module(folder / f"mm_tiny_{name}{suffix}", adapter)
        for name, adapter in adapters.items()
        for suffix in (".ckpt", ".safetensors")
    }


@pytest.fixture(scope="session")
def base_unet() -> UNet2DConditionModel:
    torch.manual_seed(100)
    return UNet2DConditionModel(**TINY_UNET.diffusers_config()).eval()


def _original(files, name: str = "v2") -> dict[str, torch.Tensor]:
    return torch.load(files[(name, ".ckpt")], weights_only=True)


def _save(path: Path, content) -> Path:
    torch.save(content, path)
    return path


def _motion_unet_output(base: UNet2DConditionModel, adapter: MotionAdapter) -> torch.Tensor:
    unet = UNetMotionModel.from_unet2d(base, adapter).eval()
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(1, 4, FRAMES, 8, 8, generator=generator)  # [B, C, F, H, W]
    context = torch.randn(1, 3, TINY_UNET.cross_attention_dim, generator=generator)
    context = context.repeat_interleave(FRAMES, dim=0)  # one row per frame: [B*F, tokens, dim]
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


# ---------------------------------------------------------------- the written layout


def test_written_file_uses_animatediff_original_key_names(files, adapters):
    original = _original(files)
    assert SENTINEL in original
    assert all(".temporal_transformer." in key for key in original)
    assert not any(part in key for key in original for part in (".attn1.", ".norm1.", ".pos_embed."))
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.ff_norm.weight" in original
    # AnimateDiff keeps a positional table per attention: two per transformer block
    blocks = sum(key.endswith(".pos_embed.pe") for key in adapters["v2"].state_dict())
    assert sum(key.endswith(".pos_encoder.pe") for key in original) == 2 * blocks
    assert original[SENTINEL].shape == (1, 32, TINY_UNET.block_out_channels[0])


def test_released_ckpt_layout_is_a_bare_dict_of_tensors(files):
    loaded = torch.load(files[("v1", ".ckpt")], weights_only=True)
    assert type(loaded) is dict and all(isinstance(v, torch.Tensor) for v in loaded.values())


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_read_infers_shape_and_returns_identical_tensors(files, adapters, name, suffix):
    shape, state = read_motion_module(files[(name, suffix)], TINY_UNET)
    assert shape == VARIANTS[name]
    assert motion_block_channels(state) == TINY_UNET.block_out_channels
    expected = adapters[name].state_dict()
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_round_trip_through_original_layout_is_exact(files, adapters):
    _, state = read_motion_module(files[("v3", ".safetensors")])
    again = motion_module_to_original(state)
    original = _original(files, "v3")
    assert set(again) == set(original)
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_state_dict_wrapper_and_module_prefix_are_removed(files, adapters, tmp_path):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in _original(files).items()}}
    _, state = read_motion_module(_save(tmp_path / "wrapped.ckpt", wrapped))
    expected = adapters["v2"].state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)


def test_diffusers_layout_adapter_file_is_read_as_is(adapters, tmp_path):
    adapters["v1"].save_pretrained(tmp_path / "adapter")
    shape, state = read_motion_module(tmp_path / "adapter" / "diffusion_pytorch_model.safetensors")
    assert shape == VARIANTS["v1"]
    assert all(torch.equal(state[k], v) for k, v in adapters["v1"].state_dict().items())


def test_motion_unet_weights_write_the_same_file_as_the_adapter(adapters, base_unet):
    # moore.py writes a UNetMotionModel's motion layers: same names below `.motion_modules.`
    unet = UNetMotionModel.from_unet2d(base_unet, adapters["v2"])
    from_unet = motion_module_to_original(unet, VARIANTS["v2"])
    from_adapter = motion_module_to_original(adapters["v2"])
    assert set(from_unet) == set(from_adapter)
    assert all(torch.equal(from_unet[k], from_adapter[k]) for k in from_adapter)


# ---------------------------------------------------------------- against diffusers' own loader


@pytest.mark.parametrize("name", ["v2", "v1"])
def test_matches_diffusers_from_single_file_offline(files, adapters, base_unet, name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub request would fail instead of passing silently
    config_dir = tmp_path / "config"
    adapters[name].save_config(config_dir)  # config.json only: the local config from_single_file needs
    path = files[(name, ".safetensors")]
    theirs = MotionAdapter.from_single_file(str(path), config=str(config_dir)).eval()
    ours = load_motion_adapter(path, TINY_UNET)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert set(theirs_state) == set(ours_state)
    for key in ours_state:
        assert torch.equal(theirs_state[key], ours_state[key]), key
    assert not any(t.is_meta for t in ours_state.values())
    # Bit-identical weights through the same CPU kernels give the same numbers, so the tolerance is
    # zero; the last check shows the motion modules do change the output.
    out_ours = _motion_unet_output(base_unet, ours)
    out_theirs = _motion_unet_output(base_unet, theirs)
    torch.testing.assert_close(out_ours, out_theirs, rtol=0, atol=0)
    out_other = _motion_unet_output(base_unet, _random_adapter(VARIANTS[name], seed=99))
    assert not torch.allclose(out_ours, out_other, atol=1e-3)


def test_loaded_adapter_has_the_files_positional_table(files, tmp_path):
    # diffusers' converter drops pos_encoder.pe and recomputes it; we keep what the file holds
    original = _original(files, "v1")
    table = torch.randn_like(original[SENTINEL])
    for key in original:
        if key.startswith("down_blocks.0.motion_modules.0.") and key.endswith("pos_encoder.pe"):
            original[key] = table
    adapter = load_motion_adapter(_save(tmp_path / "pe.ckpt", original), TINY_UNET)
    assert torch.equal(adapter.down_blocks[0].motion_modules[0].transformer_blocks[0].pos_embed.pe, table)


# ---------------------------------------------------------------- refusing other files


def _sparse_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    # a zero-stride view saves one element however large its shape: realistic key sets, tiny files
    return torch.zeros(1, dtype=torch.float16).expand(shape)


def test_sdxl_motion_module_is_refused(tmp_path):
    with torch.device("meta"):
        sdxl = MotionAdapter(block_out_channels=(320, 640, 1280), motion_max_seq_length=32, use_motion_mid_block=False)
    state = {k: _sparse_tensor(tuple(v.shape)) for k, v in sdxl.state_dict().items()}
    path = _save(tmp_path / "mm_sdxl_v10_beta.ckpt", motion_module_to_original(state))
    assert path.stat().st_size < 2_000_000
    with pytest.raises(AA2WeightsError, match=r"mm_sdxl_v10_beta\.ckpt is an SDXL AnimateDiff motion module"):
        load_motion_adapter(path, TINY_UNET)


def test_hotshot_xl_temporal_layers_are_refused(tmp_path):
    prefix = "down_blocks.0.temporal_attentions.0.transformer_blocks.0.attention_blocks.0."
    state = {prefix + "to_q.weight": torch.zeros(4, 4), prefix + "pos_encoder.pe": torch.zeros(1, 24, 4)}
    path = write_safetensors(tmp_path / "hsxl_temporal_layers.safetensors", state)
    with pytest.raises(AA2WeightsError, match=r"hsxl_temporal_layers.*HotShot-XL"):
        read_motion_module(path)


def test_sd_checkpoint_is_refused(tmp_path):
    state = {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                            "first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}}
    path = _save(tmp_path / "v1-5-pruned.ckpt", state)
    expected = r"v1-5-pruned\.ckpt is not an AnimateDiff motion module.*Stable Diffusion checkpoint"
    with pytest.raises(AA2WeightsError, match=expected):
        load_motion_adapter(path, TINY_UNET)


def test_motion_lora_is_refused(tmp_path):
    block = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0."
    state = {block + "processor.to_q_lora.down.weight": torch.zeros(4, 32),
             block + "processor.to_q_lora.up.weight": torch.zeros(32, 4)}
    path = _save(tmp_path / "v2_lora_ZoomIn.ckpt", state)
    with pytest.raises(AA2WeightsError, match=r"v2_lora_ZoomIn\.ckpt is a motion LoRA.*not a motion module"):
        read_motion_module(path)


def test_spatial_lora_is_refused(tmp_path):
    state = {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32)}
    path = _save(tmp_path / "v3_sd15_adapter.ckpt", state)
    with pytest.raises(AA2WeightsError, match=r"v3_sd15_adapter\.ckpt is a LoRA.*on top of a checkpoint"):
        read_motion_module(path)


def test_sparsectrl_is_refused(files, tmp_path):
    state = {**_original(files, "v3"), "controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 4, 3, 3)}
    path = _save(tmp_path / "v3_sd15_sparsectrl_rgb.ckpt", state)
    with pytest.raises(AA2WeightsError, match=r"sparsectrl_rgb\.ckpt is an AnimateDiff SparseCtrl model"):
        read_motion_module(path)


def test_motion_modules_merged_with_other_weights_are_refused(files, tmp_path):
    state = {**_original(files, "v3"), "conv_in.weight": torch.zeros(32, 4, 3, 3)}
    path = _save(tmp_path / "merged.ckpt", state)
    expected = r"merged\.ckpt holds motion modules and 1 other weights.*conv_in\.weight"
    with pytest.raises(AA2WeightsError, match=expected):
        read_motion_module(path)


# ---------------------------------------------------------------- not fitting the UNet


def test_channel_mismatch_with_the_unet_is_refused(files):
    path = files[("v2", ".ckpt")]
    with pytest.raises(AA2WeightsError, match=r"mm_tiny_v2\.ckpt is a motion module for a UNet with block widths "
                                              r"\(32, 32, 64, 64\), but the UNet here has \(320, 640, 1280, 1280\)"):
        load_motion_adapter(path, UNetShape())


def test_layer_count_mismatch_with_the_unet_is_refused(files):
    unet = dataclasses.replace(TINY_UNET, layers_per_block=1)
    with pytest.raises(AA2WeightsError, match=r"has 2 motion modules per down block, but the UNet has 1"):
        load_motion_adapter(files[("v3", ".ckpt")], unet)


def test_missing_keys_are_named(files, tmp_path):
    state = _original(files, "v3")
    del state["up_blocks.1.motion_modules.2.temporal_transformer.transformer_blocks.0.ff_norm.weight"]
    path = _save(tmp_path / "missing.ckpt", state)
    with pytest.raises(AA2WeightsError, match=r"missing\.ckpt does not fit the AnimateDiff motion module:\n"
                                              r"  1 missing keys, e.g. \['up_blocks\.1\.motion_modules\.2\."
                                              r"transformer_blocks\.0\.norm3\.weight'\]"):
        load_motion_adapter(path, TINY_UNET)


def test_unexpected_keys_are_named(files, tmp_path):
    state = _original(files, "v3")
    state["down_blocks.0.motion_modules.0.temporal_transformer.extra_proj.weight"] = torch.zeros(32, 32)
    path = _save(tmp_path / "unexpected.ckpt", state)
    with pytest.raises(AA2WeightsError, match=r"unexpected\.ckpt does not fit.*\n  1 unexpected keys, e.g. "
                                              r"\['down_blocks\.0\.motion_modules\.0\.extra_proj\.weight'\]"):
        load_motion_adapter(path, TINY_UNET)


def test_unequal_positional_tables_in_one_block_are_refused(files, tmp_path):
    state = _original(files, "v2")
    key = SENTINEL.replace("attention_blocks.0", "attention_blocks.1")
    state[key] = state[key] + 1
    path = _save(tmp_path / "unequal_pe.ckpt", state)
    expected = r"unequal_pe\.ckpt: the two attentions of .* different positional tables"
    with pytest.raises(AA2WeightsError, match=expected):
        read_motion_module(path)


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_truncated_file_is_reported(files, tmp_path, suffix):
    data = files[("v1", suffix)].read_bytes()
    path = tmp_path / f"mm_sd_v15{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AA2WeightsError, match=rf"mm_sd_v15\{suffix} \(.* bytes\) cannot be read; it looks truncated"):
        load_motion_adapter(path, TINY_UNET)
