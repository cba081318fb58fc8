"""Frames in and out of files: videos, image folders, single images, masks (for the CLI and scripts).

Everything is read into aa2's core layouts — frames `[F, 3, H, W]` float 0..1 **RGB**, masks
`[F, H, W]` float 0/1 — and written from the pipeline's output layout `[F, H, W, 3]`. OpenCV
(`opencv-python-headless`) does the decoding and encoding; it works in BGR, which is converted at
this boundary and nowhere else.

Size rule (`output_size`), applied to every sequence of one run alike:
* an explicit `(H, W)` is used as given and must be a multiple of 64 (the UNet halves the 1/8
  latent three times);
* a single number `L` scales the source so its *longer* side is `L`;
* nothing: the source size, shrunk (never enlarged) so the longer side is at most `MAX_AUTO_SIDE`
  (768, SD1.5's upper training size);
then, for the last two, each side is rounded to the nearest multiple of 64 (at least 64). The
aspect ratio is kept up to that rounding, which stretches by at most 32 px per side; frames are
resized, never cropped, so every input stays aligned pixel for pixel with the others.
With `resize=False` the source must already be a multiple of 64, and the error names the size to use.

Image folders are read in *natural* order (`frame2.png` before `frame10.png`), the order every
frame exporter writes and a person reads.

Outputs are written atomically (`aa2.atomic`): a failed or interrupted write leaves no half file
and never destroys a file that was there before. A folder of PNG frames is one output too: it is
written beside its place and then replaces the folder there as a whole, as a video replaces a video,
so a shorter run never leaves an earlier run's last frames behind. Only a folder holding nothing but
such frames is replaced; one holding anything else is refused before any work (`check_output_path`).

Written videos use the `mp4v` (MPEG-4 Part 2) codec, which OpenCV's bundled FFmpeg encodes without
a system FFmpeg; H.264 (`avc1`) is not available in the pip wheels. A path without a suffix is
written as a folder of PNG frames (lossless).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Mapping

import cv2
import numpy as np
import torch
from einops import rearrange

from .atomic import atomic_folder, atomic_path, refuse_foreign_entries, write_bytes
from .errors import AA2Error, AA2InputError, size_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_AUTO_SIDE = 768
MULTIPLE = 64
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
FRAME_FILE = re.compile(r"frame_\d+\.png")  # what `write_video` names the frames of a folder output

Size = tuple[int, int] | int | None


# ------------------------------------------------------------------------------------ sizes


def output_size(height: int, width: int, size: Size = None, *, resize: bool = True) -> tuple[int, int]:
    """The `(H, W)` a `height × width` source is processed at, by the module's size rule."""
    if isinstance(size, tuple):
        h, w = size
        if h < MULTIPLE or w < MULTIPLE or h % MULTIPLE or w % MULTIPLE:
            raise AA2InputError(f"size {size_text(h, w)} must be a multiple of {MULTIPLE} on both sides; "
                                f"try --size {_nearest(h)}x{_nearest(w)} (--size takes height x width)")
        return h, w
    if not resize:
        if height % MULTIPLE or width % MULTIPLE:
            raise AA2InputError(
                f"the frames are {size_text(height, width)}, not a multiple of {MULTIPLE} (the VAE and UNet need "
                f"it), and resizing is off: resize them to {size_text(_nearest(height), _nearest(width))} or allow "
                "resizing"
            )
        return height, width
    longer = max(height, width)
    if size is None:
        scale = min(1.0, MAX_AUTO_SIDE / longer)
    else:
        if size < MULTIPLE or size % MULTIPLE:
            raise AA2InputError(f"size {size} must be a multiple of {MULTIPLE}; try {_nearest(size)}")
        scale = size / longer
    return _nearest(height * scale), _nearest(width * scale)


