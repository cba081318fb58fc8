"""Reference attention: ReferenceNet features joined to the DenoisingNet's spatial self-attention.

Paper section 3.1: the ReferenceNet's self-attention inputs are concatenated, as extra tokens, to
the keys and values of the DenoisingNet's spatial self-attention. Animate Anyone 2 does this in
the mid and up blocks only (`fusion="aa2"`); Animate Anyone 1 / Moore-AnimateAnyone weights were
trained with every block (`fusion="full"`).

Both sides are weight-free diffusers attention processors, so the two UNets stay plain diffusers
models: `attach` swaps processors in by module path and `detach` puts the originals back. Writer and
reader are paired by their module path (`up_blocks.1.attentions.0.transformer_blocks.0.attn1` in
the ReferenceNet feeds the module of the same path in the DenoisingNet), never by sort order.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ..errors import AA2InputError
from ..config import FusionMode

ReferenceBank = dict[str, torch.Tensor]
"""Module path -> the ReferenceNet's self-attention input there, `[B_ref, tokens, C]`."""


def spatial_self_attention_paths(unet: nn.Module, fusion: FusionMode) -> list[str]:
    """Paths of the spatial self-attentions that take reference tokens, in forward order.

    Motion modules also contain self-attentions (`...motion_modules...attn1`); they attend over
    time and never see the reference.
    """
    if fusion not in ("aa2", "full"):
        raise AA2InputError(f"fusion must be 'aa2' or 'full', got {fusion!r}")
    blocks = ("mid_block.", "up_blocks.") if fusion == "aa2" else ("down_blocks.", "mid_block.", "up_blocks.")
    paths = [
        name
        for name, _ in unet.named_modules()
        if name.endswith(".attn1") and ".attentions." in name and name.startswith(blocks)
    ]
    return _forward_order(paths)


def _forward_order(paths: Iterable[str]) -> list[str]:
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(paths, key=lambda p: (rank[p.split(".")[0]], p))


class _StopReferenceNet(Exception):
    """Raised after the last banked layer: the rest of the ReferenceNet is never read."""


