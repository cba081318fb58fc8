"""Object guider: one feature map per decoder spatial attention, with that attention's channels and
size, checked against a real (tiny) diffusers UNet, odd latent sizes included."""

from __future__ import annotations

import math
import re

import pytest
import torch
from diffusers import UNet2DConditionModel

from aa2.config import UNetShape, tiny
from aa2.errors import AA2InputError
from aa2.models.object_guider import ObjectGuider, ObjectScale, decoder_scales


@pytest.fixture(scope="module")
def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**tiny().unet.diffusers_config()).eval()


def decoder_attention_shapes(unet: UNet2DConditionModel, latents: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Run the UNet once; the output shape of every spatial attention in the mid and up blocks."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for path, module in unet.named_modules():
        if re.fullmatch(r"(mid_block|up_blocks\.\d+)\.attentions\.\d+", path):
            def hook(module, args, output, path=path):
                shapes[path] = tuple((output[0] if isinstance(output, tuple) else output.sample).shape)
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            unet(latents, 0, encoder_hidden_states=torch.zeros(latents.shape[0], 2, unet.config.cross_attention_dim))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_sd15_scales_are_the_decoders_attention_scales():
    assert decoder_scales(UNetShape()) == {
        "mid": ObjectScale(1280, 8), "up1": ObjectScale(1280, 4), "up2": ObjectScale(640, 2), "up3": ObjectScale(320, 1),
    }


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (13, 6)])
def test_tiny_outputs_match_a_real_unets_decoder_attentions(tiny_unet, size):
    latents = torch.randn(2, 4, *size)
    unet_shapes = decoder_attention_shapes(tiny_unet, latents)
    assert len(unet_shapes) == 1 + 3 * 3  # mid + three attention up blocks of three layers
    torch.manual_seed(0)
    features = ObjectGuider(tiny().unet)(latents)
    assert list(features) == ["mid", "up1", "up2", "up3"]  # decoder order
    for path, shape in unet_shapes.items():
        scale = "mid" if path.startswith("mid") else f"up{path.split('.')[1]}"
        assert tuple(features[scale].shape) == shape, path


def test_sd15_channel_outputs_have_decoder_shapes_for_odd_sizes():
    torch.manual_seed(0)
    guider = ObjectGuider(UNetShape())
    with torch.no_grad():
        features = guider(torch.randn(1, 4, 11, 6))
    for name, scale in guider.scales.items():
        # SD's stride-2, padding-1 downsamplers round up: 11 -> 6 -> 3 -> 2
        h, w = 11, 6
        for _ in range(int(math.log2(scale.downsample))):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert tuple(features[name].shape) == (1, scale.channels, h, w), name


def test_features_depend_on_the_object_and_stay_per_row():
    torch.manual_seed(0)
    guider = ObjectGuider(tiny().unet)
    latents = torch.randn(3, 4, 8, 8)
    moved = latents.clone()
    moved[1] = torch.randn(4, 8, 8)
    a, b = guider(latents), guider(moved)
    for name in guider.scales:
        assert (a[name][1] - b[name][1]).abs().max() > 1e-4, name  # the object reaches every scale
        assert torch.equal(a[name][[0, 2]], b[name][[0, 2]]), name  # rows never mix


@pytest.mark.parametrize("shape", [(1, 4, 2, 8, 8), (1, 3, 8, 8), (4, 8, 8)])
def test_bad_latents_are_refused_with_a_message(shape):
    with pytest.raises(AA2InputError, match=r"\[N, 4, h, w\]"):
        ObjectGuider(tiny().unet)(torch.randn(shape))
