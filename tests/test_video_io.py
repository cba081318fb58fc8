"""Reading and writing frames: videos, image folders, masks, the size rule, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import rearrange

from aa2.errors import AA2InputError
from aa2.video_io import (
    check_frame_counts,
    check_output_path,
    frame_rate,
    output_size,
    parse_size,
    read_frames,
    read_image,
    read_masks,
    write_image,
    write_video,
)

# mp4v (MPEG-4 Part 2, 4:2:0 chroma) is lossy. Measured on these smooth frames: mean absolute error
# ~0.010, max ~0.11 on the one-pixel colour edges that chroma subsampling smears. 0.03 (~8/255) on
# the mean leaves room for other FFmpeg builds and still fails a channel swap or a frame shift.
CODEC_MEAN_TOLERANCE = 0.03


def _smooth_frames(frames: int = 6, height: int = 64, width: int = 96) -> torch.Tensor:
    """[F, H, W, 3]: a gradient (red across, green down) and a red block that moves 8 px per frame."""
    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None].expand(height, width)
    out = []
    for i in range(frames):
        frame = torch.stack([0.2 + 0.6 * x, 0.2 + 0.6 * y, torch.full_like(x, 0.2 + 0.1 * i)], -1).clone()
        frame[16:40, 10 + 8 * i : 34 + 8 * i] = torch.tensor([0.9, 0.3, 0.3])
        out.append(frame)
    return torch.stack(out)


def test_mp4_round_trip_keeps_count_size_order_and_colours(tmp_path):
    frames = _smooth_frames()
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    back = rearrange(read_frames(path), "f c h w -> f h w c")
    assert back.shape == frames.shape and back.dtype == torch.float32
    errors = (back - frames).abs().mean(dim=(1, 2, 3))
    assert errors.max() < CODEC_MEAN_TOLERANCE
    # Each frame is nearer its own source than its neighbour's (no shifted or duplicated frames) ...
    neighbours = (back[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    assert (errors[1:] < neighbours).all()
    # ... and RGB stays RGB: with red and blue swapped the error is far above the tolerance.
    assert (back.flip(-1) - frames).abs().mean() > 3 * CODEC_MEAN_TOLERANCE
    assert frame_rate(path) == pytest.approx(12)


def test_stride_and_max_frames_pick_frames_in_order(tmp_path):
    frames = torch.linspace(0, 1, 10)[:, None, None, None].expand(10, 64, 64, 3).contiguous()
    path = write_video(tmp_path / "ramp.mp4", frames)
    levels = read_frames(path, stride=3).mean(dim=(1, 2, 3))
    assert levels.shape == (4,)  # frames 0, 3, 6, 9
    torch.testing.assert_close(levels, frames[::3].mean(dim=(1, 2, 3)), atol=CODEC_MEAN_TOLERANCE, rtol=0)
    assert read_frames(path, stride=3, max_frames=2).shape[0] == 2


def test_image_folder_is_read_in_natural_order_and_png_is_lossless(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    values = {"frame10.png": 10, "frame2.png": 2, "frame1.png": 1, "frame9.png": 9}
    for name, value in values.items():
        write_image(folder / name, torch.full((3, 8, 8), value / 255))
    (folder / "notes.txt").write_text("not a frame")
    frames = read_frames(folder)
    assert [round(float(f[0, 0, 0]) * 255) for f in frames] == [1, 2, 9, 10]  # not 1, 10, 2, 9


def test_folder_output_round_trips_exactly(tmp_path):
    frames = torch.randint(0, 256, (3, 16, 24, 3)).float() / 255
    folder = write_video(tmp_path / "out_frames", frames)
    assert sorted(p.name for p in folder.iterdir()) == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert torch.equal(rearrange(read_frames(folder), "f c h w -> f h w c"), frames)


def test_read_image_is_rgb_and_composites_transparency_over_white(tmp_path):
    red = torch.zeros(3, 4, 4)
    red[0] = 1
    image = read_image(write_image(tmp_path / "red.png", red))
    assert torch.equal(image, red)
    import cv2

    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[:2, :, :] = (255, 0, 0, 255)  # opaque blue on top, fully transparent below
    cv2.imwrite(str(tmp_path / "cut.png"), bgra)
    cut = read_image(tmp_path / "cut.png")
    assert torch.equal(cut[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(cut[:, 3, 0], torch.ones(3))


def test_masks_are_thresholded_brightness_or_alpha(tmp_path):
    grey = torch.tensor([0.2, 0.45, 0.55, 0.9])[:, None, None, None].expand(4, 8, 8, 3).contiguous()
    folder = write_video(tmp_path / "mask_frames", grey)
    masks = read_masks(folder)
    assert masks.shape == (4, 8, 8)
    assert masks.amax(dim=(1, 2)).tolist() == [0.0, 0.0, 1.0, 1.0] and masks.unique().tolist() == [0.0, 1.0]
    assert read_masks(folder, threshold=0.3).amax(dim=(1, 2)).tolist() == [0.0, 1.0, 1.0, 1.0]
    import cv2

    alpha = np.zeros((8, 8, 4), np.uint8)
    alpha[:, :4, 3] = 255  # colour black everywhere: only the alpha channel says where the object is
    (tmp_path / "alpha").mkdir()
    cv2.imwrite(str(tmp_path / "alpha" / "0.png"), alpha)
    assert read_masks(tmp_path / "alpha")[0, :, :4].all() and not read_masks(tmp_path / "alpha")[0, :, 4:].any()


def test_masks_resize_before_thresholding(tmp_path):
    mask = torch.zeros(1, 32, 32, 3)
    mask[:, 8:24, 8:24] = 1
    resized = read_masks(write_video(tmp_path / "m", mask), size=(64, 64))
    assert resized.shape == (1, 64, 64)
    assert resized[0, 16:48, 16:48].all() and resized.sum() == pytest.approx(32 * 32, rel=0.1)


@pytest.mark.parametrize("source,size,expected", [
    ((1080, 1920), None, (448, 768)),  # shrunk to 768 on the long side, 432 rounded to 448
    ((64, 64), None, (64, 64)),  # small sources are never enlarged by default
    ((300, 200), 512, (512, 320)),  # longer side to 512; 341 rounds to 320
    ((300, 200), (512, 384), (512, 384)),  # an explicit size is used as given
    ((20, 20), None, (64, 64)),  # at least 64
])
def test_size_rule(source, size, expected):
    assert output_size(*source, size) == expected


def test_size_rule_output_is_valid_and_keeps_aspect_within_rounding():
    for height in range(40, 1500, 37):
        for width in (200, 513, 1280):
            h, w = output_size(height, width)
            assert h % 64 == 0 and w % 64 == 0 and max(h, w) <= 768 + 32
            scale = min(1, 768 / max(height, width))
            assert abs(h - height * scale) <= 32 or h == 64
            assert abs(w - width * scale) <= 32 or w == 64


def test_size_errors_name_a_valid_size():
    with pytest.raises(AA2InputError, match=r"resize them to 64×128 \(width × height\)"):
        output_size(100, 64, resize=False)
    assert output_size(128, 64, resize=False) == (128, 64)
    with pytest.raises(AA2InputError, match="try --size 512x384"):
        output_size(64, 64, (500, 384))
    assert parse_size("768x512") == (768, 512) and parse_size("512") == 512 and parse_size("auto") is None
    with pytest.raises(AA2InputError, match="HxW"):
        parse_size("big")


def test_unreadable_and_missing_files_are_input_errors(tmp_path):
    with pytest.raises(AA2InputError, match="not found"):
        read_frames(tmp_path / "nope.mp4")
    (tmp_path / "fake.mp4").write_text("this is not a video")
    with pytest.raises(AA2InputError, match=r"fake\.mp4"):
        read_frames(tmp_path / "fake.mp4")
    (tmp_path / "fake.png").write_text("this is not an image")
    with pytest.raises(AA2InputError, match="could not read"):
        read_image(tmp_path / "fake.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AA2InputError, match="holds no images"):
        read_frames(tmp_path / "empty")
    with pytest.raises(AA2InputError, match=r"'\.gif'"):
        check_output_path(tmp_path / "out.gif")


def test_frame_count_mismatch_says_the_counts_and_the_fix():
    assert check_frame_counts({"pose": 12, "video": 12}) == 12
    with pytest.raises(AA2InputError) as error:
        check_frame_counts({"pose": 12, "video": 10, "mask": 12})
    message = str(error.value)
    assert "pose 12" in message and "video 10" in message and "--max-frames 10" in message
