"""Configs are data: small frozen dataclasses, SD1.5 values as defaults, a tiny preset for tests.

An `AA2Config` describes a whole Animate Anyone 2 network. It is serialised to JSON inside the
pack's checkpoint metadata, so a file says what it is. The tiny preset keeps the SD1.5 *structure*
(four down blocks, two layers each, 32 norm groups, 8 heads) with small widths, so every real key
name exists and the real loaders are what the tests run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

FusionMode = Literal["aa2", "full"]
"""Where ReferenceNet features join the DenoisingNet's self-attention.

`aa2`: mid and up blocks only (Animate Anyone 2, section 3.1). `full`: every block, as Animate
Anyone 1 / Moore-AnimateAnyone weights were trained.
"""

ObjectInjection = Literal["blend", "conv_in"]  # where the object guider's features go (AA2Config.object_injection)

VAE_SCALING_FACTOR = 0.18215  # SD1.5's latent scale; aa2 latents are always *scaled* latents.


@dataclass(frozen=True)
class UNetShape:
    """The SD1.5 UNet's hyper-parameters; both DenoisingNet and ReferenceNet use them."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    cross_attention_dim: int = 768
    attention_heads: int = 8
    norm_num_groups: int = 32

    def diffusers_config(self, in_channels: int = 4) -> dict[str, Any]:
        """Keyword arguments for `diffusers.UNet2DConditionModel` (SD1.5 block layout)."""
        return {
            "sample_size": 64,
            "in_channels": in_channels,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "cross_attention_dim": self.cross_attention_dim,
            "attention_head_dim": self.attention_heads,  # diffusers' historical name: it is the head count
            "norm_num_groups": self.norm_num_groups,
        }


@dataclass(frozen=True)
class MotionShape:
    """AnimateDiff motion modules (temporal attention after every spatial layer)."""

    max_seq_length: int = 32  # positional-encoding length: 32 for mm_sd_v15_v2 and v3, 24 for v1
    use_mid_block: bool = True  # v2 has a mid-block motion module, v1 and v3 do not
    attention_heads: int = 8
    norm_num_groups: int = 32
    transformer_layers: int = 1
    trained_frames: int = 16  # clip length the motion modules saw in training

    def adapter_config(self, unet: UNetShape) -> dict[str, Any]:
        """Keyword arguments for `diffusers.MotionAdapter`."""
        return {
            "block_out_channels": tuple(unet.block_out_channels),
            "motion_layers_per_block": unet.layers_per_block,
            "motion_transformer_layers_per_block": self.transformer_layers,
            "motion_mid_block_layers_per_block": 1,
            "motion_transformer_layers_per_mid_block": self.transformer_layers,
            "motion_num_attention_heads": self.attention_heads,
            "motion_norm_num_groups": self.norm_num_groups,
            "motion_max_seq_length": self.max_seq_length,
            "use_motion_mid_block": self.use_mid_block,
        }


@dataclass(frozen=True)
class PoseShape:
    """Depth-wise pose modulation (section 3.4): two pose-guider conv stacks, cross-attention, Conv3D."""

    conditioning_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)  # Animate Anyone 1's pose guider
    attention_heads: int = 8
    use_depth: bool = True


@dataclass(frozen=True)
class VAEShape:
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = VAE_SCALING_FACTOR

    def diffusers_config(self) -> dict[str, Any]:
        """Keyword arguments for `diffusers.AutoencoderKL`."""
        n = len(self.block_out_channels)
        return {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": 512,
            "scaling_factor": self.scaling_factor,
        }