class _UnreadLayer(nn.Module):
    """Stands where a ReferenceNet layer was dropped: nothing reads what it would compute."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "this ReferenceNet layer was dropped because the DenoisingNet never reads its output; "
            "run the ReferenceNet through AA2Model.encode_reference, which stops before it"
        )


def drop_unread_layers(reference_unet: nn.Module, last_path: str) -> tuple[str, ...]:
    """Remove every layer the ReferenceNet would run after the input of `last_path`'s self-attention.

    The writer stops the forward there (`_StopReferenceNet`), so these layers never compute and could
    never get a gradient: kept, they would only take memory, optimizer state, and leave DDP waiting
    for gradients that never come. In an SD1.5 UNet, `last_path` is the last up block's last
    self-attention, and what follows it is that attention's projections, the rest of its transformer
    block (cross-attention, feed-forward and their norms), its `proj_out`, and the UNet's output
    layers. Returns the state-dict key prefixes that went, so files that still hold them load.
    """
    block_path, attn_name = last_path.rsplit(".", 1)
    transformer_path, _, block_index = block_path.rsplit(".", 2)
    up_block_path, _, attention_index = transformer_path.rsplit(".", 2)
    block = reference_unet.get_submodule(block_path)
    transformer = reference_unet.get_submodule(transformer_path)
    up_block = reference_unet.get_submodule(up_block_path)
    last_of_everything = (up_block is reference_unet.up_blocks[-1] and up_block.upsamplers is None
                          and int(attention_index) == len(up_block.attentions) - 1
                          and int(block_index) == len(transformer.transformer_blocks) - 1)
    if not last_of_everything:
        raise ValueError(f"{last_path} is not the ReferenceNet's last self-attention: more than its tail runs after it")
    attention = getattr(block, attn_name)
    dropped = []
    for name in ("to_q", "to_k", "to_v"):
        setattr(attention, name, _UnreadLayer())
        dropped.append(f"{last_path}.{name}.")
    attention.to_out[0] = _UnreadLayer()
    dropped.append(f"{last_path}.to_out.")
    for name in ("norm2", "attn2", "norm3", "ff"):
        if getattr(block, name, None) is not None:
            setattr(block, name, _UnreadLayer())
            dropped.append(f"{block_path}.{name}.")
    transformer.proj_out = _UnreadLayer()
    dropped.append(f"{transformer_path}.proj_out.")
    reference_unet.conv_norm_out = None  # the UNet skips norm and activation when this is None
    reference_unet.conv_act = None
    reference_unet.conv_out = _UnreadLayer()
    dropped += ["conv_norm_out.", "conv_out."]
    return tuple(dropped)


class ReferenceWriter:
    """Processor for a ReferenceNet self-attention: records its input, then attends as usual."""

    def __init__(self, bank: ReferenceBank, path: str, last: bool, inner: object) -> None:
        self.bank, self.path, self.last, self.inner = bank, path, last, inner

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # The input of attn1 is the block's norm1 output: exactly the tokens the DenoisingNet's
        # attn1 will concatenate, so both live in the same normalised space.
        self.bank[self.path] = hidden_states
        if self.last:
            raise _StopReferenceNet
        return self.inner(attn, hidden_states, *args, **kwargs)


class ReferenceReader:
    """Processor for a DenoisingNet spatial self-attention that also attends to reference tokens.

    Queries come from the frame's own tokens; keys and values from the frame's tokens followed by
    the reference tokens. With no reference bound it is the plain self-attention, bit for bit.

    With `unconditional_half`, the batch is classifier-free guidance's `[uncond, cond]` and the
    unconditional half attends to its own tokens only: the unconditional prediction sees no
    reference at all, as Animate Anyone 1 / Moore-AnimateAnyone was trained and sampled (there,
    uncond steps skip the ReferenceNet). So the ReferenceNet runs for the conditional half alone.
    """

    def __init__(self, inner: object) -> None:
        self.inner = inner  # the processor this one replaced; it runs whenever no reference is bound
        self.reference: torch.Tensor | None = None  # [B_ref, M, C]
        self.unconditional_half = False
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def bind(self, reference: torch.Tensor | None, unconditional_half: bool = False) -> None:
        self.reference, self.unconditional_half, self._kv = reference, unconditional_half, None

    def _reference_kv(self, attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        # The reference tokens are the same at every step and frame, so their key/value
        # projections are made once per bind (at inference) instead of once per frame per step.
        if self._kv is not None:
            return self._kv
        kv = (attn.to_k(self.reference), attn.to_v(self.reference))
        if not torch.is_grad_enabled():
            self._kv = kv
        return kv

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if self.reference is None:
            return self.inner(
                attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
            )
        if encoder_hidden_states is not None or attention_mask is not None:
            raise AA2InputError("reference attention is self-attention: it takes no context or mask")
        if self.unconditional_half:
            if hidden_states.shape[0] % 2:
                raise AA2InputError("guidance needs an even batch: [unconditional, conditional]")
            uncond, cond = hidden_states.chunk(2)
            return torch.cat([self.inner(attn, uncond), self._with_reference(attn, cond)])
        return self._with_reference(attn, hidden_states)

    def _with_reference(self, attn: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        rows = hidden_states.shape[0]
        ref_rows = self.reference.shape[0]
        if rows % ref_rows:
            raise AA2InputError(
                f"the denoising batch has {rows} rows (batch x frames) but the reference has "
                f"{ref_rows}; it must divide them (one reference per batch entry, or one for all)"
            )
        ref_k, ref_v = self._reference_kv(attn)
        # Denoising rows are ordered (batch, frame): each reference row serves a run of rows.
        per_ref = rows // ref_rows
        ref_k = repeat(ref_k, "b m c -> (b f) m c", f=per_ref)
        ref_v = repeat(ref_v, "b m c -> (b f) m c", f=per_ref)
        query = attn.to_q(hidden_states)
        key = torch.cat([attn.to_k(hidden_states), ref_k.to(hidden_states.dtype)], dim=1)
        value = torch.cat([attn.to_v(hidden_states), ref_v.to(hidden_states.dtype)], dim=1)
        return _attend(attn, query, key, value)


def _attend(attn: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head scaled-dot-product attention and the output projection, as diffusers' SDPA one."""
    split = "b n (h d) -> b h n d"
    q, k, v = (rearrange(t, split, h=attn.heads) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    out = rearrange(out, "b h n d -> b n (h d)").to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    return out / attn.rescale_output_factor


class ReferenceAttention:
    """Installs writers on a ReferenceNet and readers on a DenoisingNet, paired by module path.

    `attach()`/`detach()` are exact inverses: detach restores the processors that were there.
    """

    def __init__(self, reference_unet: nn.Module, denoising_unet: nn.Module, fusion: FusionMode) -> None:
        self.reference_unet, self.denoising_unet, self.fusion = reference_unet, denoising_unet, fusion
        self.paths = spatial_self_attention_paths(denoising_unet, fusion)
        missing = set(self.paths) - {n for n, _ in reference_unet.named_modules()}
        if missing:
            raise AA2InputError(
                f"the ReferenceNet has no layers {sorted(missing)[:3]}...: it must have the "
                "DenoisingNet's block layout"
            )
        self.readers: dict[str, ReferenceReader] = {}

    @property
    def attached(self) -> bool:
        return bool(self.readers)

    def attach(self) -> None:
        if self.attached:
            return
        for path in self.paths:
            module = self.denoising_unet.get_submodule(path)
            self.readers[path] = ReferenceReader(module.processor)
            module.set_processor(self.readers[path])

    def detach(self) -> None:
        for path, reader in self.readers.items():
            self.denoising_unet.get_submodule(path).set_processor(reader.inner)
        self.readers = {}

    def bind(self, bank: ReferenceBank | None, unconditional_half: bool = False) -> None:
        """Make the DenoisingNet attend to `bank` (None: plain self-attention).

        `unconditional_half`: the batch is `[uncond, cond]` and only the conditional half attends
        to the reference (see `ReferenceReader`).
        """
        if not self.attached:
            raise RuntimeError("bind() before attach(): the DenoisingNet has no reference readers")
        if bank is not None and set(bank) != set(self.paths):
            raise AA2InputError(
                f"the reference features were made for other layers ({len(bank)} layers, expected "
                f"{len(self.paths)}): encode the reference with this model's fusion mode ({self.fusion!r})"
            )
        for path, reader in self.readers.items():
            reader.bind(None if bank is None else bank[path], unconditional_half)

    def write(self, run_reference_unet) -> ReferenceBank:
        """Run the ReferenceNet through `run_reference_unet()` and return its bank.

        Writers are installed only for the duration of the call, and the ReferenceNet stops right
        after the last layer anyone reads, so its tail (the last block's cross-attention,
        feed-forward and output convolution) is never computed. In `aa2` mode the down blocks still
        run, since they feed the mid block, but nothing of theirs is kept.
        """
        bank: ReferenceBank = {}
        modules = {p: self.reference_unet.get_submodule(p) for p in self.paths}
        saved = {p: m.processor for p, m in modules.items()}
        try:
            for path, module in modules.items():
                module.set_processor(ReferenceWriter(bank, path, path == self.paths[-1], saved[path]))
            try:
                run_reference_unet()
            except _StopReferenceNet:
                pass
        finally:
            for path, module in modules.items():
                module.set_processor(saved[path])
        return bank
