"""LoadAA2Model: the model files a user has, picked from dropdowns, to one `AA2_MODEL`."""

from __future__ import annotations

from pathlib import Path

import torch

from ..aa2.errors import AA2InputError
from ..aa2.weights.moore import looks_like_moore_folder
from ..aa2.weights.sources import ModelSources, base_kind, load_model
from . import host

CATEGORY = "AnimateAnyone2/loaders"
FROM_BASE = "from base"

# What each input reads, folder by folder (also the wording of its error messages).
BASE_SLOT = {
    host.PACK_FOLDER: "Animate Anyone 2 checkpoints and Moore-AnimateAnyone / MIMO folders",
    "checkpoints": "SD1.5 checkpoints",
    "diffusers": "SD1.5 diffusers folders with unet/",
}
MOTION_SLOT = {"animatediff_models": "AnimateDiff SD1.5 motion modules, e.g. mm_sd_v15_v2.ckpt"}
CLIP_SLOT = {
    "clip_vision": "CLIP ViT-L/14 vision files with projection",
    "diffusers": "diffusers folders with image_encoder/",
}
VAE_SLOT = {
    "vae": "SD1.5 VAE files, e.g. vae-ft-mse-840000-ema-pruned.safetensors",
    "diffusers": "diffusers folders with vae/",
}

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _has(sub: str):
    return lambda path: (path / sub).is_dir()


def _clip_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def base_choices() -> list[str]:
    return (host.list_models(host.PACK_FOLDER, folders=looks_like_moore_folder)
            + host.list_models("checkpoints")
            + host.list_models("diffusers", files=False, folders=_has("unet")))


def motion_choices() -> list[str]:
    return [FROM_BASE] + host.list_models("animatediff_models")


def clip_choices() -> list[str]:
    return ([FROM_BASE] + host.list_models("clip_vision", folders=_clip_folder)
            + host.list_models("diffusers", files=False, folders=_has("image_encoder"), suffix="/image_encoder"))


def vae_choices() -> list[str]:
    return ([FROM_BASE] + host.list_models("vae")
            + host.list_models("diffusers", files=False, folders=_has("vae"), suffix="/vae"))


def model_sources(base: str, motion_module: str = FROM_BASE, clip_vision: str = FROM_BASE,
                  vae: str = FROM_BASE, fusion: str = "auto") -> ModelSources:
    """Dropdown names -> `ModelSources`; every name resolved only inside its slot's folders."""
    if fusion not in ("auto", "aa2", "full"):
        raise AA2InputError(f"fusion must be 'auto', 'aa2' or 'full'; got {fusion!r}.")
    return ModelSources(
        base=host.resolve_model(base, BASE_SLOT),
        motion_module=host.resolve_optional(motion_module, MOTION_SLOT, FROM_BASE),
        image_encoder=host.resolve_optional(clip_vision, CLIP_SLOT, FROM_BASE),
        vae=host.resolve_optional(vae, VAE_SLOT, FROM_BASE),
        fusion=None if fusion == "auto" else fusion,
    )


class LoadAA2Model:
    DESCRIPTION = (
        "Builds the Animate Anyone 2 model from the files you have. The base gives most of it: a pack "
        "checkpoint (everything), a Moore-AnimateAnyone / MIMO folder (both UNets, pose guider, motion), "
        "an SD1.5 checkpoint or a diffusers folder (UNets, VAE). The other inputs add or replace parts; "
        "if something is still missing the error says which file supplies it. Loaded once per choice."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AA2_MODEL",)
    RETURN_NAMES = ("aa2_model",)
    OUTPUT_TOOLTIPS = ("The assembled model (DenoisingNet, ReferenceNet, VAE, image encoder).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base": (base_choices(), {"tooltip": "Main weights. animateanyone2/: pack checkpoints and "
                                      "Moore-AnimateAnyone/MIMO folders; checkpoints/: SD1.5 files; "
                                      "diffusers/: SD1.5 diffusers folders."}),
            "motion_module": (motion_choices(), {"default": FROM_BASE, "tooltip": "AnimateDiff motion module "
                              "from models/animatediff_models; needed for SD1.5 and diffusers bases, "
                              "replaces the base's own otherwise."}),
            "clip_vision": (clip_choices(), {"default": FROM_BASE, "tooltip": "Image encoder for the reference: "
                            "a CLIP ViT-L/14 vision file (models/clip_vision) or a diffusers image_encoder."}),
            "vae": (vae_choices(), {"default": FROM_BASE, "tooltip": "VAE from models/vae or a diffusers "
                    "folder; 'from base' uses the base's own (Moore folders have none)."}),
            "fusion": (["auto", "aa2", "full"], {"default": "auto", "tooltip": "Reference attention: 'aa2' "
                       "(paper §3.3) or 'full' (Animate Anyone 1 style); 'auto' keeps what the base was "
                       "trained with."}),
            "precision": (["auto", *PRECISIONS], {"default": "auto", "tooltip": "Weight dtype; 'auto' "
                          "lets ComfyUI choose for your GPU (fp32 on CPU)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, base, motion_module=FROM_BASE, clip_vision=FROM_BASE, vae=FROM_BASE,
                   fusion="auto", precision="auto"):
        # ComfyUI already reruns when a choice changes; this also notices a file replaced in place.
        try:
            sources = model_sources(base, motion_module, clip_vision, vae, fusion)
        except Exception:
            return ""  # the run itself reports the problem
        return host.files_signature([sources.base, sources.motion_module, sources.image_encoder, sources.vae])

    def load(self, base, motion_module=FROM_BASE, clip_vision=FROM_BASE, vae=FROM_BASE,
             fusion="auto", precision="auto"):
        sources = model_sources(base, motion_module, clip_vision, vae, fusion)
        if precision != "auto" and precision not in PRECISIONS:
            raise AA2InputError(f"precision must be auto, fp32, fp16 or bf16; got {precision!r}.")
        dtype = host.preferred_dtype() if precision == "auto" else PRECISIONS[precision]
        model = load_model(sources)
        info = {"base": base, "kind": base_kind(sources.base), "motion_module": motion_module,
                "clip_vision": clip_vision, "vae": vae, "fusion": model.config.fusion}
        return (host.host_model(model, dtype, info),)


NODE_CLASS_MAPPINGS = {"LoadAA2Model": LoadAA2Model}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadAA2Model": "AA2 Load Model"}