@dataclass(frozen=True)
class ImageEncoderShape:
    """CLIP ViT-L/14 vision tower with projection, as sd-image-variations and Moore-AnimateAnyone use."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    projection_dim: int = 768

    def transformers_config(self) -> dict[str, Any]:
        """Keyword arguments for `transformers.CLIPVisionConfig`."""
        return {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "projection_dim": self.projection_dim,
            "hidden_act": "quick_gelu",
        }


@dataclass(frozen=True)
class SchedulerSettings:
    """The noise schedule a checkpoint was trained with, and sampled with by its authors.

    SD1.5 and AnimateDiff: epsilon, leading spacing. Moore-AnimateAnyone: v-prediction with
    zero-terminal SNR and trailing spacing. Using other settings gives garbage.

    `set_alpha_to_one` is DDIM's last step: True lands it on ᾱ = 1 (a clean sample), False on the
    first training ᾱ₀ = 0.99915, which leaves ~0.03·ε̂ of noise. SD1.5's own scheduler_config.json
    and CompVis' DDIMSampler (`alphas_prev[0] = alphas_cumprod[0]`) use False, hence the default;
    Moore-AnimateAnyone and MIMO leave diffusers' DDIMScheduler default (True) in their inference
    configs, and their presets below record it.
    """

    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    rescale_betas_zero_snr: bool = False
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    steps_offset: int = 1
    clip_sample: bool = False
    set_alpha_to_one: bool = False

    def diffusers_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AA2Config:
    """Everything needed to build an Animate Anyone 2 network before loading weights into it."""

    unet: UNetShape = field(default_factory=UNetShape)
    motion: MotionShape = field(default_factory=MotionShape)
    pose: PoseShape = field(default_factory=PoseShape)
    vae: VAEShape = field(default_factory=VAEShape)
    image_encoder: ImageEncoderShape = field(default_factory=ImageEncoderShape)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    fusion: FusionMode = "aa2"
    use_environment: bool = True  # conv_in takes noise(4) + environment latents(4) + mask(1)
    use_object_guider: bool = True
    # where the object guider's features go: "blend" (spatial blending after the mid and up blocks'
    # spatial attentions, the paper) or "conv_in" (its full-resolution features added to conv_in's
    # output, i.e. merged into the noise latents: the paper's "w/o spatial blending" ablation)
    object_injection: ObjectInjection = "blend"

    @property
    def denoising_in_channels(self) -> int:
        return 4 + (5 if self.use_environment else 0)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AA2Config":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AA2Config":
        parts = {
            "unet": UNetShape,
            "motion": MotionShape,
            "pose": PoseShape,
            "vae": VAEShape,
            "image_encoder": ImageEncoderShape,
            "scheduler": SchedulerSettings,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value)
            else:
                kwargs[key] = value
        return _build(cls, kwargs)

    def replace(self, **changes: Any) -> "AA2Config":
        return dataclasses.replace(self, **changes)


def _build(kind: type, values: dict[str, Any]) -> Any:
    """Make a dataclass from JSON values: lists become tuples, unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{kind.__name__} has no fields {sorted(unknown)}; known: {sorted(names)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# Moore-AnimateAnyone samples with a *linear* beta schedule (its configs/inference/inference_v2.yaml)
# although it trained with scaled_linear; its published results come from the former, so we match it.
# That config leaves DDIM's set_alpha_to_one unset, i.e. diffusers' default True: the last step is clean.
MOORE_SCHEDULER = SchedulerSettings(
    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing", beta_schedule="linear",
    set_alpha_to_one=True,
)
# MIMO (menyifang/MIMO) keeps scaled_linear with the same v-prediction / zero-SNR / trailing settings,
# and, like Moore's, its configs/inference/inference_v2.yaml leaves set_alpha_to_one at True.
MIMO_SCHEDULER = SchedulerSettings(
    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing", set_alpha_to_one=True,
)


def sd15() -> AA2Config:
    """The real Animate Anyone 2 shapes on SD1.5 + AnimateDiff v2."""
    return AA2Config()


def tiny() -> AA2Config:
    """SD1.5's structure with small widths: for tests, the demo and benchmarks of overheads."""
    return AA2Config(
        unet=UNetShape(block_out_channels=(32, 32, 64, 64), cross_attention_dim=32),
        motion=MotionShape(),
        pose=PoseShape(block_out_channels=(8, 8, 16, 16)),
        vae=VAEShape(block_out_channels=(32, 32, 32, 32)),
        image_encoder=ImageEncoderShape(
            hidden_size=64,  # one head of CLIP's 64 width, so the head count reads off the file as for real ones
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=1,
            patch_size=8,
            image_size=32,
            projection_dim=32,
        ),
    )


def synthworld() -> AA2Config:
    """The small Animate Anyone 2 that SynthWorld trains from scratch (64x64 clips, CPU-sized).

    SD1.5's structure (four levels, two layers each, every AA2 part) at widths a 2-core CPU trains in
    minutes. Sampled as Moore-AnimateAnyone is (v-prediction, zero-terminal SNR, trailing spacing,
    a clean last DDIM step): with zero terminal SNR the first step sees no image at all, so the
    model must take colours and layout from its conditions, which is what this world tests. The VAE
    shape here is a placeholder: `train.init_model` replaces it with the trained VAE's.
    """
    return AA2Config(
        unet=UNetShape(block_out_channels=(32, 64, 64, 64), cross_attention_dim=32, attention_heads=4),
        motion=MotionShape(max_seq_length=32, attention_heads=4, trained_frames=8),
        pose=PoseShape(block_out_channels=(8, 16, 16, 32), attention_heads=4),
        vae=VAEShape(block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=16),
        image_encoder=ImageEncoderShape(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, patch_size=8,
            image_size=32, projection_dim=32,
        ),
        scheduler=SchedulerSettings(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                    timestep_spacing="trailing", set_alpha_to_one=True),
    )


PRESETS = {"sd15": sd15, "tiny": tiny, "synthworld": synthworld}
