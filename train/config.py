"""Training recipes as data: frozen dataclasses, read from and written to YAML (paper §4.1).

A recipe file holds the settings every stage shares and, under `stages:`, what differs per stage.
`load_recipe(path, stage, overrides)` resolves one stage into a `TrainConfig`; the run writes that
resolved config to `RUN_DIR/config.yaml`, which loads again as a recipe without stages.

Stages follow Animate Anyone practice (the paper gives the recipe of its full run — 8 GPUs,
batch 8, 16-frame clips, 100k steps, lr 1e-5, AdamW — but not a stage split):

* `image`: ReferenceNet, the DenoisingNet's spatial layers, pose modulation, object guider and
  spatial blending train on single target frames; the motion modules are frozen.
* `motion`: only the motion modules train, on 16-frame clips.

Which parameters train is configuration: `trainable` globs (`fnmatch`, `*` crosses dots) over
`AA2Model.named_parameters()` names, minus the `frozen` globs. The VAE is always frozen: the batch
builder encodes through it without gradients. The image encoder is frozen unless a stage's globs
name it (`image_encoder.*`): a model trained from scratch (SynthWorld) has no pretrained CLIP, and
its encoder then trains with the image stage through the CLIP context.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from aa2.conditioning.augment import ReferenceFraming
from aa2.errors import AA2InputError

StageName = Literal["image", "motion"]
MixedPrecision = Literal["no", "fp16", "bf16"]

# Parameter names are AA2Model's: denoising_net.unet.* (motion modules at *.motion_modules.*),
# denoising_net.{pose_modulation,object_guider,spatial_blend}.*, reference_net.*, vae.*, image_encoder.*
MOTION_MODULES = "denoising_net.unet.*motion_modules.*"
STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "image": (
        "reference_net.*",
        "denoising_net.unet.*",
        "denoising_net.pose_modulation.*",
        "denoising_net.object_guider.*",
        "denoising_net.spatial_blend.*",
    ),
    "motion": (MOTION_MODULES,),
}
STAGE_FROZEN: dict[str, tuple[str, ...]] = {"image": (MOTION_MODULES,), "motion": ()}
ALWAYS_FROZEN = ("vae.*",)  # the batch builder encodes targets through it without gradients


@dataclass(frozen=True)
class StageSettings:
    """Which parameters train, and whether targets are single frames (image stage) or clips."""

    name: StageName = "image"
    trainable: tuple[str, ...] | None = None  # None: STAGE_TRAINABLE[name]
    frozen: tuple[str, ...] | None = None  # None: STAGE_FROZEN[name]
    single_frame: bool | None = None  # None: True for "image"

    @property
    def trainable_patterns(self) -> tuple[str, ...]:
        return STAGE_TRAINABLE[self.name] if self.trainable is None else self.trainable

    @property
    def frozen_patterns(self) -> tuple[str, ...]:
        return STAGE_FROZEN[self.name] if self.frozen is None else self.frozen

    @property
    def single_target_frame(self) -> bool:
        return self.name == "image" if self.single_frame is None else self.single_frame

    def selects(self, name: str) -> bool:
        """Whether parameter `name` trains in this stage."""
        if any(fnmatch.fnmatchcase(name, p) for p in ALWAYS_FROZEN):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.trainable_patterns) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.frozen_patterns
        )


@dataclass(frozen=True)
class ModelSettings:
    """Where training starts: the `aa2.weights.sources.ModelSources` fields.

    `base` is an SD1.5 file or diffusers folder (+ `motion_module`, `image_encoder`: SD1.5 +
    AnimateDiff), a Moore-AnimateAnyone folder, or a pack checkpoint (to continue a stage).
    Relative paths are read from the working directory.
    """

    base: str = ""
    motion_module: str | None = None
    image_encoder: str | None = None
    vae: str | None = None
    fusion: Literal["aa2", "full"] | None = None


@dataclass(frozen=True)
class DataSettings:
    """The prepared clips (train.dataset.PreparedClips arguments) and the augmentations of §3.2."""

    clip_length: int = 16
    size: tuple[int, int] = (768, 768)  # (H, W), multiples of 64
    stride: int = 1
    clips_per_video: int | None = None
    num_workers: int = 4
    scale_range: tuple[float, float] = (0.8, 1.2)  # random scale augmentation
    reference_aspect: float | None = None  # width / height of the reference's crop; None: the frame's
    # "frame": the reference is the frame's centre crop; "character": the character's box (a portrait)
    reference_framing: ReferenceFraming = "frame"
    backgrounds: str | None = None  # folder of background images for the reference; None: flat colours
    depth_convention: Literal["inverse", "depth"] = "inverse"  # prepared depth is near-bright
    # How the character is cut out of the environment (§3.2, Figure 7): "agnostic" is eq. 2; the
    # others ("precise" mask, "box") exist for the ablation. Sample with the one you trained with.
    environment_mask: Literal["agnostic", "precise", "box"] = "agnostic"


@dataclass(frozen=True)
class OptimSettings:
    steps: int = 100_000
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False  # bitsandbytes' AdamW8bit
    max_grad_norm: float = 1.0
    mixed_precision: MixedPrecision = "bf16"
    gradient_checkpointing: bool = False
    seed: int = 42
    # Exponential moving average of the trained weights, exported instead of the last ones (e.g. 0.9999);
    # costs one fp32 copy of the trainable parameters. None: off.
    ema_decay: float | None = None


@dataclass(frozen=True)
class LossSettings:
    """The diffusion objective. None keeps what the base checkpoint's `SchedulerSettings` say."""

    prediction_type: Literal["epsilon", "v_prediction"] | None = None
    zero_terminal_snr: bool | None = None
    snr_gamma: float | None = None  # min-SNR weighting (Hang et al. 2023); None: plain MSE
    # how v-prediction clamps with snr_gamma (train.objective): "min_snr" weights min(SNR, γ) / (SNR + 1),
    # which falls to 0 at high noise; "min_snr_plus_one" (Moore-AnimateAnyone's) weights
    # min(SNR + 1, γ) / (SNR + 1), which keeps high noise at 1, where colours must come from the conditions
    snr_weighting: Literal["min_snr", "min_snr_plus_one"] = "min_snr"
    noise_offset: float = 0.0  # per-sample, per-channel offset added to the noise
    drop_reference: float = 0.1  # probability of dropping CLIP context and ReferenceNet together


