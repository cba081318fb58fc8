"""Command line: `python -m aa2 {convert,make-tiny-weights,info}`.

Errors the pack raises on purpose (`AA2Error`) are printed as their message, without a traceback,
and exit with status 2: they are instructions for a person.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import AA2Error


def _convert(args: argparse.Namespace) -> int:
    from .weights.checkpoint import save_checkpoint
    from .weights.sources import ModelSources, load_model

    sources = ModelSources.from_path(Path(args.source))
    for name in ("motion_module", "image_encoder", "vae"):
        value = getattr(args, name)
        if value:
            sources = sources.replace(**{name: Path(value)})
    model = load_model(sources)
    dtype = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}[args.dtype]
    import torch

    out = save_checkpoint(model, Path(args.destination), dtype=getattr(torch, dtype) if dtype else None)
    print(f"wrote {out} ({model.config.fusion} fusion, {model.config.scheduler.prediction_type})")
    return 0


def _make_tiny_weights(args: argparse.Namespace) -> int:
    from .weights.tiny import make_tiny_weights

    written = make_tiny_weights(Path(args.directory), seed=args.seed)
    for path in written:
        print(path)
    print("These are tiny random weights for tests and demos: they load like real files but animate nothing.")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .weights.sources import describe

    print(describe(Path(args.path)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aa2", description="Animate Anyone 2 tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert",
        help="write the pack's .safetensors checkpoint from other weight formats",
        description="SRC: an SD1.5 single-file checkpoint, a diffusers folder, a Moore-AnimateAnyone "
        "folder (denoising_unet.pth, reference_unet.pth, pose_guider.pth, motion_module.pth) or a "
        "pack checkpoint; add the parts SRC lacks with the options.",
    )
    convert.add_argument("source")
    convert.add_argument("destination")
    convert.add_argument("--motion-module", dest="motion_module", help="AnimateDiff motion module file")
    convert.add_argument("--image-encoder", dest="image_encoder", help="CLIP vision file or image_encoder folder")
    convert.add_argument("--vae", help="VAE file that overrides the checkpoint's")
    convert.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp16")
    convert.set_defaults(run=_convert)

    tiny = commands.add_parser(
        "make-tiny-weights", help="write tiny random weights in every supported format (for tests and demos)"
    )
    tiny.add_argument("directory", help="a models folder laid out like ComfyUI's models/")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=_make_tiny_weights)

    info = commands.add_parser("info", help="say what kind of weight file or folder PATH is")
    info.add_argument("path")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
