"""`python -m aa2 animate`: files in, an animation out (the command-line face of the pipeline).

From the user's files to `AnimationInputs` (paper §3.1 inputs, prepared as in §3.2 and §3.4):
* the reference image, any size (the pipeline resizes it to the output size);
* the pose: skeleton images, as a video or an image folder;
* the driving video is the *environment*; with `--mask` (the raw character mask, e.g. from SAM2)
  the character is removed from it through `shape_agnostic_mask` at the paper's inference setting
  (kh = h/10, kw = w/10 blocks, §3.2);
* `--depth`: a depth video, reduced to structured depth on the skeleton (§3.4) unless it already is;
* `--objects`: the object sequence, already cut out; or `--object-mask` to cut it out of the
  driving video (§3.2).
Every input is read, resized by one size rule (`aa2.video_io.output_size`) and checked before the
weights are loaded, so a bad input costs seconds, not a model load.

Ctrl-C asks the pipeline to stop at the next step (its cancel callback), then nothing is written
and the command exits with 130; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from .config import AA2Config, SchedulerSettings
from .errors import AA2Cancelled, AA2InputError, AA2WeightsError, size_text
from .pipeline.assemble import DEPTH_KINDS, assemble_inputs
from .pipeline.inputs import AnimationInputs, SamplingSettings
from .video_io import (
    check_frame_counts,
    frame_rate,
    frame_size,
    output_size,
    read_frames,
    read_image,
    read_masks,
    write_video,
)

if TYPE_CHECKING:
    from .pipeline.animate import AnimationResult

EMPTY_MASK = ("error", "previous", "keep")
DEFAULT_FPS = 8.0  # AnimateDiff's training frame rate; used when no input states one
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class InputFiles:
    """The files of one animation; only `reference` and `pose` are required."""

    reference: Path
    pose: Path
    video: Path | None = None
    mask: Path | None = None
    depth: Path | None = None
    objects: Path | None = None
    object_mask: Path | None = None


@dataclass(frozen=True)
class ReadOptions:
    size: tuple[int, int] | int | None = None  # see aa2.video_io.output_size
    resize: bool = True
    stride: int = 1
    max_frames: int | None = None
    depth: str = "inverse"  # what the depth video holds: "inverse" (near = bright), "depth", "structured"
    empty_mask: str = "error"  # frames where the character mask is empty
    mask_threshold: float = 0.5


def load_inputs(files: InputFiles, options: ReadOptions = ReadOptions()) -> AnimationInputs:
    """Read, resize and check every input; return the pipeline's `AnimationInputs` (validated)."""
    from .conditioning.masks import shape_agnostic_mask

    check_request(files, options)
    for name, path in vars(files).items():  # every file exists before any is decoded
        if path is not None and not Path(path).exists():
            raise AA2InputError(f"--{name.replace('_', '-')} not found: {path}")
    height, width = output_size(*frame_size(files.pose), options.size, resize=options.resize)
    size = (height, width)
    sequence = dict(stride=options.stride, max_frames=options.max_frames, size=size if options.resize else None)

    reference = read_image(files.reference)
    pose = read_frames(files.pose, **sequence)
    video = read_frames(files.video, **sequence) if files.video else None
    mask = read_masks(files.mask, threshold=options.mask_threshold, **sequence) if files.mask else None
    depth = read_frames(files.depth, **sequence) if files.depth else None
    objects = read_frames(files.objects, **sequence) if files.objects else None
    object_mask = read_masks(files.object_mask, threshold=options.mask_threshold, **sequence) if files.object_mask else None

    named = {"pose": pose, "video": video, "mask": mask, "depth": depth, "objects": objects, "object mask": object_mask}
    check_frame_counts({name: int(x.shape[0]) for name, x in named.items() if x is not None})
    for name, x in named.items():
        if x is not None and tuple(x.shape[-2:]) != (height, width):
            raise AA2InputError(
                f"{name} frames are {size_text(*x.shape[-2:])} but the pose is {size_text(height, width)}, and "
                "resizing is off: "
                "make every sequence the same size, or allow resizing"
            )

    if object_mask is not None and not bool((object_mask > 0.5).any()):
        raise AA2InputError("the object mask is empty in every frame: check the file, or leave --object-mask out")
    if mask is not None:
        mask = shape_agnostic_mask(mask, empty=options.empty_mask)  # kh = h/10, kw = w/10 (§3.2 inference)
    # the weights are not loaded yet, so every part is assumed here; `animate` refuses (policy "refuse",
    # worded for the CLI) what the loaded weights have no part for, before sampling
    inputs = assemble_inputs(reference, pose, depth=depth, depth_kind=options.depth,
                             environment=video if mask is not None else None, mask=mask, objects=objects,
                             object_mask=object_mask, driving=video).inputs
    inputs.validate()
    return inputs


def check_request(files: InputFiles, options: ReadOptions) -> None:
    """The options and which files go together, before any file is opened."""
    if options.stride < 1:
        raise AA2InputError(f"stride must be at least 1 (1 uses every frame), got {options.stride}")
    if options.max_frames is not None and options.max_frames < 1:
        raise AA2InputError(f"max-frames must be at least 1, got {options.max_frames}")
    if not 0.0 <= options.mask_threshold < 1.0:  # also refuses NaN
        raise AA2InputError(f"mask threshold must be in [0, 1), got {options.mask_threshold}")
    if files.objects is not None and files.object_mask is not None:
        raise AA2InputError("give --objects (frames already cut out) or --object-mask (cut from --video), not both")
    if files.object_mask is not None and files.video is None:
        raise AA2InputError("--object-mask cuts the objects out of the driving video: give --video too")
    if files.mask is not None and files.video is None:
        raise AA2InputError("--mask removes the character from the driving video: give --video too")
    if options.size is not None and not options.resize:
        raise AA2InputError("give a size to resize to, or turn resizing off, not both")
    if options.depth not in DEPTH_KINDS:
        raise AA2InputError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}, got {options.depth!r}")
    if options.empty_mask not in EMPTY_MASK:
        raise AA2InputError(f"empty-mask policy must be one of {', '.join(EMPTY_MASK)}, got {options.empty_mask!r}")