@dataclass(frozen=True)
class RunSettings:
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # newest N kept; 0 keeps all
    validate_every: int = 1000  # 0: never
    validation_steps: int = 20
    validation_cfg: float = 3.5
    log_every: int = 10
    tracker: Literal["tensorboard", "wandb", "none"] = "tensorboard"  # wandb: pip install wandb, then wandb login
    find_unused_parameters: bool = True  # reference dropout and clips without objects leave layers unused


@dataclass(frozen=True)
class DebugSettings:
    """For tests and post-mortems; leave at the defaults for real runs."""

    nan_at_step: int | None = None  # make this step's loss NaN (tests the NaN stop)
    stop_after: int | None = None  # exit cleanly after this step (simulates a kill after a checkpoint)
    checksums: bool = False  # each rank logs a checksum of its trainable weights every step


@dataclass(frozen=True)
class TrainConfig:
    stage: StageSettings = field(default_factory=StageSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    run: RunSettings = field(default_factory=RunSettings)
    debug: DebugSettings = field(default_factory=DebugSettings)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "TrainConfig":
        height, width = self.data.size
        if height % 64 or width % 64:
            raise AA2InputError(f"data.size {height}x{width} must be multiples of 64 (the UNet halves the latent thrice)")
        if self.data.clip_length < 1 or self.optim.batch_size < 1 or self.optim.steps < 1:
            raise AA2InputError("data.clip_length, optim.batch_size and optim.steps must be >= 1")
        if not 0.0 <= self.loss.drop_reference <= 1.0:
            raise AA2InputError(f"loss.drop_reference is a probability, got {self.loss.drop_reference}")
        if self.loss.snr_gamma is not None and self.loss.snr_gamma <= 0:
            raise AA2InputError(f"loss.snr_gamma must be > 0 (5 is the usual value), got {self.loss.snr_gamma}")
        if self.optim.ema_decay is not None and not 0.0 < self.optim.ema_decay < 1.0:
            raise AA2InputError(f"optim.ema_decay is a decay in (0, 1) such as 0.9999, or null; got {self.optim.ema_decay}")
        if not self.model.base:
            raise AA2InputError("model.base is empty: give the starting weights (an SD1.5 file, a Moore-AnimateAnyone "
                                "folder or a pack checkpoint) in the recipe or with --set model.base=PATH")
        return self


SECTIONS = {
    "stage": StageSettings,
    "model": ModelSettings,
    "data": DataSettings,
    "optim": OptimSettings,
    "loss": LossSettings,
    "run": RunSettings,
    "debug": DebugSettings,
}


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a `TrainConfig` from plain values; unknown sections or keys are an error."""
    unknown = set(values) - set(SECTIONS)
    if unknown:
        raise AA2InputError(f"unknown recipe sections {sorted(unknown)}; known: {sorted(SECTIONS)}")
    kwargs = {}
    for section, kind in SECTIONS.items():
        given = values.get(section) or {}
        names = {f.name for f in dataclasses.fields(kind)}
        bad = set(given) - names
        if bad:
            raise AA2InputError(f"recipe section {section!r} has no keys {sorted(bad)}; known: {sorted(names)}")
        hints = typing.get_type_hints(kind)
        kwargs[section] = kind(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in given.items()})
    return TrainConfig(**kwargs)


def load_recipe(path: str | Path, stage: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a recipe YAML, resolve `stage` (default: its `default_stage`), apply `KEY=VALUE` overrides.

    Overrides use dotted keys and YAML values: `optim.steps=10`, `data.size=[64,64]`.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise AA2InputError(f"{path} is not a recipe: its top level must be a mapping")
    stages = data.pop("stages", None) or {}
    default = data.pop("default_stage", None)
    name = stage or default or (data.get("stage") or {}).get("name")
    if stages:
        if name not in stages:
            raise AA2InputError(f"{path} has stages {sorted(stages)}; choose one with --stage (got {name!r})")
        data = _merge(data, stages[name] or {})
        data = _merge(data, {"stage": {"name": name}})
    elif stage is not None:
        data = _merge(data, {"stage": {"name": stage}})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise AA2InputError(f"override {item!r} must look like section.key=value (e.g. optim.steps=10)")
        section, _, leaf = key.partition(".")
        data = _merge(data, {section: {leaf: yaml.safe_load(text)}})
    return config_from_dict(data)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Lists become tuples; "1e-5" becomes a float (YAML 1.1 reads exponents without a dot as strings).

    A key with named choices gets one of them: YAML 1.1 reads `no`/`off` as False and `yes`/`on` as
    True, so `--set optim.mixed_precision=no` arrives as False and means "no".
    """
    choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
    if choices:
        if isinstance(value, bool):
            value = next((c for c in choices if c in (("yes", "on", "true") if value else ("no", "off", "false"))),
                         value)
        if value not in choices:
            raise AA2InputError(f"{key} is one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and "float" in str(hint):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _plain(value: Any) -> Any:
    """Tuples become lists, so the YAML stays plain and loads back with `yaml.safe_load`."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