def parse_size(text: str | None) -> Size:
    """`"512x384"` -> (512, 384) (height x width); `"512"` -> 512 (longer side); None/"auto" -> None."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x×,]\s*(\d+)\s*)?", text.lower())
    if not match:
        raise AA2InputError(f"size {text!r} is not HxW (e.g. 768x512) or a single number for the longer side")
    if match.group(2) is None:
        return int(match.group(1))
    return int(match.group(1)), int(match.group(2))


def _nearest(value: float) -> int:
    return max(MULTIPLE, int(round(value / MULTIPLE)) * MULTIPLE)


# ------------------------------------------------------------------------------------ reading


def read_image(path: str | Path) -> torch.Tensor:
    """One image -> `[3, H, W]` float 0..1 RGB. Grey is repeated to three channels; 16-bit is
    scaled by 65535; transparent pixels are composited over white (a cut-out character on a plain
    background, the way reference images are usually prepared)."""
    path = _existing(path, "image")
    if path.is_dir():
        raise AA2InputError(f"{path} is a folder; expected one image file ({', '.join(IMAGE_SUFFIXES)})")
    data = np.fromfile(str(path), dtype=np.uint8)  # imdecode rather than imread: non-ASCII paths work
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise AA2InputError(f"could not read {path} as an image: use a PNG, JPEG, WebP, BMP or TIFF file")
    return _to_tensor(image)


def read_frames(
    path: str | Path,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A video file or a folder of images -> `[F, 3, H, W]` float 0..1 RGB.

    stride: keep every `stride`-th frame (1 = all). max_frames: keep at most this many (after the
    stride). size: resize every frame to this exact `(H, W)` (see `output_size` for choosing it).
    """
    frames = []
    for raw in _raw_frames(path, stride, max_frames):  # converted one by one: no full-size copy of the video
        frame = _to_tensor(raw)
        if size is not None:
            frame = _resize(frame, size)
        elif frames and frame.shape != frames[0].shape:
            raise AA2InputError(f"the frames of {path} have different sizes ({tuple(frames[0].shape[-2:])} and "
                                f"{tuple(frame.shape[-2:])}); give a size to resize them to")
        frames.append(frame)
    return torch.stack(frames)


