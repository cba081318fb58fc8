"""What ComfyUI requires of a classic node class, checked without ComfyUI.

Mirrors what the server does with a node (nodes.py / execution.py of ComfyUI 0.3.64): it reads
INPUT_TYPES for the UI and validation, calls FUNCTION with the inputs as keyword arguments, and
expects a tuple as long as RETURN_TYPES.
"""

from __future__ import annotations

import inspect

import torch

# Types ComfyUI core (or the packs the issue names) define; anything else must be the pack's own.
HOST_TYPES = {"IMAGE", "MASK", "LATENT", "NOISE", "SAMPLER", "SIGMAS", "POSE_KEYPOINT", "INT", "FLOAT",
              "STRING", "BOOLEAN", "MODEL", "VAE", "CLIP_VISION"}
MENU = "AnimateAnyone2/"


def contract_problems(cls: type) -> list[str]:
    """Every way `cls` breaks the node contract (empty when it is a valid node class)."""
    problems = []
    for attr in ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION", "CATEGORY", "DESCRIPTION"):
        if not hasattr(cls, attr):
            problems.append(f"no {attr}")
    if problems:
        return problems
    if not cls.CATEGORY.startswith(MENU):
        problems.append(f"category {cls.CATEGORY!r} is outside the {MENU} menu")
    if not isinstance(cls.DESCRIPTION, str) or len(cls.DESCRIPTION) < 20:
        problems.append("no real DESCRIPTION")
    outputs = cls.RETURN_TYPES
    if not isinstance(outputs, tuple) or not all(isinstance(t, str) for t in outputs):
        problems.append(f"RETURN_TYPES must be a tuple of str, got {outputs!r}")
    problems += [f"output type {t} is neither a host type nor AA2_-prefixed" for t in outputs
                 if t not in HOST_TYPES and not t.startswith("AA2_")]
    for attr in ("RETURN_NAMES", "OUTPUT_TOOLTIPS"):
        if hasattr(cls, attr) and len(getattr(cls, attr)) != len(outputs):
            problems.append(f"{attr} has {len(getattr(cls, attr))} entries for {len(outputs)} outputs")
    function = getattr(cls, cls.FUNCTION, None)
    if not callable(function):
        return problems + [f"FUNCTION {cls.FUNCTION!r} is not a method"]
    parameters = inspect.signature(function).parameters
    # ComfyUI passes inputs as keyword arguments, so a **kwargs parameter takes any of them.
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    spec = cls.INPUT_TYPES()
    if set(spec) - {"required", "optional", "hidden"}:
        problems.append(f"unknown INPUT_TYPES sections {set(spec) - {'required', 'optional', 'hidden'}}")
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            problems += [f"{name}: {p}" for p in _input_problems(entry)]
            if name not in parameters and not takes_any:
                problems.append(f"{name}: not a parameter of {cls.FUNCTION}()")
            elif name in parameters and section == "optional" and parameters[name].default is inspect.Parameter.empty:
                problems.append(f"{name}: optional input without a default in {cls.FUNCTION}()")
    return problems


def _input_problems(entry) -> list[str]:
    if not isinstance(entry, tuple) or not 1 <= len(entry) <= 2:
        return [f"spec must be (type,) or (type, options), got {entry!r}"]
    kind, options = entry[0], entry[1] if len(entry) == 2 else {}
    problems = [] if options.get("tooltip") else ["no tooltip"]
    if isinstance(kind, list):
        if not all(isinstance(choice, str) for choice in kind):
            problems.append("dropdown entries must be str")
        if "default" in options and kind and options["default"] not in kind:
            problems.append(f"default {options['default']!r} is not among the choices")
        return problems
    if not isinstance(kind, str):
        return problems + [f"type must be str or list, got {kind!r}"]
    if kind not in HOST_TYPES and not kind.startswith("AA2_"):
        problems.append(f"type {kind} is neither a host type nor AA2_-prefixed")
    if kind in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        default = options.get("default")
        if default is None or low is None or high is None:
            problems.append("number without default/min/max")
        elif not low <= default <= high:
            problems.append(f"default {default} outside [{low}, {high}]")
        if kind == "INT" and not all(isinstance(v, int) for v in (default, low, high)):
            problems.append("INT with non-integer default/min/max")
        if options.get("step", 1) <= 0:
            problems.append("step must be > 0")
    return problems


# Core pieces the pack's outputs and inputs meet, re-stated from ComfyUI 0.3.64 (a real ComfyUI is
# not importable in the suite: it is on no package registry). Each keeps exactly the part of the
# host's code that touches the data; memory management, tiling and dtypes are left out.

class HostVAE:
    """`comfy.sd.VAE.decode` for an SD1.5 VAE (comfy/sd.py): the LATENT's samples go to the
    autoencoder's decoder as they are — no scaling factor — then `(x + 1) / 2` clamped, channels last.

    `autoencoder` is a diffusers AutoencoderKL (the pack's own VAE); ComfyUI's first_stage_model
    holds the same weights under LDM names, and its `decode(z)` is diffusers' `decode(z).sample`.
    """

    def __init__(self, autoencoder) -> None:
        self.first_stage_model = autoencoder

    def decode(self, samples_in):
        param = next(self.first_stage_model.parameters())
        out = self.first_stage_model.decode(samples_in.to(param.device, param.dtype)).sample.float()
        return torch.clamp((out + 1.0) / 2.0, min=0.0, max=1.0).movedim(1, -1)


class VAEDecode:
    """nodes.py `VAEDecode.decode`, line for line."""

    def decode(self, vae, samples):
        images = vae.decode(samples["samples"])
        if len(images.shape) == 5:  # combine batches
            images = images.reshape(-1, images.shape[-3], images.shape[-2], images.shape[-1])
        return (images,)


class RandomNoise:
    """comfy_extras/nodes_custom_sampler.py `Noise_RandomNoise` (what the RandomNoise node returns),
    with comfy.sample.prepare_noise's generator (`torch.manual_seed(seed)`, the same stream)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generate_noise(self, input_latent):
        latent_image = input_latent["samples"]
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout,
                           generator=generator, device="cpu")


class EmptyNoise:
    """`Noise_EmptyNoise` (the DisableNoise node): zeros shaped like the latent."""

    seed = 0

    def generate_noise(self, input_latent):
        latent_image = input_latent["samples"]
        return torch.zeros(latent_image.shape, dtype=latent_image.dtype, layout=latent_image.layout, device="cpu")
