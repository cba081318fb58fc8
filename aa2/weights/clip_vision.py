"""The CLIP image encoder: a diffusers-style `image_encoder/` folder, or a ComfyUI clip_vision file.

AA2's context is the *projected* CLIP image embedding (transformers'
`CLIPVisionModelWithProjection.image_embeds`), so the projection width must equal the UNet's
cross-attention width: 768 for SD1.5, i.e. CLIP ViT-L/14. The ViT-H and ViT-bigG files many
ComfyUI users keep for IP-Adapter project to 1024 / 1280 and are refused by name.

Single files come in transformers' key layout (`vision_model.*`, `visual_projection.weight`), as
ComfyUI keeps them in models/clip_vision, possibly under a prefix or beside a text tower; or in
OpenCLIP's layout (`visual.transformer.resblocks.*`), which ComfyUI converts the same way we do
here (`comfy/clip_vision.py: convert_to_transformers`).

Head counts leave no trace in tensor shapes: OpenAI and LAION CLIP use 64-wide heads, which is
the default; pass `attention_heads` for anything else (the tiny test models).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ..config import ImageEncoderShape
from ..errors import AA2WeightsError
from .files import StateDict, load_strict, read_state_dict, write_safetensors
from .ldm import describe_weights

_BARE_PATCH = "embeddings.patch_embedding.weight"
_PATCH = "vision_model." + _BARE_PATCH
_OPEN_CLIP_PATCH = "conv1.weight"
_OPEN_CLIP_MARK = "transformer.resblocks.0.attn.in_proj_weight"
_TEXT_PARTS = ("text_model.", "text_projection", "logit_scale")  # a full CLIPModel file's other half
_NOT_PERSISTENT = ("vision_model.embeddings.position_ids",)  # older transformers saved this buffer
_KNOWN = {  # (hidden, projection) -> name, for messages
    (1024, 768): "CLIP ViT-L/14",
    (768, 512): "CLIP ViT-B",
    (1280, 1024): "CLIP ViT-H/14 (as IP-Adapter and SVD use)",
    (1664, 1280): "CLIP ViT-bigG/14 (as IP-Adapter SDXL uses)",
}
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors", "pytorch_model.fp16.bin")


def read_clip_vision(path: str | Path, cross_attention_dim: int = 768,
                     attention_heads: int | None = None) -> tuple[StateDict, ImageEncoderShape]:
    """A CLIP vision tower with projection from a folder or a single file -> transformers state dict + shape."""
    path = Path(path)
    if path.is_dir():
        return read_clip_vision_folder(path, cross_attention_dim)
    return read_clip_vision_file(path, cross_attention_dim, attention_heads)


def read_clip_vision_file(path: str | Path, cross_attention_dim: int = 768,
                          attention_heads: int | None = None) -> tuple[StateDict, ImageEncoderShape]:
    """A single ComfyUI-style clip_vision file (transformers or OpenCLIP layout, any key prefix)."""
    state = to_transformers_layout(read_state_dict(path), str(path))
    return state, infer_image_encoder_shape(state, str(path), cross_attention_dim, attention_heads)


def read_clip_vision_folder(folder: str | Path, cross_attention_dim: int = 768) -> tuple[StateDict, ImageEncoderShape]:
    """A diffusers-style `image_encoder/` folder: `config.json` beside `model.safetensors` (or `.bin`).

    Read by hand rather than through `from_pretrained`, so nothing can reach the network and a
    misfit is reported with the file's name.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    weights = next((folder / name for name in WEIGHT_NAMES if (folder / name).is_file()), None)
    missing = ([] if config_path.is_file() else ["config.json"]) + ([] if weights else [f"{WEIGHT_NAMES[0]} (or .bin)"])
    if missing:
        raise AA2WeightsError(
            f"{folder} is not a complete image_encoder folder: {' and '.join(missing)} missing. It should "
            "hold config.json and model.safetensors, as in lambdalabs/sd-image-variations-diffusers."
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise AA2WeightsError(f"{config_path} cannot be read as JSON ({error}).") from error
    config = config.get("vision_config", config)  # a full CLIPModel config nests the vision half
    act = config.get("hidden_act", "quick_gelu")
    if act != "quick_gelu":
        raise AA2WeightsError(
            f"{config_path} says hidden_act={act!r}; the pack builds CLIP with quick_gelu, as OpenAI's "
            "ViT-L/14 has. Use an OpenAI CLIP ViT-L/14 image encoder."
        )
    state = to_transformers_layout(read_state_dict(weights), str(weights))
    return state, infer_image_encoder_shape(state, str(weights), cross_attention_dim, config.get("num_attention_heads"))


def to_transformers_layout(state: StateDict, source: str) -> StateDict:
    """Strip any prefix, drop a text tower, convert OpenCLIP's layout: keys of `CLIPVisionModelWithProjection`."""
    patch = next((k for k in state if k.endswith(_BARE_PATCH)), None)
    if patch is not None:
        # transformers 5 saves a bare CLIPVisionModel without the `vision_model.` level
        prefix = patch[: -len(_PATCH)] if patch.endswith(_PATCH) else patch[: -len(_BARE_PATCH)]
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        state = {k: v for k, v in state.items() if not k.startswith(_TEXT_PARTS + _NOT_PERSISTENT)}
        if "visual_projection.weight" not in state or not patch.endswith(_PATCH):
            raise AA2WeightsError(
                f"{source} is a CLIP vision tower without its projection (no visual_projection.weight), so it "
                "cannot give the projected image embedding AA2 needs. Use a file saved from "
                "CLIPVisionModelWithProjection (or a full CLIP model)."
            )
        return state
    mark = next((k for k in state if k.endswith(_OPEN_CLIP_MARK)), None)
    if mark is not None:
        return _open_clip_to_transformers(state, mark[: -len(_OPEN_CLIP_MARK)], source)
    raise AA2WeightsError(f"{source} is not a CLIP vision model: it looks like {describe_weights(state)}.")


def infer_image_encoder_shape(state: StateDict, source: str, cross_attention_dim: int = 768,
                              attention_heads: int | None = None) -> ImageEncoderShape:
    """ImageEncoderShape from tensor shapes; refuse a projection that does not fit the UNet's context."""
    patch = state[_PATCH]
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    projection = int(state["visual_projection.weight"].shape[0])
    if projection != cross_attention_dim:
        name = _KNOWN.get((hidden, projection), f"a CLIP vision model of width {hidden}")
        raise AA2WeightsError(
            f"{source} is {name}, whose image embedding is {projection} wide; the UNet's cross-attention takes "
            f"{cross_attention_dim}. SD1.5 needs CLIP ViT-L/14 (projection 768), e.g. the image_encoder of "
            "lambdalabs/sd-image-variations-diffusers or openai/clip-vit-large-patch14."
        )
    positions = int(state["vision_model.embeddings.position_embedding.weight"].shape[0])
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise AA2WeightsError(f"{source}: {positions} position embeddings are not a square grid plus a class token.")
    layers = len({k.split(".")[3] for k in state if k.startswith("vision_model.encoder.layers.")})
    if attention_heads is None:
        if hidden % 64:
            raise AA2WeightsError(
                f"{source}: width {hidden} is not a multiple of CLIP's 64-wide heads; the head count cannot be "
                "read from the file, so pass attention_heads."
            )
        attention_heads = hidden // 64
    return ImageEncoderShape(
        hidden_size=hidden,
        intermediate_size=int(state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=int(attention_heads),
        patch_size=patch_size,
        image_size=grid * patch_size,
        projection_dim=projection,
    )


def image_encoder_from_state(state: StateDict, shape: ImageEncoderShape, source: str) -> CLIPVisionModelWithProjection:
    """Build the transformers model without random init and take `state` strictly."""
    with init_empty_weights():  # buffers (position_ids) stay real: include_buffers is off by default
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**shape.transformers_config()))
    return load_strict(model, state, "CLIP vision model with projection", source).eval()


