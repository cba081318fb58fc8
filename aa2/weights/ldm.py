"""SD1.5 single-file checkpoints (ComfyUI's models/checkpoints) and VAE files (models/vae).

These files keep the original LDM key layout (`model.diffusion_model.input_blocks.*`,
`first_stage_model.encoder.down.*`, `cond_stage_model.transformer.*`). Reading uses diffusers' own
converters from `diffusers.loaders.single_file_utils` with a config built from *our* shape
dataclasses — inferred from tensor shapes — so nothing is ever fetched from the hub
(`from_single_file` would fetch a config). The text encoder is ignored: AA2 conditions on CLIP image
embeddings, not text.

diffusers ships no diffusers -> LDM converter; `unet_to_ldm` / `vae_to_ldm` are our own key map,
used to write test fixtures in the real format and proved by round trip through diffusers' readers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from ..config import UNetShape, VAEShape
from ..errors import AA2WeightsError, worded
from .files import PICKLE_SUFFIXES, StateDict, load_strict, read_state_dict, write_pickle, write_safetensors

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
_VAE_FILE_PREFIXES = (VAE_PREFIX, "vae.")
_VAE_IGNORED = ("loss.", "model_ema.")  # discriminator and EMA copies in training-time VAE .ckpt files
_SD15_ATTENTION_LEVELS = (True, True, True, False)  # CrossAttnDownBlock2D x3 + DownBlock2D


@dataclass
class SD15Checkpoint:
    """The UNet and VAE of a single-file checkpoint, in diffusers' key names, with their shapes.

    `in_channels` is the UNet's conv_in width as found (4 for SD1.5, 9 for inpainting models):
    callers decide what they accept. `vae` is None for a file without `first_stage_model.*`.
    """

    unet: StateDict
    unet_shape: UNetShape
    in_channels: int
    vae: StateDict | None
    vae_shape: VAEShape | None
    source: str


# ---------------------------------------------------------------- reading


def read_sd15_checkpoint(path: str | Path) -> SD15Checkpoint:
    """Read an SD1.5 single-file checkpoint into diffusers-named UNet and VAE state dicts."""
    return convert_sd15_checkpoint(read_state_dict(path), str(path))


def convert_sd15_checkpoint(state: StateDict, source: str) -> SD15Checkpoint:
    """`read_sd15_checkpoint` for a state dict already in memory; `source` names it in messages."""
    _refuse_other_families(state, source)
    unet_ldm = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    unet_shape, in_channels = infer_ldm_unet_shape(unet_ldm, source)
    unet_config = unet_shape.diffusers_config(in_channels)
    unet = convert_ldm_unet_checkpoint({UNET_PREFIX + k: v for k, v in unet_ldm.items()}, unet_config)
    _refuse_leftovers(unet_ldm, unet_to_ldm(unet, skip_unknown=True), "UNet", source)
    vae_ldm = {k[len(VAE_PREFIX):]: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    vae_ldm = {k: v for k, v in vae_ldm.items() if not k.startswith(_VAE_IGNORED)}
    vae, vae_shape = (None, None)
    if vae_ldm:
        vae_shape = infer_ldm_vae_shape(vae_ldm, source)
        vae = convert_ldm_vae_checkpoint(vae_ldm, vae_shape.diffusers_config())
        _refuse_leftovers(vae_ldm, vae_to_ldm(vae, skip_unknown=True), "VAE", source)
    return SD15Checkpoint(unet, unet_shape, in_channels, vae, vae_shape, source)


def read_vae_file(path: str | Path) -> tuple[StateDict, VAEShape]:
    """A standalone VAE (models/vae) in LDM or diffusers key names -> diffusers state dict + shape."""
    return convert_vae_state_dict(read_state_dict(path), str(path))


def convert_vae_state_dict(state: StateDict, source: str) -> tuple[StateDict, VAEShape]:
    """`read_vae_file` for a state dict in memory. Accepts `first_stage_model.`/`vae.` prefixes."""
    if any(k.startswith(UNET_PREFIX) for k in state):
        raise AA2WeightsError(
            f"{source} is a whole checkpoint (UNet + VAE), not a VAE file. Load it as a checkpoint, or "
            + worded(comfyui="pick a VAE file from models/vae.", cli="pass a VAE file to --vae.")
        )
    for prefix in _VAE_FILE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(_VAE_IGNORED)}
    if "encoder.down.0.block.0.conv1.weight" in state:
        shape = infer_ldm_vae_shape(state, source)
        converted = convert_ldm_vae_checkpoint(state, shape.diffusers_config())
        _refuse_leftovers(state, vae_to_ldm(converted, skip_unknown=True), "VAE", source)
        return converted, shape
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in state:
        state = modern_vae_attention_names(state)
        return state, infer_diffusers_vae_shape(state, source)
    raise AA2WeightsError(f"{source} is not a VAE: it looks like {describe_weights(state)}.")


def infer_ldm_unet_shape(unet: StateDict, source: str) -> tuple[UNetShape, int]:
    """`(UNetShape, in_channels)` from an LDM UNet's tensor shapes (keys without `model.diffusion_model.`).

    Head count and norm groups leave no trace in shapes; every SD1.5-family UNet keeps 8 and 32.
    """
    if "input_blocks.0.0.weight" not in unet:
        raise AA2WeightsError(f"{source} has no UNet input layer (input_blocks.0.0.weight): it is incomplete.")
    in_channels = int(unet["input_blocks.0.0.weight"].shape[1])
    n_inputs = len({int(k.split(".")[1]) for k in unet if k.startswith("input_blocks.")})
    levels = 1 + sum(f"input_blocks.{i}.0.op.weight" in unet for i in range(n_inputs))
    layers, remainder = divmod(n_inputs - 1 - (levels - 1), levels)
    if remainder or layers < 1:
        raise AA2WeightsError(f"{source}: {n_inputs} UNet input blocks do not form SD1.5's block layout.")
    firsts = [1 + level * (layers + 1) for level in range(levels)]
    channels = tuple(int(unet[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]) for i in firsts)
    attention = tuple(f"input_blocks.{i}.1.proj_in.weight" in unet for i in firsts)
    if attention != _SD15_ATTENTION_LEVELS:
        raise AA2WeightsError(
            f"{source}: a UNet with {levels} levels and attention at levels {attention} is not SD1.5's layout "
            "(four levels, attention in the first three). Use an SD1.5-based checkpoint."
        )
    proj_in = unet["input_blocks.1.1.proj_in.weight"]
    cross_dim = int(unet["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape[1])
    if proj_in.ndim == 2 or cross_dim == 1024:
        kind = "linear" if proj_in.ndim == 2 else "conv"
        _refuse(source, "SD2.x", f"cross-attention width {cross_dim}, {kind} proj_in")
    if cross_dim == 2048:
        _refuse(source, "SDXL", "cross-attention width 2048")
    depth = len({k.split(".")[4] for k in unet if k.startswith("input_blocks.1.1.transformer_blocks.")})
    if depth != 1:
        raise AA2WeightsError(f"{source}: {depth} transformer layers per attention block; SD1.5 has 1.")
    out_channels = int(unet["out.2.weight"].shape[0]) if "out.2.weight" in unet else 0
    if out_channels != 4:
        raise AA2WeightsError(f"{source}: the UNet outputs {out_channels} channels; SD1.5 outputs 4 latent channels.")
    return UNetShape(block_out_channels=channels, layers_per_block=layers, cross_attention_dim=cross_dim), in_channels


def infer_ldm_vae_shape(vae: StateDict, source: str) -> VAEShape:
    """VAEShape from an LDM VAE's shapes (keys `encoder.down.N.block.M...`, no prefix)."""
    try:
        levels = len({int(k.split(".")[2]) for k in vae if k.startswith("encoder.down.")})
        layers = len({int(k.split(".")[4]) for k in vae if k.startswith("encoder.down.0.block.")})
        channels = tuple(int(vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels))
        latent = int(vae["decoder.conv_in.weight"].shape[1])
    except (KeyError, IndexError, ValueError) as error:
        raise AA2WeightsError(f"{source}: the VAE weights are incomplete (no {error}).") from error
    return VAEShape(block_out_channels=channels, layers_per_block=layers, latent_channels=latent)


