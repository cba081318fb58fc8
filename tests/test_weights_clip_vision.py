"""The CLIP image encoder from an `image_encoder/` folder or a ComfyUI clip_vision file, offline.

Tiny transformers models are saved by transformers itself (`save_pretrained`) and in ComfyUI's
single-file layouts; transformers' own `from_pretrained(local_files_only=True)` is the reference.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from aa2.config import ImageEncoderShape, tiny
from aa2.errors import AA2WeightsError
from aa2.weights.clip_vision import (
    image_encoder_from_state,
    load_clip_vision,
    read_clip_vision,
    read_clip_vision_file,
    read_clip_vision_folder,
    to_transformers_layout,
    transformers_to_open_clip,
    write_clip_vision_file,
)
from aa2.weights.files import write_safetensors

SHAPE = tiny().image_encoder
WIDTH = SHAPE.projection_dim  # the tiny UNet's cross-attention width
HEADS = SHAPE.num_attention_heads  # the tiny model keeps CLIP's 64-wide heads; passing it explicitly is harmless
# Same tensors, same ops; file-backed tensors may change CPU summation order (see test_weights_ldm).
ATOL = RTOL = 1e-5


def _model(shape: ImageEncoderShape = SHAPE) -> CLIPVisionModelWithProjection:
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**shape.transformers_config())).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="session")
def model() -> CLIPVisionModelWithProjection:
    return _model()


@pytest.fixture(scope="session")
def folder(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("sd-image-variations") / "image_encoder"
    model.save_pretrained(path)
    return path


def _embeds(model: CLIPVisionModelWithProjection) -> torch.Tensor:
    pixels = torch.randn(2, 3, SHAPE.image_size, SHAPE.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(pixel_values=pixels).image_embeds


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_folder_matches_transformers_from_pretrained(folder):
    ours = load_clip_vision(folder, WIDTH)
    theirs = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
    torch.testing.assert_close(_embeds(ours), _embeds(theirs), atol=ATOL, rtol=RTOL)
    _, shape = read_clip_vision_folder(folder, WIDTH)
    assert shape == SHAPE  # head count from config.json, everything else from shapes


def test_comfyui_single_file_reads_to_the_original(tmp_path, model):
    path = write_clip_vision_file(tmp_path / "clip_vision_tiny.safetensors", model.state_dict())
    state, shape = read_clip_vision_file(path, WIDTH, attention_heads=HEADS)
    _identical(state, model.state_dict())
    assert shape == SHAPE
    torch.testing.assert_close(_embeds(image_encoder_from_state(state, shape, str(path))), _embeds(model),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("prefix", ["clip_vision.", "conditioner.embedders.0.", "image_encoder."])
def test_any_simple_prefix_and_a_text_tower_beside_it_are_accepted(tmp_path, model, prefix):
    extra = {"text_model.embeddings.token_embedding.weight": torch.zeros(5, 4), "logit_scale": torch.tensor(1.0),
             "text_projection.weight": torch.zeros(4, 4),
             "vision_model.embeddings.position_ids": torch.arange(17)[None]}  # as older transformers saved it
    path = write_safetensors(tmp_path / "clip.safetensors",
                             {prefix + k: v for k, v in {**model.state_dict(), **extra}.items()})
    state, _ = read_clip_vision_file(path, WIDTH, attention_heads=HEADS)
    _identical(state, model.state_dict())


def test_open_clip_layout_converts_like_comfyui(tmp_path, model):
    open_clip = transformers_to_open_clip(model.state_dict())
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in open_clip and "visual.proj" in open_clip
    assert open_clip["visual.proj"].shape == (SHAPE.hidden_size, WIDTH)  # OpenCLIP stores x @ proj
    path = write_clip_vision_file(tmp_path / "open_clip.safetensors", model.state_dict(), layout="open_clip",
                                  prefix="embedder.model.")  # e.g. SD unCLIP's prefix
    state, shape = read_clip_vision_file(path, WIDTH, attention_heads=HEADS)
    _identical(state, model.state_dict())


def test_open_clip_parts_transformers_lacks_are_refused(tmp_path, model):
    open_clip = transformers_to_open_clip(model.state_dict())
    open_clip["visual.attn_pool.query"] = torch.zeros(4, SHAPE.hidden_size)
    path = write_safetensors(tmp_path / "coca.safetensors", open_clip)
    with pytest.raises(AA2WeightsError, match=r"OpenCLIP vision model with parts .*visual\.attn_pool\.query"):
        read_clip_vision_file(path, WIDTH, attention_heads=HEADS)


def test_vit_h_is_refused_by_name_because_its_projection_is_1024(tmp_path):
    vit_h = ImageEncoderShape(hidden_size=1280, intermediate_size=64, num_hidden_layers=1, num_attention_heads=20,
                              patch_size=8, image_size=16, projection_dim=1024)
    path = write_clip_vision_file(tmp_path / "CLIP-ViT-H-14.safetensors", _model(vit_h).state_dict())
    with pytest.raises(AA2WeightsError) as error:
        read_clip_vision_file(path)
    message = str(error.value)
    assert "CLIP-ViT-H-14.safetensors is CLIP ViT-H/14" in message
    assert "1024 wide; the UNet's cross-attention takes 768" in message and "ViT-L/14" in message


def test_projection_must_equal_the_unets_cross_attention_width(tmp_path, model):
    path = write_clip_vision_file(tmp_path / "clip.safetensors", model.state_dict())
    with pytest.raises(AA2WeightsError, match="32 wide; the UNet's cross-attention takes 768"):
        read_clip_vision_file(path, 768, attention_heads=HEADS)


def test_vit_l_head_count_follows_from_its_width():
    vit_l = ImageEncoderShape()
    with torch.device("meta"):
        state = CLIPVisionModelWithProjection(CLIPVisionConfig(**vit_l.transformers_config())).state_dict()
    state = to_transformers_layout(state, "meta")
    from aa2.weights.clip_vision import infer_image_encoder_shape

    assert infer_image_encoder_shape(state, "meta", 768) == vit_l


def test_unknowable_head_count_is_asked_for(tmp_path):
    odd = ImageEncoderShape(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                            patch_size=8, image_size=32, projection_dim=WIDTH)  # 32 wide: not CLIP's 64-wide heads
    path = write_clip_vision_file(tmp_path / "clip.safetensors", _model(odd).state_dict())
    with pytest.raises(AA2WeightsError, match="pass attention_heads"):
        read_clip_vision_file(path, WIDTH)


def test_tower_without_projection_is_refused(tmp_path, model):
    state = {k: v for k, v in model.state_dict().items() if k != "visual_projection.weight"}
    path = write_safetensors(tmp_path / "no_proj.safetensors", state)
    with pytest.raises(AA2WeightsError, match="without its projection"):
        read_clip_vision_file(path, WIDTH, attention_heads=HEADS)
    bare = write_safetensors(tmp_path / "bare.safetensors",
                             {k.removeprefix("vision_model."): v for k, v in state.items()})  # transformers 5 layout
    with pytest.raises(AA2WeightsError, match="without its projection"):
        read_clip_vision_file(bare, WIDTH, attention_heads=HEADS)


def test_not_clip_says_what_it_looks_like(tmp_path):
    path = write_safetensors(tmp_path / "vae.safetensors", {"encoder.down.0.block.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(AA2WeightsError, match=r"vae\.safetensors is not a CLIP vision model: it looks like a VAE"):
        read_clip_vision(path)


def test_strict_load_names_a_missing_layer_key(tmp_path, model):
    state = dict(model.state_dict())
    del state["vision_model.encoder.layers.1.mlp.fc2.bias"]
    path = write_safetensors(tmp_path / "broken.safetensors", state)
    with pytest.raises(AA2WeightsError, match=r"(?s)broken\.safetensors does not fit .*layers\.1\.mlp\.fc2\.bias"):
        load_clip_vision(path, WIDTH, attention_heads=HEADS)


def test_folder_missing_files_are_listed(tmp_path):
    empty = tmp_path / "image_encoder"
    empty.mkdir()
    with pytest.raises(AA2WeightsError, match="config.json and model.safetensors"):
        read_clip_vision_folder(empty, WIDTH)


def test_folder_with_another_activation_is_refused(tmp_path, model):
    model.save_pretrained(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    (tmp_path / "enc" / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(AA2WeightsError, match="hidden_act='gelu'"):
        read_clip_vision_folder(tmp_path / "enc", WIDTH)


def test_folder_with_pytorch_model_bin_reads_too(tmp_path, model):
    (tmp_path / "enc").mkdir()
    model.config.to_json_file(tmp_path / "enc" / "config.json")
    torch.save(model.state_dict(), tmp_path / "enc" / "pytorch_model.bin")
    state, _ = read_clip_vision_folder(tmp_path / "enc", WIDTH)
    _identical(state, model.state_dict())