def load_clip_vision(path: str | Path, cross_attention_dim: int = 768,
                     attention_heads: int | None = None) -> CLIPVisionModelWithProjection:
    state, shape = read_clip_vision(path, cross_attention_dim, attention_heads)
    return image_encoder_from_state(state, shape, str(path))


def write_clip_vision_file(path: str | Path, state: StateDict, layout: str = "transformers", prefix: str = "") -> Path:
    """Write a clip_vision file as ComfyUI keeps them (`transformers`) or in OpenCLIP's layout (`open_clip`)."""
    if layout == "open_clip":
        state = transformers_to_open_clip(state)
    return write_safetensors(path, {prefix + k: v for k, v in state.items()})


# ---------------------------------------------------------------- OpenCLIP <-> transformers

_OPEN_CLIP_FIXED = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_OPEN_CLIP_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                    "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def _open_clip_to_transformers(state: StateDict, prefix: str, source: str) -> StateDict:
    """OpenCLIP's `visual.*` keys -> transformers'. The fused in-projection splits into q, k, v."""
    visual = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out: StateDict = {}
    for key, tensor in visual.items():
        if key in _OPEN_CLIP_FIXED:
            out[_OPEN_CLIP_FIXED[key]] = tensor
        elif key == "proj":
            out["visual_projection.weight"] = tensor.t().contiguous()  # OpenCLIP multiplies x @ proj
        elif key.startswith("transformer.resblocks."):
            _, _, index, rest = key.split(".", 3)
            base = f"vision_model.encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                for name, part in zip(_QKV, tensor.chunk(3, dim=0)):
                    out[f"{base}{name}.{rest[len('attn.in_proj_'):]}"] = part.contiguous()
                continue
            module, _, leaf = rest.rpartition(".")
            if module not in _OPEN_CLIP_BLOCK:
                raise _unconvertible(source, prefix + key)
            out[base + f"{_OPEN_CLIP_BLOCK[module]}.{leaf}"] = tensor
        else:
            raise _unconvertible(source, prefix + key)
    if "visual_projection.weight" not in out:
        raise AA2WeightsError(f"{source}: the OpenCLIP vision tower has no projection ({prefix}proj).")
    return out


