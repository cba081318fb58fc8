"""Command line: `python -m aa2 {animate,demo,convert,make-tiny-weights,info}`.

Errors the pack raises on purpose (`AA2Error`) are printed as their message, without a traceback,
and exit with status 2: they are instructions for a person, worded for the command line (options,
not nodes: `aa2.errors.interface`). Ctrl-C exits with 130; during `animate` the first one stops
sampling at the next step (see `aa2.animate_command`).

Every argument is checked before anything is loaded, and no output may be one of the inputs (or
lie inside an input folder): an output written over the driving video would destroy it. The one
exception is what only the model knows (its motion window, its schedule's length) when its files do
not state it (a pack checkpoint does): that is checked right after the load, before any sampling.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Mapping

from .errors import AA2Error, AA2InputError, AA2WeightsError, interface, size_text


def refuse_overwriting_inputs(out: Path, inputs: Mapping[str, Path | None]) -> None:
    """Refuse an output that is one of the inputs (also through a link), lies inside an input folder,
    or, written as a folder of frames, would hold an input."""
    target = _real(out)
    for option, path in inputs.items():
        if path is None or not str(path):
            continue
        source = _real(path)
        if target == source or (out.exists() and Path(path).exists() and os.path.samefile(out, path)):
            raise AA2InputError(f"the output {out} is the {option} input: writing it would destroy that input. "
                                "Choose another output path.")
        if source in target.parents:
            raise AA2InputError(f"the output {out} is inside the {option} folder {path}: it would be written among "
                                "that input's files. Choose a path outside it.")
        if not out.suffix and target in source.parents:
            raise AA2InputError(f"the output folder {out} holds the {option} input {path}: PNG frames written there "
                                "would mix with (or replace) it. Choose an empty folder.")


def _real(path: Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _convert(args: argparse.Namespace) -> int:
    from .weights.checkpoint import save_checkpoint
    from .weights.sources import ModelSources, load_model

    destination = Path(args.destination).expanduser()
    if destination.suffix.lower() != ".safetensors":
        raise AA2InputError(f"DST {destination} must end in .safetensors: the pack checkpoint is a safetensors file")
    if destination.is_dir():
        raise AA2InputError(f"DST {destination} is a folder; give a file name such as {destination / 'aa2.safetensors'}")
    sources = ModelSources.from_path(Path(args.source))
    for name in ("motion_module", "image_encoder", "vae"):
        value = getattr(args, name)
        if value:
            sources = sources.replace(**{name: Path(value)})
    refuse_overwriting_inputs(destination, {"SRC": sources.base, "--motion-module": sources.motion_module,
                                            "--image-encoder": sources.image_encoder, "--vae": sources.vae})
    model = load_model(sources)
    dtype = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}[args.dtype]
    import torch

    out = save_checkpoint(model, destination, dtype=getattr(torch, dtype) if dtype else None)
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

    path = Path(args.path).expanduser()
    if not path.exists():
        raise AA2WeightsError(f"not found: {path}")
    print(describe(path))
    return 0


def _sources(args: argparse.Namespace):
    from .animate_command import resolve_models_path
    from .weights.sources import ModelSources

    sources = ModelSources.from_path(resolve_models_path(args.models))
    for name in ("motion_module", "image_encoder", "vae"):
        value = getattr(args, name)
        if value:
            sources = sources.replace(**{name: Path(value)})
    return sources


def _settings(args: argparse.Namespace):
    from .pipeline.inputs import SamplingSettings

    return SamplingSettings(
        steps=args.steps, cfg=args.cfg, seed=args.seed, clip_length=args.clip_length,
        motion_frames=args.motion_frames, overlap=args.overlap, environment=args.environment,
        paste_environment=args.paste_environment, feather=args.feather, vae_chunk=args.vae_chunk,
        offload="model" if getattr(args, "low_vram", False) else "none", sampler=args.sampler,
    )


def _animate(args: argparse.Namespace) -> int:
    import torch

    from .animate_command import (InputFiles, ReadOptions, check_request, check_settings_fit, config_before_load,
                                  load_for_device, load_inputs, pick_device, pick_dtype, render, source_fps)
    from .pipeline.assemble import ConditioningParts, parts_to_use
    from .video_io import check_output_path, parse_size

    settings = _settings(args)
    settings.check()
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise AA2InputError(f"--fps must be a positive number, got {args.fps:g}")
    files = InputFiles(**{name: Path(getattr(args, name)).expanduser() if getattr(args, name) else None
                          for name in ("reference", "pose", "video", "mask", "depth", "objects", "object_mask")})
    sources = _sources(args)
    refuse_overwriting_inputs(Path(args.out).expanduser(), {
        **{f"--{name.replace('_', '-')}": path for name, path in vars(files).items()},
        "--models": sources.base, "--motion-module": sources.motion_module,
        "--image-encoder": sources.image_encoder, "--vae": sources.vae,
    })
    out = check_output_path(args.out)
    options = ReadOptions(size=parse_size(args.size), resize=not args.no_resize, stride=args.stride,
                          max_frames=args.max_frames, depth=args.depth_kind, empty_mask=args.empty_mask,
                          mask_threshold=args.mask_threshold)
    check_request(files, options)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    missing = [f"{name}: {path}" for name, path in vars(sources).items() if isinstance(path, Path) and not path.exists()]
    if missing:
        raise AA2WeightsError("weight files not found:\n  " + "\n  ".join(missing))
    check_settings_fit(settings, config_before_load(sources))  # the model's limits, where its files say them
    inputs = load_inputs(files, options)  # every input checked before the weights are read
    known = ConditioningParts.of_base(sources.base)  # a request these weights cannot serve: refused before the load
    if known is not None:
        parts_to_use(known, depth=inputs.depth is not None, objects=inputs.objects is not None)
    if files.video is not None and files.mask is None:
        print("note: --video without --mask: the environment is not used (the character mask says what to "
              "remove from it)", file=sys.stderr)
    # low VRAM: the weights wait in RAM and the pipeline takes each part to the device for its phase
    model = load_for_device(sources, torch.device("cpu") if args.low_vram else device, dtype)
    check_settings_fit(settings, model.config)  # the limits the files did not say, before any sampling
    height, width = inputs.size
    print(f"animating {inputs.frames} frames at {size_text(height, width)} on {device.type} "
          f"({str(dtype).removeprefix('torch.')}), sampler {args.sampler}, {settings.steps} steps"
          + (", low VRAM (one part of the model on the device at a time)" if args.low_vram else ""))
    fps = args.fps if args.fps is not None else source_fps(files, args.stride)
    return render(model, inputs, settings, out, fps, show_progress=not args.quiet, device=device)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .pipeline.inputs import SamplingSettings

    for option, value in (("--frames", args.frames), ("--steps", args.steps), ("--clip-length", args.clip_length)):
        if value is not None and value < 1:
            raise AA2InputError(f"{option} must be at least 1, got {value}")
    if args.clip < 0:
        raise AA2InputError(f"--clip counts held-out clips from 0, got {args.clip}")
    SamplingSettings(cfg=args.cfg, seed=args.seed).check()  # before any weights are written or read
    return run_demo(
        Path(args.out), weights=Path(args.weights).expanduser() if args.weights else None,
        random_weights=args.random_weights, motion=args.motion, clip=args.clip, frames=args.frames, size=args.size,
        steps=args.steps, cfg=args.cfg, seed=args.seed, clip_length=args.clip_length, environment=args.environment,
        paste_environment=args.paste_environment, inputs_format=args.inputs_format,
        reference_framing=args.reference_framing, models_dir=Path(args.models_dir) if args.models_dir else None,
        inputs_dir=Path(args.inputs_dir) if args.inputs_dir else None, show_progress=not args.quiet,
    )


def _sampling_options(parser: argparse.ArgumentParser, steps: int) -> None:
    from .pipeline.inputs import SamplingSettings
    from .sampling.registry import SAMPLER_CHOICES

    d = SamplingSettings()
    group = parser.add_argument_group("sampling")
    group.add_argument("--steps", type=int, default=steps)
    group.add_argument("--cfg", type=float, default=d.cfg, help="guidance scale (1 turns guidance off)")
    group.add_argument("--seed", type=int, default=d.seed)
    group.add_argument("--sampler", choices=SAMPLER_CHOICES, default=d.sampler,
                       help="default: DDIM under the checkpoint's own schedule; the others are diffusers' schedulers "
                       "under that schedule, and k_* k-diffusion-style samplers")
    group.add_argument("--clip-length", dest="clip_length", type=int, default=None,
                       help="frames per clip (default: what the motion module was trained on, 16)")
    group.add_argument("--motion-frames", dest="motion_frames", type=int, default=d.motion_frames,
                       help="frames of the previous clip carried into the next as latents")
    group.add_argument("--overlap", type=int, default=d.overlap, help="frames re-generated and cross-faded between clips")
    group.add_argument("--environment", choices=["auto", "input", "blend", "input+blend", "off"], default=d.environment,
                       help="auto: a model input with AA2 weights, latent blending with weights that never learned it")
    group.add_argument("--paste-environment", dest="paste_environment", action="store_true",
                       help="put the driving video's exact pixels back outside the feathered mask")
    group.add_argument("--feather", type=int, default=d.feather, help="pixels of soft edge for --paste-environment")
    group.add_argument("--vae-chunk", dest="vae_chunk", type=int, default=d.vae_chunk,
                       help="frames per VAE call (default 0: on a GPU as many as fit under the run's peak so far; "
                       "one on the CPU and with --low-vram)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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

    animate = commands.add_parser(
        "animate",
        help="animate a character image with a driving video's motion, in its environment",
        description="Videos may be files (mp4, mov, avi, ...) or folders of images (read in natural order). "
        "Every sequence must have the same number of frames. Size rule: --size HxW is used as given; "
        "--size N scales the longer side to N; without --size the pose's size is kept, shrunk to at most 768 on "
        "the longer side; then each side is rounded to a multiple of 64.",
    )
    inputs = animate.add_argument_group("inputs")
    inputs.add_argument("--reference", required=True, help="the character image")
    inputs.add_argument("--pose", required=True, help="skeleton images (DWPose/OpenPose style), one per frame")
    inputs.add_argument("--video", help="the driving video: its environment is kept (needs --mask)")
    inputs.add_argument("--mask", help="the raw character mask of the driving video (white = character); it is made "
                        "shape-agnostic (paper eq. 2) before use")
    inputs.add_argument("--depth", help="a depth video of the driving person")
    inputs.add_argument("--depth-kind", dest="depth_kind", choices=["inverse", "depth", "structured"], default="inverse",
                        help="inverse: near is bright (Depth Anything, MiDaS); depth: far is bright; structured: "
                        "already reduced to the skeleton")
    inputs.add_argument("--objects", help="the object sequence, already cut out")
    inputs.add_argument("--object-mask", dest="object_mask", help="object masks: cut the objects out of --video")
    inputs.add_argument("--mask-threshold", dest="mask_threshold", type=float, default=0.5)
    inputs.add_argument("--empty-mask", dest="empty_mask", choices=["error", "previous", "keep"], default="error",
                        help="frames whose character mask is empty: stop with an error, reuse the nearest frame's "
                        "mask, or keep them unmasked")
    inputs.add_argument("--size", help="HxW (e.g. 768x512), or one number for the longer side; default auto")
    inputs.add_argument("--no-resize", dest="no_resize", action="store_true",
                        help="never resize: inputs must already be a multiple of 64")
    inputs.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    inputs.add_argument("--max-frames", dest="max_frames", type=int, help="use at most this many frames (after --stride)")
    weights = animate.add_argument_group("weights")
    weights.add_argument("--models", required=True, help="pack checkpoint, Moore-AnimateAnyone folder, SD1.5 file, "
                         "diffusers folder, or a ComfyUI models folder with one checkpoint in animateanyone2/")
    weights.add_argument("--motion-module", dest="motion_module", help="AnimateDiff motion module file")
    weights.add_argument("--image-encoder", dest="image_encoder", help="CLIP vision file or image_encoder folder")
    weights.add_argument("--vae", help="VAE file or folder that overrides the base's")
    weights.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    weights.add_argument("--low-vram", dest="low_vram", action="store_true",
                         help="keep only the part of the model that runs now on the device (CLIP, ReferenceNet, "
                         "VAE or the denoising UNet) and the rest in RAM: about half the weights' VRAM, slower")
    weights.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                         help="auto: fp16 on a GPU, fp32 on the CPU")
    _sampling_options(animate, steps=20)
    animate.add_argument("--out", required=True, help="output video (.mp4, .mov, .avi) or a folder for PNG frames")
    animate.add_argument("--fps", type=float, help="output frame rate (default: the driving video's / --stride, else 8)")
    animate.set_defaults(run=_animate)

    from .synthworld import MOTIONS

    demo = commands.add_parser(
        "demo", help="animate a held-out SynthWorld clip with the shipped small trained weights and score it "
        "against ground truth (without them: tiny random weights, which prove only the install)",
        description="With trained weights (the shipped aa2/synthworld/weights/aa2-synthworld.safetensors, or "
        "--weights): makes a held-out SynthWorld clip, writes it as a user's files, runs `animate` on them and "
        "writes metrics.json beside the video (psnr, ssim, psnr_environment, psnr_character, psnr_band, "
        "silhouette_iou against the clip's ground truth). Without them, or with --random-weights: tiny random "
        "weights on a hand-drawn stick figure, end to end; the output is coloured noise and proves the install.",
    )
    demo.add_argument("--out", default="aa2-demo.mp4", help="output video; metrics.json is written beside it")
    which = demo.add_mutually_exclusive_group()
    which.add_argument("--weights", help="a pack checkpoint to animate with (default: the shipped SynthWorld weights "
                       "when present)")
    which.add_argument("--random-weights", dest="random_weights", action="store_true",
                       help="tiny random weights even when trained ones ship: proves the install, animates nothing")
    demo.add_argument("--motion", choices=MOTIONS, default="push",
                      help="the held-out clip's motion (trained weights; push and carry move a box, sit a chair)")
    demo.add_argument("--clip", type=int, default=0, help="which held-out SynthWorld clip (its scene and character)")
    demo.add_argument("--frames", type=int, help="video length (default 16 with trained weights; 32 with random: "
                      "clips chained by a motion frame)")
    demo.add_argument("--size", type=int, choices=[64, 128], help="frame side (default 128 with the shipped SynthWorld "
                      "weights, what they were trained at; 64 with --weights; 128 with random weights)")
    demo.add_argument("--steps", type=int, help="DDIM steps (default 20 with trained weights, 6 with random)")
    demo.add_argument("--cfg", type=float, default=2.5, help="guidance scale (1 turns guidance off)")
    demo.add_argument("--seed", type=int, default=0, help="sampling seed (and the random weights')")
    demo.add_argument("--clip-length", dest="clip_length", type=int,
                      help="frames per clip (default: the motion modules' own, 8 for SynthWorld, 16 for tiny)")
    demo.add_argument("--environment", choices=["auto", "input", "blend", "input+blend", "off"],
                      help="default input with trained weights (the model takes the environment, as trained; "
                      "nothing blended), input+blend with random ones")
    demo.add_argument("--reference-framing", dest="reference_framing", choices=["character", "frame"],
                      default="character", help="trained weights: the reference as a portrait of the figure "
                      "(character, how the shipped weights were trained) or the whole scene (frame, for weights "
                      "trained with data.reference_framing: frame)")
    demo.add_argument("--paste-environment", dest="paste_environment", action="store_true",
                      help="put the driving video's pixels back outside the feathered mask (trained weights; "
                      "the random-weights demo always does)")
    demo.add_argument("--inputs-format", dest="inputs_format", choices=["png", "mp4"],
                      help="how the driving video, masks and depth are written: png folders (lossless; the default "
                      "with trained weights: mp4v costs a 64-pixel clip about 26 dB) or mp4 files (the default with "
                      "random weights)")
    demo.add_argument("--models-dir", dest="models_dir", help="random weights: where the tiny weights go (reused "
                      "if already there); default: a temporary folder")
    demo.add_argument("--inputs-dir", dest="inputs_dir", help="keep the input files (videos, masks, skeletons) here")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    info = commands.add_parser("info", help="say what kind of weight file or folder PATH is")
    info.add_argument("path")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interface("cli"):
            return args.run(args)
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during `animate`, or one outside sampling
        print("\ninterrupted", file=sys.stderr)
        return 130
