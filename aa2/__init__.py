"""Animate Anyone 2 (Hu et al., 2025) in plain torch + diffusers.

This package never imports ComfyUI: it is usable from scripts, the CLI (`python -m aa2`) and
`train/`. The ComfyUI adapters live in the pack's `nodes/` folder.
"""

__version__ = "0.1.0"
