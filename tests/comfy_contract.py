"""What ComfyUI requires of a classic node class, checked without ComfyUI.

Mirrors what the server does with a node (nodes.py / execution.py of ComfyUI 0.3.64): it reads
INPUT_TYPES for the UI and validation, calls FUNCTION with the inputs as keyword arguments, and
expects a tuple as long as RETURN_TYPES.
"""

from __future__ import annotations

import inspect

# Types ComfyUI core (or the packs the issue names) define; anything else must be the pack's own.
HOST_TYPES = {"IMAGE", "MASK", "LATENT", "SAMPLER", "SIGMAS", "POSE_KEYPOINT", "INT", "FLOAT",
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