def transformers_to_open_clip(state: StateDict) -> StateDict:
    """The inverse of `_open_clip_to_transformers`, with the `visual.` prefix: for test fixtures."""
    fixed = {v: k for k, v in _OPEN_CLIP_FIXED.items()}
    block = {v: k for k, v in _OPEN_CLIP_BLOCK.items()}
    out: StateDict = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key in fixed:
            out["visual." + fixed[key]] = tensor
        elif key == "visual_projection.weight":
            out["visual.proj"] = tensor.t().contiguous()
        elif key.startswith("vision_model.encoder.layers."):
            index, rest = key[len("vision_model.encoder.layers."):].split(".", 1)
            module, _, leaf = rest.rpartition(".")
            if module in _QKV:
                pending.setdefault(f"visual.transformer.resblocks.{index}.attn.in_proj_{leaf}", {})[module] = tensor
            else:
                out[f"visual.transformer.resblocks.{index}.{block[module]}.{leaf}"] = tensor
        else:
            raise AA2WeightsError(f"no OpenCLIP name for {key!r}")
    for key, parts in pending.items():
        out[key] = torch.cat([parts[name] for name in _QKV], dim=0)
    return out


def _unconvertible(source: str, key: str) -> AA2WeightsError:
    return AA2WeightsError(
        f"{source} is an OpenCLIP vision model with parts transformers' CLIP does not have (e.g. {key!r}); "
        "it cannot be converted simply. Use an OpenAI CLIP ViT-L/14 file in transformers' layout."
    )