def infer_diffusers_vae_shape(vae: StateDict, source: str) -> VAEShape:
    """VAEShape from a diffusers-named `AutoencoderKL` state dict."""
    try:
        levels = len({int(k.split(".")[2]) for k in vae if k.startswith("encoder.down_blocks.")})
        layers = len({int(k.split(".")[4]) for k in vae if k.startswith("encoder.down_blocks.0.resnets.")})
        channels = tuple(int(vae[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels))
        latent = int(vae["decoder.conv_in.weight"].shape[1])
    except (KeyError, IndexError, ValueError) as error:
        raise AA2WeightsError(f"{source}: the VAE weights are incomplete (no {error}).") from error
    return VAEShape(block_out_channels=channels, layers_per_block=layers, latent_channels=latent)


# ---------------------------------------------------------------- building models


def unet_from_state(state: StateDict, shape: UNetShape, in_channels: int, source: str) -> UNet2DConditionModel:
    """Build a `UNet2DConditionModel` on the meta device and take `state` strictly (no random init)."""
    with init_empty_weights():
        unet = UNet2DConditionModel(**shape.diffusers_config(in_channels))
    return load_strict(unet, state, "SD1.5 UNet", source).eval()


def vae_from_state(state: StateDict, shape: VAEShape, source: str) -> AutoencoderKL:
    """Build an `AutoencoderKL` on the meta device and take `state` strictly."""
    with init_empty_weights():
        vae = AutoencoderKL(**shape.diffusers_config())
    return load_strict(vae, state, "SD1.5 VAE", source).eval()


def load_sd15_checkpoint(path: str | Path) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """The diffusers UNet and VAE of an SD1.5 single-file checkpoint."""
    checkpoint = read_sd15_checkpoint(path)
    if checkpoint.vae is None or checkpoint.vae_shape is None:
        raise AA2WeightsError(f"{path} has a UNet but no VAE (first_stage_model.*): load a VAE file beside it.")
    unet = unet_from_state(checkpoint.unet, checkpoint.unet_shape, checkpoint.in_channels, str(path))
    return unet, vae_from_state(checkpoint.vae, checkpoint.vae_shape, str(path))


def load_vae_file(path: str | Path) -> AutoencoderKL:
    state, shape = read_vae_file(path)
    return vae_from_state(state, shape, str(path))


# ---------------------------------------------------------------- recognising other files


# The pack checkpoint's own top-level modules (aa2.models.aa2_model.AA2Model): a file with these
# keys but no pack metadata was written by this pack and re-saved by a tool that drops metadata.
PACK_PREFIXES = ("denoising_net.", "reference_net.")
PACK_WITHOUT_METADATA = (
    "an Animate Anyone 2 pack checkpoint whose metadata was lost (re-saved by another tool, e.g. to fp16?). "
    "The metadata holds its config, so it cannot be loaded as it is: use the file `python -m aa2 convert` "
    "wrote, or convert the original weights again with `python -m aa2 convert SRC DEST --dtype fp16`"
)


def describe_weights(state: StateDict | Iterable[str]) -> str:
    """A person's guess at what a state dict is, from its key names, for error messages."""
    keys = list(state)
    def has(*parts: str) -> bool:
        return any(part in key for key in keys for part in parts)
    if any(key.startswith(PACK_PREFIXES) for key in keys):  # before the motion module: a pack holds one
        return PACK_WITHOUT_METADATA
    if has("lora_", ".lora.", "lora_A", "lora_down", "lora_up"):
        return "a LoRA (load it with a LoRA loader, on top of a checkpoint)"
    if has("motion_modules.", "temporal_transformer"):
        return "an AnimateDiff motion module"
    if has("control_model.", "input_hint_block", "controlnet_cond_embedding"):
        return "a ControlNet"
    if has("double_blocks.", "joint_blocks.", "single_blocks.", "single_transformer_blocks"):
        return "a transformer-based diffusion model (SD3, Flux or similar), not an SD1.5 UNet"
    if has("vision_model.", "visual.transformer", "visual_projection", "embeddings.patch_embedding"):
        return "a CLIP vision (image encoder) model"
    if has("input_blocks.0.0.weight") and not has(UNET_PREFIX):
        return "a bare UNet in the original layout without the VAE (a models/unet file); use a full checkpoint"
    if has("down_blocks.0.resnets.0.conv1.weight") and has("time_embedding."):
        return "a UNet in diffusers' key layout (diffusion_pytorch_model.*); load it from a diffusers folder"
    if has("encoder.down.", "encoder.down_blocks.", "decoder.up.", "decoder.up_blocks."):
        return "a VAE (load it in the VAE slot)"
    if has("text_model.", "cond_stage_model.", "token_embedding"):
        return "a text encoder"
    return f"unrecognised weights (first keys: {keys[:3]})"


def _refuse_other_families(state: StateDict, source: str) -> None:
    if any(k.startswith(PACK_PREFIXES) for k in state):
        raise AA2WeightsError(f"{source} is {PACK_WITHOUT_METADATA}.")
    if any(k.startswith(("conditioner.embedders.", UNET_PREFIX + "label_emb.")) for k in state):
        _refuse(source, "SDXL", "it has SDXL's conditioner/label_emb keys")
    if any(k.startswith("cond_stage_model.model.") for k in state):
        _refuse(source, "SD2.x", "it has an OpenCLIP text encoder, cond_stage_model.model.*")
    if UNET_PREFIX + "input_blocks.0.0.weight" not in state:
        raise AA2WeightsError(
            f"{source} is not an SD1.5 checkpoint: it has no UNet (model.diffusion_model.*); it looks like "
            f"{describe_weights(state)}."
        )


def _refuse_leftovers(ldm: StateDict, converted_back: StateDict, what: str, source: str) -> None:
    """diffusers' converters drop keys they do not know without a word; we name them instead.

    Mapping the converted dict back to LDM names shows which of the file's keys were consumed.
    """
    leftovers = sorted(set(ldm) - set(converted_back))
    if leftovers:
        raise AA2WeightsError(
            f"{source}: {len(leftovers)} {what} keys are not part of an SD1.5 {what}, e.g. {leftovers[:3]}. "
            "The file holds extra layers (a merged add-on or another architecture); use a plain SD1.5 checkpoint."
        )


def _refuse(source: str, family: str, evidence: str) -> None:
    raise AA2WeightsError(
        f"{source} looks like {family} ({evidence}). Animate Anyone 2 here is built on SD1.5 "
        "(768-wide CLIP-L context): use an SD1.5-based checkpoint."
    )


def modern_vae_attention_names(state: StateDict) -> StateDict:
    """Old diffusers VAE files name the mid-block attention `query/key/value/proj_attn`."""
    renames = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
    out = {}
    for key, tensor in state.items():
        if ".mid_block.attentions." in key:
            for old, new in renames.items():
                key = key.replace(old, new)
            if tensor.ndim == 4 and not key.endswith("group_norm.weight"):
                tensor = tensor[:, :, 0, 0]
        out[key] = tensor
    return out


# ---------------------------------------------------------------- writing (diffusers -> LDM)

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
               "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(unet: StateDict, skip_unknown: bool = False) -> StateDict:
    """diffusers `UNet2DConditionModel` (SD1.5 layout) state dict -> LDM keys, without `model.diffusion_model.`.

    LDM numbers its blocks flat: `input_blocks.i` runs conv_in, then per level `layers` (resnet,
    attention) pairs and a downsampler; `output_blocks` has `layers + 1` entries per level, the
    last of which also carries the upsampler (at `.1` without attention, `.2` with it).
    A key with no LDM name raises, or is left out with `skip_unknown` (used to find what a file holds
    beyond SD1.5).
    """
    layers = len({k.split(".")[3] for k in unet if k.startswith("down_blocks.0.resnets.")})
    levels = len({k.split(".")[1] for k in unet if k.startswith("down_blocks.")})
    prefixes: list[tuple[str, str, dict[str, str]]] = []
    for level in range(levels):
        for j in range(layers):
            i = 1 + level * (layers + 1) + j
            prefixes.append((f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{i}.0.", _UNET_RESNET))
            prefixes.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{i}.1.", {}))
        i = 1 + level * (layers + 1) + layers
        prefixes.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{i}.0.op.", {}))
        up_attention = any(k.startswith(f"up_blocks.{level}.attentions.") for k in unet)
        for j in range(layers + 1):
            i = level * (layers + 1) + j
            prefixes.append((f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{i}.0.", _UNET_RESNET))
            prefixes.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{i}.1.", {}))
        i = level * (layers + 1) + layers
        slot = 2 if up_attention else 1
        prefixes.append((f"up_blocks.{level}.upsamplers.0.conv.", f"output_blocks.{i}.{slot}.conv.", {}))
    prefixes += [("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET),
                 ("mid_block.attentions.0.", "middle_block.1.", {}),
                 ("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET)]
    prefixes += [(old, new, {}) for old, new in _UNET_FIXED.items()]
    renamed = {key: _rename(key, prefixes, "UNet", skip_unknown) for key in unet}
    return {new: unet[key] for key, new in renamed.items() if new is not None}


def vae_to_ldm(vae: StateDict, skip_unknown: bool = False) -> StateDict:
    """diffusers `AutoencoderKL` state dict -> LDM keys, without `first_stage_model.`.

    LDM numbers decoder levels from the bottom (`up.{n-1}` runs first), and its mid-block
    attention uses 1x1 convolutions where diffusers has linear layers.
    """
    levels = len({k.split(".")[2] for k in vae if k.startswith("encoder.down_blocks.")})
    layers = len({k.split(".")[4] for k in vae if k.startswith("decoder.up_blocks.0.resnets.")})
    prefixes: list[tuple[str, str, dict[str, str]]] = []
    for level in range(levels):
        down, up = f"encoder.down_blocks.{level}.", f"decoder.up_blocks.{level}."
        ldm_down, ldm_up = f"encoder.down.{level}.", f"decoder.up.{levels - 1 - level}."
        for j in range(layers):
            prefixes.append((f"{down}resnets.{j}.", f"{ldm_down}block.{j}.", _VAE_RESNET))
            prefixes.append((f"{up}resnets.{j}.", f"{ldm_up}block.{j}.", _VAE_RESNET))
        prefixes.append((f"{down}downsamplers.0.conv.", f"{ldm_down}downsample.conv.", {}))
        prefixes.append((f"{up}upsamplers.0.conv.", f"{ldm_up}upsample.conv.", {}))
    for part in ("encoder", "decoder"):
        prefixes += [(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _VAE_RESNET),
                     (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _VAE_RESNET),
                     (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTENTION),
                     (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
                     (f"{part}.conv_in.", f"{part}.conv_in.", {}),
                     (f"{part}.conv_out.", f"{part}.conv_out.", {})]
    prefixes += [("quant_conv.", "quant_conv.", {}), ("post_quant_conv.", "post_quant_conv.", {})]
    out = {}
    for key, tensor in vae.items():
        new_key = _rename(key, prefixes, "VAE", skip_unknown)
        if new_key is None:
            continue
        if ".mid.attn_1." in new_key and new_key.endswith((".q.weight", ".k.weight", ".v.weight", ".proj_out.weight")):
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # linear -> 1x1 conv
        out[new_key] = tensor
    return out


def sd15_to_ldm(unet: StateDict, vae: StateDict | None, text_encoder: StateDict | None = None) -> StateDict:
    """A whole single-file checkpoint state dict: UNet, VAE and (optionally) CLIP text encoder."""
    state = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet).items()}
    if vae is not None:
        state.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae).items()})
    if text_encoder is not None:
        state.update({TEXT_PREFIX + k: v for k, v in text_encoder.items()})
    return state


def write_sd15_checkpoint(path: str | Path, unet: StateDict, vae: StateDict | None,
                          text_encoder: StateDict | None = None) -> Path:
    """Write a single-file checkpoint as ComfyUI users have them (`.safetensors`, or `.ckpt` pickle)."""
    return _write(path, sd15_to_ldm(unet, vae, text_encoder))


def write_vae_file(path: str | Path, vae: StateDict, layout: str = "ldm", prefix: str = "") -> Path:
    """Write a standalone VAE in `ldm` or `diffusers` key names, optionally under a prefix."""
    state = vae_to_ldm(vae) if layout == "ldm" else dict(vae)
    return _write(path, {prefix + k: v for k, v in state.items()})


def _rename(key: str, prefixes: list[tuple[str, str, dict[str, str]]], what: str, skip_unknown: bool) -> str | None:
    for old, new, inner in prefixes:
        if key.startswith(old):
            rest = key[len(old):]
            for a, b in inner.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
            return new + rest
    if skip_unknown:
        return None
    raise AA2WeightsError(f"no LDM name for the {what} key {key!r}: is it an SD1.5-layout diffusers model?")


def _write(path: str | Path, state: StateDict) -> Path:
    if Path(path).suffix.lower() not in PICKLE_SUFFIXES:
        return write_safetensors(path, state)
    # the layout of original SD .ckpt files: the weights under "state_dict", beside a step count
    return write_pickle(path, {"state_dict": {k: v.contiguous() for k, v in state.items()}, "global_step": 0})