def source_fps(files: InputFiles, stride: int = 1) -> float:
    """The driving video's frame rate (else the pose video's), divided by the stride; else 8."""
    for path in (files.video, files.pose):
        fps = frame_rate(path) if path is not None else None
        if fps:
            return fps / stride
    return DEFAULT_FPS


# ------------------------------------------------------------------------------------ model


def resolve_models_path(path: str | Path) -> Path:
    """The base weights: a file or folder the loaders take, or a ComfyUI `models/` folder holding
    exactly one pack checkpoint in `animateanyone2/`."""
    path = Path(path).expanduser()
    packs = path / "animateanyone2"
    if path.is_dir() and packs.is_dir() and not (path / "unet").is_dir():
        from .weights.checkpoint import is_aa2_checkpoint

        found = sorted(p for p in packs.glob("*.safetensors") if is_aa2_checkpoint(p))
        if len(found) == 1:
            return found[0]
        if found:
            raise AA2WeightsError(f"{packs} holds {len(found)} pack checkpoints ({', '.join(p.name for p in found)}): "
                                  "pass the one to use to --models")
        raise AA2WeightsError(f"{packs} holds no pack checkpoint (.safetensors written by `python -m aa2 convert`): "
                              "pass a checkpoint, Moore-AnimateAnyone folder, SD1.5 file or diffusers folder to --models")
    return path


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AA2InputError("--device cuda, but this torch build sees no CUDA GPU: use --device cpu (or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise AA2InputError("--device mps, but Apple's Metal backend is not available here: use --device cpu (or auto)")
    if name not in DEVICES:
        raise AA2InputError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto": fp16 on a GPU, fp32 on the CPU (where half precision is slow or unsupported)."""
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise AA2InputError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


# ------------------------------------------------------------------------------------ running


@contextmanager
def ctrl_c_cancels() -> Iterator[Callable[[], bool]]:
    """While inside, the first Ctrl-C only asks to stop (the yielded callback turns True), so the
    pipeline stops between steps and leaves the models usable; a second one interrupts at once.
    The previous handler is always restored."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print("\nCtrl-C: stopping after the current step (press it again to stop at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


class ProgressBar:
    """Steps of all clips as one bar (tqdm when installed, else a plain line on stderr)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.bar, self.done, self.total = enabled, None, 0, 0

    def __call__(self, done: int, total: int, preview: torch.Tensor | None = None) -> None:
        self.done, self.total = done, total
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="step", desc="denoising", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.update(done - self.bar.n)
        else:
            print(f"\rdenoising: step {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def render(model, inputs: AnimationInputs, settings: SamplingSettings, out: Path, fps: float, *,
           show_progress: bool = True, on_result: Callable[[AnimationResult], None] | None = None,
           device: torch.device | None = None) -> int:
    """Run the pipeline under Ctrl-C cancellation and write `out`; the exit status (0, or 130 if
    cancelled). `settings.sampler` names any sampler of `aa2.sampling.registry`. `on_result` is
    given the frames before the video codec touches them (the demo scores them). `device`: where the
    model computes (None: where it is); with `settings.offload` "model" its parts rest on the CPU."""
    from .pipeline.animate import animate

    bar = ProgressBar(show_progress)
    started = time.perf_counter()
    try:
        with ctrl_c_cancels() as cancel:
            result = animate(model, inputs, settings, progress=bar, cancel=cancel, device=device)
    except AA2Cancelled:
        bar.close()
        print(f"cancelled after {bar.done} of {bar.total} steps; nothing was written. The models are unchanged.",
              file=sys.stderr)
        return 130
    bar.close()
    if on_result is not None:
        on_result(result)
    written = write_video(out, result.frames, fps)
    print(f"wrote {written} ({result.frames.shape[0]} frames, {fps:g} fps) in {time.perf_counter() - started:.1f} s")
    return 0


def config_before_load(sources) -> AA2Config | None:
    """The config the model will load with, when the files tell it without a tensor being read: a
    pack checkpoint's stored one, unless --motion-module replaces the motion modules (whose window
    only their tensors tell). None for the other bases, whose config the load works out."""
    from .weights.checkpoint import read_checkpoint_config
    from .weights.sources import base_kind

    base = Path(sources.base)
    if sources.motion_module is not None or base.suffix.lower() != ".safetensors" or base_kind(base) != "aa2":
        return None
    return read_checkpoint_config(base)


def check_settings_fit(settings: SamplingSettings, config: AA2Config | None) -> int | None:
    """The settings against the model's limits: its schedule's training timesteps (the most steps)
    and its motion modules' window (clip length, motion frames, overlap); the clip length to use.
    Without a config only the step bound that every SD1.5-family checkpoint shares is checked
    (None), and the rest waits for the loaded model's, still before any sampling."""
    if config is None:
        settings.check_steps(SchedulerSettings().num_train_timesteps)
        return None
    settings.check_steps(config.scheduler.num_train_timesteps)
    return settings.validate(config.motion.trained_frames, config.motion.max_seq_length)


def load_for_device(sources, device: torch.device, dtype: torch.dtype):
    """`load_model(sources)` moved to the device and dtype (weights are loaded in fp32, then cast)."""
    from .weights.sources import load_model

    return load_model(sources).to(device=device, dtype=dtype)