def read_masks(
    path: str | Path,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """A mask video or folder -> `[F, H, W]` float 0/1: a pixel is in the mask when its brightness
    (the mean of R, G, B; or the alpha channel of an image that has one) is above `threshold`.
    Resizing happens before thresholding, so edges are resampled, not aliased."""
    if not 0.0 <= threshold < 1.0:
        raise AA2InputError(f"mask threshold must be in [0, 1), got {threshold}")
    masks = []
    for raw in _raw_frames(path, stride, max_frames):
        if raw.ndim == 3 and raw.shape[2] == 4:
            grey = torch.from_numpy(_unit(raw[:, :, 3]))  # a cut-out PNG: its alpha is the mask
        else:
            grey = _to_tensor(raw).mean(0)
        if size is not None:
            grey = _resize(grey[None], size)[0]
        masks.append(grey)
    shapes = {tuple(m.shape) for m in masks}
    if len(shapes) > 1:
        raise AA2InputError(f"the masks in {path} have different sizes {sorted(shapes)}; give a size to resize to")
    return (torch.stack(masks) > threshold).float()


def frame_size(path: str | Path) -> tuple[int, int]:
    """`(H, W)` of the first frame of a video, image folder or image, without reading the rest."""
    path = _existing(path, "video")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return tuple(read_image(path).shape[-2:])
    first = next(iter(_raw_frames(path, 1, 1)))
    return int(first.shape[0]), int(first.shape[1])


def frame_rate(path: str | Path) -> float | None:
    """The video's frames per second as its container states it; None for image folders and files
    that state none."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() in IMAGE_SUFFIXES:
        return None
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None


def check_frame_counts(counts: Mapping[str, int]) -> int:
    """All named sequences must have one length; return it, or say which differ and how to fix it."""
    lengths = set(counts.values())
    if len(lengths) <= 1:
        return next(iter(lengths), 0)
    shortest = min(lengths)
    listing = ", ".join(f"{name} {n}" for name, n in counts.items())
    raise AA2InputError(
        f"the inputs have different frame counts ({listing}); every sequence must have one frame per output "
        f"frame. Trim the longer ones to the same frames, or pass --max-frames {shortest} to use the first "
        f"{shortest} of each (with --stride, after striding)."
    )


def _raw_frames(path: str | Path, stride: int, max_frames: int | None) -> Iterator[np.ndarray]:
    """uint8/uint16 arrays in OpenCV's layout (H, W[, C]) BGR(A), from a video or image folder."""
    if stride < 1:
        raise AA2InputError(f"stride must be at least 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise AA2InputError(f"max_frames must be at least 1, got {max_frames}")
    path = _existing(path, "video or image folder")
    count = 0
    for frame in _folder_frames(path, stride, max_frames) if path.is_dir() else _video_frames(path, stride, max_frames):
        count += 1
        yield frame
    if count == 0:
        raise AA2InputError(f"no frames could be read from {path}")


def _folder_frames(folder: Path, stride: int, max_frames: int | None):
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=natural_key)
    if not files:
        raise AA2InputError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    files = files[::stride][:max_frames]
    for file in files:
        data = np.fromfile(str(file), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if image is None:
            raise AA2InputError(f"could not read {file} as an image (in the frame folder {folder})")
        yield image


def _video_frames(path: Path, stride: int, max_frames: int | None):
    if path.suffix.lower() in IMAGE_SUFFIXES:  # one image is a one-frame sequence
        image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED) if path.stat().st_size else None
        if image is None:
            raise AA2InputError(f"could not read {path} as an image: use a PNG, JPEG, WebP, BMP or TIFF file")
        yield image
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AA2InputError(
                f"could not open {path} as a video: convert it to an H.264 .mp4, or export it as a folder of PNG frames"
            )
        index = kept = 0
        while max_frames is None or kept < max_frames:
            if index % stride:
                ok = capture.grab()  # skipped frames are not converted to images
            else:
                ok, frame = capture.read()
                if ok:
                    kept += 1
                    yield frame
            if not ok:
                break
            index += 1
        if kept == 0:
            raise AA2InputError(
                f"{path} opened but no frame could be decoded: convert it to an H.264 .mp4, or export it as a folder "
                "of PNG frames"
            )
    finally:
        capture.release()


def natural_key(path: Path) -> list:
    """Sort key that orders embedded numbers by value: frame2 < frame10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", path.name) if part]


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise AA2InputError(f"{what} not found: {path}")
    return path


def _unit(array: np.ndarray) -> np.ndarray:
    """Integer pixels -> float32 0..1 by their type's range (8- or 16-bit)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """OpenCV image (H, W), (H, W, 3) BGR or (H, W, 4) BGRA -> `[3, H, W]` float 0..1 RGB."""
    pixels = _unit(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    elif pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:]
        pixels = pixels[:, :, :3] * alpha + (1.0 - alpha)  # over white
    rgb = np.ascontiguousarray(pixels[:, :, 2::-1])
    return rearrange(torch.from_numpy(rgb), "h w c -> c h w").contiguous()


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`[C, H, W]` -> `[C, *size]`: area averaging when shrinking (no aliasing of thin skeleton
    lines), bilinear when enlarging."""
    height, width = size
    if tuple(image.shape[-2:]) == (height, width):
        return image
    shrink = height * width < image.shape[-2] * image.shape[-1]
    array = np.ascontiguousarray(rearrange(image, "c h w -> h w c").numpy())
    out = cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out = out.reshape(height, width, image.shape[0])  # OpenCV drops a single channel axis
    return rearrange(torch.from_numpy(np.ascontiguousarray(out)), "h w c -> c h w").clamp(0, 1)


# ------------------------------------------------------------------------------------ writing


def check_output_path(path: str | Path) -> Path:
    """Say before any work whether `write_video` can write `path`."""
    path = Path(path).expanduser()
    if path.suffix and path.suffix.lower() not in _FOURCC:
        raise AA2InputError(f"cannot write {path.suffix!r} videos; use one of {', '.join(_FOURCC)}, or a path without "
                            "a suffix for a folder of PNG frames")
    if path.suffix and path.is_dir():
        raise AA2InputError(f"{path} is a folder; give a video file name such as {path / 'animation.mp4'}")
    if not path.suffix and path.exists() and not path.is_dir():
        raise AA2InputError(f"{path} is a file; a path without a suffix is written as a folder of PNG frames: give "
                            "a folder, or a video name such as animation.mp4")
    existing = next(parent for parent in path.absolute().parents if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise AA2InputError(f"cannot write {path}: {existing} is not a folder this user can write to")
    if not path.suffix:
        refuse_foreign_entries(Path(os.path.realpath(path)), is_frame_file)
    return path


def is_frame_file(path: Path) -> bool:
    """Whether `path` is a frame `write_video` writes into a folder output (so a new run may replace it)."""
    return FRAME_FILE.fullmatch(path.name) is not None and path.is_file() and not path.is_symlink()


def write_video(path: str | Path, frames: torch.Tensor, fps: float = 8.0) -> Path:
    """`frames [F, H, W, 3]` float 0..1 RGB -> a video file (mp4v for .mp4/.mov/.m4v/.mkv, MJPG for
    .avi), or a folder of numbered PNGs when `path` has no suffix. Returns the path written."""
    path = Path(path).expanduser()
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise AA2InputError(f"frames to write must be [F, H, W, 3] with F >= 1, got {shape}")
    if not fps > 0:
        raise AA2InputError(f"fps must be positive, got {fps}")
    pixels = (frames.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()[..., ::-1]  # RGB->BGR
    if path.suffix == "":
        _write_frame_folder(path, pixels)
        return path
    suffix = path.suffix.lower()
    if suffix not in _FOURCC:
        raise AA2InputError(f"cannot write {suffix!r} videos; use one of {', '.join(_FOURCC)}, or a folder path for PNGs")
    height, width = pixels.shape[1:3]
    with atomic_path(path, keep_suffix=True) as temporary:  # OpenCV picks the container from the suffix
        writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*_FOURCC[suffix]), float(fps), (width, height))
        try:
            if not writer.isOpened():
                raise AA2Error(f"OpenCV could not open a {_FOURCC[suffix]} video writer for {path}; write a folder of "
                               "PNG frames instead (an output path without a suffix)")
            for frame in pixels:
                writer.write(np.ascontiguousarray(frame))
        finally:
            writer.release()
        if Path(temporary).stat().st_size == 0:
            raise AA2Error(f"writing {path} produced no data; write a folder of PNG frames instead (no suffix)")
    return path


def _write_frame_folder(path: Path, pixels: np.ndarray) -> None:
    """`pixels [F, H, W, 3]` uint8 BGR as numbered PNGs in a folder that replaces `path` whole."""
    check_output_path(path)  # before encoding anything: a folder of the user's own files is never replaced
    digits = max(5, len(str(len(pixels))))
    with atomic_folder(path, owned=is_frame_file) as folder:
        for i, frame in enumerate(pixels):
            ok, data = cv2.imencode(".png", np.ascontiguousarray(frame))
            if not ok:
                raise AA2Error(f"could not encode frame {i} as PNG")
            (folder / f"frame_{i:0{digits}d}.png").write_bytes(data.tobytes())


def write_image(path: str | Path, image: torch.Tensor) -> Path:
    """`image [3, H, W]` float 0..1 RGB -> an image file (format from the suffix)."""
    path = Path(path).expanduser()
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    bgr = np.ascontiguousarray(rearrange(pixels, "c h w -> h w c").numpy()[..., ::-1])
    ok, data = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise AA2InputError(f"cannot write an image with suffix {path.suffix!r}; use .png or .jpg")
    return write_bytes(path, data.tobytes())
