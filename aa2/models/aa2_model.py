"""The whole Animate Anyone 2 network, assembled from state dicts in diffusers' key names.

Loaders (`aa2.weights.*`) are pure converters: each turns one file format into diffusers-named state
dicts plus the config it implies. `assemble` is the one place that builds modules from them. The
large diffusers models are built on the meta device and take the loaded tensors as they are
(`assign=True`), so an SD1.5-sized net assembles in well under a second instead of spending half a
minute on a random initialisation that would be overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn

from ..config import AA2Config
from ..errors import AA2WeightsError
from ..weights.files import load_strict
from .denoising_net import DenoisingNet, widen_conv_in
from .motion_norm import use_frame_norm
from .reference_attention import ReferenceAttention, ReferenceBank, drop_unread_layers, spatial_self_attention_paths

StateDict = dict[str, torch.Tensor]


@dataclass
class ModelParts:
    """State dicts (diffusers / transformers key names) for each part; None where absent.

    `denoising_unet` may have a 4-channel (SD1.5, Animate Anyone 1) or wider conv_in; it is widened
    to the config's input channels with zero weights. `pose_guider` is an Animate Anyone 1 pose
    guider, loaded into the skeleton branch of the pose modulation.
    """

    denoising_unet: StateDict | None = None
    motion: StateDict | None = None
    reference_unet: StateDict | None = None
    vae: StateDict | None = None
    image_encoder: StateDict | None = None
    pose_guider: StateDict | None = None
    aa2_extras: StateDict = field(default_factory=dict)  # denoising_net.{pose_modulation,object_guider,spatial_blend}.*
    sources: dict[str, str] = field(default_factory=dict)  # part -> file it came from, for messages


REQUIRED_PARTS = ("denoising_unet", "motion", "reference_unet", "vae", "image_encoder")


class AA2Model(nn.Module):
    """DenoisingNet, ReferenceNet, VAE and image encoder, with reference attention attached."""

    def __init__(
        self,
        config: AA2Config,
        denoising_net: DenoisingNet,
        reference_net: UNet2DConditionModel,
        vae: AutoencoderKL,
        image_encoder: nn.Module,
    ) -> None:
        super().__init__()
        self.config = config
        self.denoising_net = denoising_net
        self.reference_net = reference_net
        self.vae = vae
        self.image_encoder = image_encoder
        self.reference_attention = ReferenceAttention(reference_net, denoising_net.unet, config.fusion)
        self.reference_attention.attach()

    def encode_reference(self, reference_latents: torch.Tensor, context: torch.Tensor) -> ReferenceBank:
        """Run the ReferenceNet once (at timestep 0) over `[B, 4, h, w]` scaled latents.

        `context` is `[B, tokens, C]`, the *conditional* context. For classifier-free guidance as
        Animate Anyone 1 / Moore-AnimateAnyone samples it, encode once with it and bind with
        `unconditional_half=True`: the unconditional half never reads the bank. (A bank encoded
        from stacked `[uncond, cond]` contexts has two rows per reference, and the conditional
        half would then spread them over its frames.)
        """
        timestep = torch.zeros(reference_latents.shape[0], device=reference_latents.device)
        return self.reference_attention.write(
            lambda: self.reference_net(reference_latents, timestep, encoder_hidden_states=context)
        )

    def bind_reference(self, bank: ReferenceBank | None, unconditional_half: bool = False) -> None:
        """Make every following DenoisingNet call attend to `bank` (None: unbind).

        `unconditional_half`: the batch is `[uncond, cond]` for classifier-free guidance and only the
        conditional half sees the reference (Animate Anyone 1 trained its unconditional branch that way).
        """
        self.reference_attention.bind(bank, unconditional_half)


def assemble(config: AA2Config, parts: ModelParts) -> AA2Model:
    """Build an `AA2Model` for `config` and load every part strictly."""
    missing = [name for name in REQUIRED_PARTS if getattr(parts, name) is None]
    if missing:
        raise AA2WeightsError(
            f"cannot build the model: no weights for {', '.join(missing)}. An SD1.5 checkpoint gives "
            "the UNets and VAE, an AnimateDiff motion module the motion layers, a CLIP vision file the "
            "image encoder (or use a complete AA2 checkpoint)."
        )
    unet_config = config.unet.diffusers_config()
    with init_empty_weights():
        base = UNet2DConditionModel(**unet_config)
        adapter = MotionAdapter(**config.motion.adapter_config(config.unet))
        motion_unet = UNetMotionModel.from_unet2d(base, adapter, load_weights=False)
        use_frame_norm(motion_unet)
        reference_net = UNet2DConditionModel(**unet_config)
        unread = drop_unread_layers(reference_net, spatial_self_attention_paths(reference_net, config.fusion)[-1])
        vae = AutoencoderKL(**config.vae.diffusers_config())
        image_encoder = _empty_image_encoder(config)

    denoising_sd = dict(parts.denoising_unet)
    in_channels = denoising_sd["conv_in.weight"].shape[1]
    if in_channels != 4:
        motion_unet.conv_in = nn.Conv2d(in_channels, motion_unet.conv_in.out_channels, 3, padding=1, device="meta")
    _load(motion_unet, {**denoising_sd, **parts.motion}, "DenoisingNet (UNet + motion modules)", parts,
          ("denoising_unet", "motion"))
    widen_conv_in(motion_unet, config.denoising_in_channels)
    reference_sd = {k: v for k, v in parts.reference_unet.items() if not k.startswith(unread)}
    _load(reference_net, reference_sd, "ReferenceNet", parts, ("reference_unet",))
    _load(vae, parts.vae, "VAE", parts, ("vae",))
    _load(image_encoder, parts.image_encoder, "image encoder", parts, ("image_encoder",))

    denoising_net = DenoisingNet(config, motion_unet)
    if parts.pose_guider is not None:
        _load(denoising_net.pose_modulation.skeleton_guider, parts.pose_guider, "pose guider", parts,
              ("pose_guider",), assign=False)
    if parts.aa2_extras:
        _load_extras(denoising_net, parts)
    model = AA2Model(config, denoising_net, reference_net, vae, image_encoder)
    return model.eval().requires_grad_(False)


def _empty_image_encoder(config: AA2Config) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder.transformers_config()))


def _load(module: nn.Module, state: StateDict, what: str, parts: ModelParts, names: tuple[str, ...],
          assign: bool = True) -> None:
    files = ", ".join(dict.fromkeys(parts.sources.get(n, n) for n in names))
    load_strict(module, state, what, files, assign=assign)


def _load_extras(denoising_net: DenoisingNet, parts: ModelParts) -> None:
    """Load AA2's own parts (pose modulation, object guider, blending) where the file has them."""
    for name in ("pose_modulation", "object_guider", "spatial_blend"):
        module = getattr(denoising_net, name)
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in parts.aa2_extras.items() if k.startswith(prefix)}
        if module is None or not state:
            continue
        _load(module, state, name.replace("_", " "), parts, ("aa2_extras",), assign=False)
