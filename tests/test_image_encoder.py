"""CLIP preprocessing of the reference: both named crops against transformers' own PIL processor."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from aa2.errors import AA2InputError
from aa2.models.image_encoder import clip_preprocess
from aa2.pipeline.inputs import SamplingSettings
from aa2.pipeline.reference import encode_reference

SIZES = [(64, 64), (64, 48), (48, 64)]  # square, portrait, landscape (H, W)


def _reference(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth RGB image `[3, H, W]` on uint8 levels, as ComfyUI's LoadImage gives."""
    coarse = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    image = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    return (image * 255).round() / 255


def _uint8(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())


def _processor(size: int):
    transformers = pytest.importorskip("transformers")
    # transformers >= 5 picks a torchvision backend for CLIPImageProcessor when it can; the PIL one is
    # what Moore-AnimateAnyone ran (transformers 4.30), and what 4.x's CLIPImageProcessor is.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


# Both sides resize the same uint8 pixels with PIL and normalise in float32: equal but for float32
# rounding of the last operation, so 1e-6 (a few ulp at CLIP's normalised range of about ±2.2).
TOLERANCE = dict(rtol=0, atol=1e-6)


@pytest.mark.parametrize("height,width", SIZES)
def test_center_crop_equals_clip_image_processor(height, width):
    image = _reference(height, width)
    expected = _processor(32)(images=_uint8(image), return_tensors="pt").pixel_values
    torch.testing.assert_close(clip_preprocess(image[None], 32, "center"), expected, **TOLERANCE)


@pytest.mark.parametrize("height,width", SIZES)
def test_default_squash_equals_moore_pipelines_preprocessing(height, width):
    # Moore's Pose2VideoPipeline: CLIPImageProcessor on ref_image.resize((224, 224)), PIL's bicubic default.
    image = _reference(height, width, seed=1)
    squashed = _uint8(image).resize((32, 32), Image.Resampling.BICUBIC)
    expected = _processor(32)(images=squashed, return_tensors="pt").pixel_values
    torch.testing.assert_close(clip_preprocess(image[None], 32), expected, **TOLERANCE)


def test_squash_keeps_a_portraits_head_and_center_crops_it_away():
    image = torch.full((3, 64, 32), 0.5)
    image[:, :8] = 1.0  # a white band on top: the head of a full-body character
    top_row = lambda crop: clip_preprocess(image[None], 16, crop)[0, :, 0]  # noqa: E731
    assert top_row("squash").mean() > top_row("center").mean() + 1.0  # white vs grey, in CLIP's units
    np.testing.assert_allclose(top_row("center").numpy(), clip_preprocess(image[None], 16, "center")[0, :, 8].numpy())


def test_unknown_clip_crop_names_the_choices():
    with pytest.raises(AA2InputError, match="squash, center"):
        clip_preprocess(torch.zeros(1, 3, 8, 8), 8, "pad")
    with pytest.raises(AA2InputError, match="squash, center"):
        SamplingSettings(clip_crop="pad").validate(16, 32)


def test_clip_crop_reaches_the_reference_context(tiny_model):
    portrait = _reference(128, 64, seed=2)
    squash = encode_reference(tiny_model, portrait, (128, 64))
    center = encode_reference(tiny_model, portrait, (128, 64), clip_crop="center")
    assert not torch.allclose(squash.context, center.context)
    torch.testing.assert_close(squash.latents, center.latents)  # the crop is CLIP's alone, not the VAE's


@pytest.mark.parametrize("source", [(96, 80), (200, 150)])
def test_reference_net_input_is_resized_as_moores_vae_image_processor_does(source):
    """Moore-AnimateAnyone resizes its PIL reference for the ReferenceNet with diffusers'
    `VaeImageProcessor` (PIL Lanczos); ours must give the same pixels, and leave a reference already
    at the output size untouched (not even quantised)."""
    from diffusers.image_processor import VaeImageProcessor

    from aa2.pipeline.reference import reference_pixels

    image = (torch.rand(3, *source, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    pil = Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())
    theirs = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True).preprocess(pil, height=128, width=64)[0]
    assert torch.equal(reference_pixels(image, (128, 64)) * 2 - 1, theirs)
    unquantised = torch.rand(3, 64, 64)
    assert torch.equal(reference_pixels(unquantised, (64, 64)), unquantised)
