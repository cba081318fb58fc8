"""Where the object guider's features enter the DenoisingNet: spatial blending (the paper) or, for
the paper's "w/o spatial blending" ablation, added to conv_in's output (`object_injection="conv_in"`)."""

from __future__ import annotations

import pytest
import torch

from aa2.config import tiny
from aa2.errors import AA2InputError
from aa2.models.aa2_model import assemble
from aa2.models.denoising_net import DenoisingConditions
from aa2.models.object_guider import ObjectGuider
from aa2.weights.tiny import random_parts

MERGED = tiny().replace(object_injection="conv_in")


def test_finest_only_guider_builds_and_returns_the_full_resolution_scale_alone():
    torch.manual_seed(0)
    full = ObjectGuider(tiny().unet)
    finest = ObjectGuider(tiny().unet, finest_only=True)
    latents = torch.randn(3, 4, 9, 7)
    features = finest(latents)
    assert list(features) == [finest.finest] == [list(full(latents))[-1]]
    assert features[finest.finest].shape == full(latents)[finest.finest].shape
    assert len(finest.blocks) == 1 and list(finest.proj_out) == [finest.finest]  # no unread levels to train
    assert not features[finest.finest].any()  # zero projection: an identity until trained


def _denoise(model, objects: torch.Tensor | None) -> torch.Tensor:
    torch.manual_seed(1)
    latents = torch.randn(1, 4, 2, 8, 8)
    context = torch.randn(1, 1, model.config.unet.cross_attention_dim)
    environment = torch.randn(1, 5, 2, 8, 8)
    features = None if objects is None else model.denoising_net.encode_objects(objects)
    with torch.no_grad():
        return model.denoising_net(latents, 500, context, DenoisingConditions(environment=environment,
                                                                             object_features=features))


def test_merged_objects_change_the_output_through_conv_in_without_any_blending():
    model = assemble(MERGED, random_parts(MERGED, seed=0))
    net = model.denoising_net
    assert net.spatial_blend is None and len(net.object_guider.scales) == 1
    objects = torch.randn(1, 4, 2, 8, 8)
    without, merged = _denoise(model, None), _denoise(model, objects)
    assert (merged - without).abs().max() > 1e-3  # the (perturbed) guider speaks
    # and exactly as its features added to conv_in's output: zero them and nothing changes
    torch.nn.init.zeros_(net.object_guider.proj_out[net.object_guider.finest].weight)
    torch.nn.init.zeros_(net.object_guider.proj_out[net.object_guider.finest].bias)
    assert torch.equal(_denoise(model, objects), without)


def test_a_fresh_merged_model_is_unchanged_by_objects_and_the_default_still_blends():
    fresh = assemble(MERGED, random_parts(MERGED, seed=0, perturb=False))
    objects = torch.randn(1, 4, 2, 8, 8)
    assert torch.equal(_denoise(fresh, objects), _denoise(fresh, None))
    blended = assemble(tiny(), random_parts(tiny(), seed=0))
    assert blended.denoising_net.spatial_blend is not None and len(blended.denoising_net.object_guider.scales) == 4


def test_unknown_injection_is_refused_by_name():
    config = tiny().replace(object_injection="sum")
    with pytest.raises(AA2InputError, match="object_injection is one of blend, conv_in; got 'sum'"):
        assemble(config, random_parts(tiny(), seed=0))
