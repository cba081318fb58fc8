"""Spatial blending: an exact identity at initialisation that training can open, the paper's formula
once open, one layer per real decoder attention, and hooked into a real UNet without changing it."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import UNet2DConditionModel

from aa2.config import UNetShape, tiny
from aa2.errors import AA2InputError
from aa2.models.object_guider import ObjectGuider
from aa2.models.spatial_blend import BlendLayer, SpatialBlend, attention_paths, scale_of


@pytest.fixture(scope="module")
def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**tiny().unet.diffusers_config()).eval()


def _opened(channels: int, seed: int = 0) -> BlendLayer:
    torch.manual_seed(seed)
    layer = BlendLayer(channels)
    torch.nn.init.normal_(layer.conv.weight, std=0.3)
    torch.nn.init.normal_(layer.conv.bias)
    layer.gate.data.fill_(1.0)
    return layer


def test_paths_are_exactly_the_real_unets_mid_and_up_attentions(tiny_unet):
    real = [p for p, _ in tiny_unet.named_modules() if re.fullmatch(r"(mid_block|up_blocks\.\d+)\.attentions\.\d+", p)]
    blend = SpatialBlend(tiny().unet, tiny().unet.layers_per_block)
    assert sorted(blend.attention_paths) == sorted(real)
    assert list(blend.layers) == [p.replace(".", "_") for p in blend.attention_paths]
    assert "up_blocks_1_attentions_0" in blend.layers
    for path in real:  # each layer has the width of the attention it follows
        assert blend.layer(path).conv.out_channels == tiny_unet.get_submodule(path).config.in_channels


def test_sd15_has_ten_layers_with_decoder_widths():
    with torch.device("meta"):  # shapes only: SD1.5's 146M blend parameters need no values here
        blend = SpatialBlend(UNetShape())
    widths = {path: blend.layer(path).conv.out_channels for path in attention_paths(UNetShape())}
    assert len(widths) == 10
    assert widths["mid_block.attentions.0"] == widths["up_blocks.1.attentions.2"] == 1280
    assert widths["up_blocks.2.attentions.0"] == 640 and widths["up_blocks.3.attentions.1"] == 320


def test_scale_of_names_the_object_guiders_keys():
    assert [scale_of(p) for p in ("mid_block.attentions.0", "up_blocks.1.attentions.2", "up_blocks.3.attentions.0")] == [
        "mid", "up1", "up3"]
    with pytest.raises(AA2InputError, match="mid or up"):
        scale_of("down_blocks.0.attentions.0")


def test_identity_at_init_bit_for_bit():
    z, z_obj = torch.randn(6, 8, 5, 3), torch.randn(6, 8, 5, 3) * 10
    assert torch.equal(BlendLayer(8)(z, z_obj), z)


def test_open_gate_is_the_papers_formula():
    layer = _opened(8)
    z, z_obj = torch.randn(4, 8, 5, 5), torch.randn(4, 8, 5, 5)
    a = torch.sigmoid(layer.conv(torch.cat([z, z_obj], dim=1)))
    # z + a (z_obj - z) and a z_obj + (1 - a) z differ by float32 rounding only
    torch.testing.assert_close(layer(z, z_obj), a * z_obj + (1 - a) * z, rtol=1e-6, atol=1e-6)
    assert 0.05 < a.std() and a.min() < 0.4 and a.max() > 0.6  # a real per-pixel mix, not a constant 0.5


def test_gradient_reaches_the_gate_at_init():
    layer = BlendLayer(8)
    z, z_obj = torch.randn(4, 8, 5, 5), torch.randn(4, 8, 5, 5)
    (layer(z, z_obj) * torch.randn(4, 8, 5, 5)).sum().backward()
    assert layer.gate.grad is not None and layer.gate.grad.abs() > 1e-3
    assert not layer.conv.weight.grad.any()  # the conv learns once the gate has opened


def test_per_clip_objects_are_repeated_over_that_clips_frames():
    layer = _opened(8)
    z, z_obj = torch.randn(2 * 3, 8, 4, 4), torch.randn(2, 8, 4, 4)  # rows ordered (batch, frame)
    expected = layer(z, z_obj.repeat_interleave(3, dim=0))
    assert torch.equal(layer(z, z_obj), expected)
    assert not torch.equal(layer(z, z_obj.repeat(3, 1, 1, 1)), expected)  # (frame, batch) order would differ


@pytest.mark.parametrize(
    ("z_shape", "obj_shape", "message"),
    [
        ((6, 4, 4, 4), (6, 4, 4, 4), r"\[N, 8, h, w\]"),
        ((6, 8, 4, 4), (6, 8, 4, 5), "do not match"),
        ((6, 8, 4, 4), (6, 4, 4, 4), "do not match"),
        ((6, 8, 4, 4), (4, 8, 4, 4), "rows"),
        ((6, 8, 4, 4), (8, 4, 4), "do not match"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(z_shape, obj_shape, message):
    with pytest.raises(AA2InputError, match=message):
        BlendLayer(8)(torch.randn(z_shape), torch.randn(obj_shape))


def test_unknown_path_is_refused():
    with pytest.raises(AA2InputError, match="no blend layer"):
        SpatialBlend(tiny().unet).layer("up_blocks.0.attentions.0")


def test_hooked_into_a_real_unet_it_changes_nothing_until_gates_open(tiny_unet):
    torch.manual_seed(0)
    shape = tiny().unet
    guider, blend = ObjectGuider(shape), SpatialBlend(shape)
    latents = torch.randn(2 * 2, 4, 9, 7)  # batch 2 x 2 frames, rows (batch, frame), odd size
    context = torch.randn(4, 3, 32)
    with torch.no_grad():
        objects = guider(torch.randn(2, 4, 9, 7))  # one object image per clip
        plain = tiny_unet(latents, 10, encoder_hidden_states=context).sample

        def hook_for(path: str):
            def hook(module, args, output):
                z = blend(path, output[0], objects[blend.scale_of(path)])
                return (z, *output[1:])
            return hook

        handles = [tiny_unet.get_submodule(p).register_forward_hook(hook_for(p)) for p in blend.attention_paths]
        try:
            hooked = tiny_unet(latents, 10, encoder_hidden_states=context, return_dict=False)[0]
            for layer in blend.layers.values():
                layer.gate.fill_(1.0)
                torch.nn.init.normal_(layer.conv.weight, std=0.1)
            opened = tiny_unet(latents, 10, encoder_hidden_states=context, return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
    assert torch.equal(hooked, plain)
    assert (opened - plain).abs().max() > 1e-3
