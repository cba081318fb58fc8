"""Reference attention: the math, the pairing by path, attach/detach, and what is never computed."""

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from aa2.config import tiny
from aa2.errors import AA2InputError
from aa2.models.reference_attention import ReferenceAttention, ReferenceReader, spatial_self_attention_paths

# Float32 attention computed in a different association order (cached reference K/V vs. one
# projection of the concatenation) agrees to ~1e-7; 1e-5 leaves room without hiding a wrong formula.
ATOL = 1e-5


def _tiny_unet(seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**tiny().unet.diffusers_config()).eval()


class ConcatProcessor:
    """Moore-AnimateAnyone's formula, written independently: self-attention whose keys/values are
    the concatenation of the frame's tokens and the reference tokens repeated per frame."""

    def __init__(self, reference: torch.Tensor):
        self.reference = reference

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        per_ref = hidden_states.shape[0] // self.reference.shape[0]
        ref = self.reference.repeat_interleave(per_ref, dim=0)
        return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states=torch.cat([hidden_states, ref], 1))


def test_reader_equals_attention_over_concatenated_tokens():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=8, dim_head=4).eval()
    frames, reference = torch.randn(6, 10, 32), torch.randn(2, 7, 32)  # 2 references x 3 frames
    reader = ReferenceReader(AttnProcessor2_0())
    reader.bind(reference)
    attn.set_processor(reader)
    with torch.no_grad():
        ours = attn(frames)
        attn.set_processor(ConcatProcessor(reference))
        expected = attn(frames)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
    # and the reference really matters: a different one changes the output
    attn.set_processor(reader)
    reader.bind(torch.randn(2, 7, 32))
    with torch.no_grad():
        assert not torch.allclose(attn(frames), ours, atol=1e-3)


def test_unbound_reader_is_the_plain_attention_bit_for_bit():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=8, dim_head=4).eval()
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        plain = attn(x)
        attn.set_processor(ReferenceReader(attn.processor))
        assert torch.equal(attn(x), plain)


def test_aa2_fusion_uses_mid_and_up_blocks_only_and_full_uses_all():
    unet = _tiny_unet(0)
    aa2 = spatial_self_attention_paths(unet, "aa2")
    full = spatial_self_attention_paths(unet, "full")
    assert aa2 and all(p.startswith(("mid_block.", "up_blocks.")) for p in aa2)
    assert {p for p in full if p.startswith("down_blocks.")} and set(aa2) < set(full)
    # SD1.5 layout: 1 mid + 3 cross-attention up blocks x 3 layers; plus 3 down blocks x 2 in full
    assert len(aa2) == 1 + 3 * 3 and len(full) == len(aa2) + 3 * 2
    with pytest.raises(AA2InputError, match="fusion"):
        spatial_self_attention_paths(unet, "midup")


@pytest.mark.parametrize("fusion", ["aa2", "full"])
def test_unet_with_bank_matches_the_concatenation_formula(fusion):
    reference_unet, denoising_unet = _tiny_unet(1), _tiny_unet(2)
    joint = ReferenceAttention(reference_unet, denoising_unet, fusion)
    context = torch.randn(1, 1, 32)
    with torch.no_grad():
        bank = joint.write(lambda: reference_unet(torch.randn(1, 4, 8, 8), 0, encoder_hidden_states=context))
    assert set(bank) == set(joint.paths)
    x = torch.randn(3, 4, 8, 8)  # three frames of one video: the bank is repeated per frame
    ctx3 = context.repeat(3, 1, 1)
    joint.attach()
    joint.bind(bank)
    with torch.no_grad():
        ours = denoising_unet(x, 10, encoder_hidden_states=ctx3).sample
        joint.detach()
        plain = denoising_unet(x, 10, encoder_hidden_states=ctx3).sample
        processors = {}
        for name in denoising_unet.attn_processors:  # "<module path>.processor"
            path = name.removesuffix(".processor")
            processors[name] = ConcatProcessor(bank[path]) if path in bank else AttnProcessor2_0()
        denoising_unet.set_attn_processor(processors)
        expected = denoising_unet(x, 10, encoder_hidden_states=ctx3).sample
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
    assert not torch.allclose(ours, plain, atol=1e-4)


def test_attach_then_detach_restores_the_exact_processors_and_outputs():
    reference_unet, denoising_unet = _tiny_unet(1), _tiny_unet(2)
    before = dict(denoising_unet.attn_processors)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 1, 32)
    with torch.no_grad():
        plain = denoising_unet(x, 5, encoder_hidden_states=ctx).sample
        joint = ReferenceAttention(reference_unet, denoising_unet, "full")
        joint.attach()
        joint.detach()
        after = denoising_unet(x, 5, encoder_hidden_states=ctx).sample
    assert torch.equal(plain, after)
    assert all(denoising_unet.attn_processors[k] is v for k, v in before.items())


def test_reference_unet_stops_after_the_last_layer_read():
    reference_unet, denoising_unet = _tiny_unet(1), _tiny_unet(2)
    joint = ReferenceAttention(reference_unet, denoising_unet, "aa2")
    reached = []
    reference_unet.conv_out.register_forward_hook(lambda *a: reached.append("conv_out"))
    reference_unet.up_blocks[3].attentions[2].transformer_blocks[0].attn2.register_forward_hook(
        lambda *a: reached.append("attn2")
    )
    processors = dict(reference_unet.attn_processors)
    with torch.no_grad():
        joint.write(lambda: reference_unet(torch.randn(1, 4, 8, 8), 0, encoder_hidden_states=torch.randn(1, 1, 32)))
    assert reached == []
    assert all(reference_unet.attn_processors[k] is v for k, v in processors.items())


def test_bank_from_another_fusion_mode_is_refused():
    reference_unet, denoising_unet = _tiny_unet(1), _tiny_unet(2)
    aa2 = ReferenceAttention(reference_unet, denoising_unet, "aa2")
    with torch.no_grad():
        bank = aa2.write(lambda: reference_unet(torch.randn(1, 4, 8, 8), 0, encoder_hidden_states=torch.randn(1, 1, 32)))
    full = ReferenceAttention(reference_unet, denoising_unet, "full")
    full.attach()
    with pytest.raises(AA2InputError, match="fusion mode"):
        full.bind(bank)
    full.detach()


def test_batch_that_the_reference_cannot_divide_is_refused():
    attn = Attention(query_dim=32, heads=8, dim_head=4).eval()
    reader = ReferenceReader(attn.processor)
    reader.bind(torch.randn(2, 7, 32))
    attn.set_processor(reader)
    with pytest.raises(AA2InputError, match="divide"):
        attn(torch.randn(3, 10, 32))


def test_guidance_batch_gives_the_unconditional_half_no_reference():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=8, dim_head=4).eval()
    uncond, cond, reference = torch.randn(3, 10, 32), torch.randn(3, 10, 32), torch.randn(1, 7, 32)
    reader = ReferenceReader(AttnProcessor2_0())
    attn.set_processor(reader)
    with torch.no_grad():
        reader.bind(reference)
        cond_alone = attn(cond)
        reader.bind(None)
        uncond_alone = attn(uncond)
        reader.bind(reference, unconditional_half=True)
        both = attn(torch.cat([uncond, cond]))
    torch.testing.assert_close(both[:3], uncond_alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(both[3:], cond_alone, atol=ATOL, rtol=0)
