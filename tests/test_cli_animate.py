"""`python -m aa2 animate` and `python -m aa2 demo` end to end on tiny weights and small mp4 files."""

from __future__ import annotations

import os
import signal

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import aa2.animate_command as animate_command
from aa2.animate_command import resolve_models_path
from aa2.cli import main
from aa2.conditioning.masks import shape_agnostic_mask
from aa2.demo import make_scene, write_scene
from aa2.video_io import frame_rate, read_frames, read_masks, write_video

FRAMES, SIZE = 6, 64
# Both the driving video and the output went through the lossy mp4v codec (mean error ~0.01 each,
# see test_video_io); 0.04 allows two generations of it.
TWO_CODEC_GENERATIONS = 0.04


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The demo's synthetic figure-and-box scene, 6 frames of 64x64, written as a user's files."""
    data = make_scene(FRAMES, SIZE)
    return data, write_scene(data, tmp_path_factory.mktemp("scene"))


@pytest.fixture
def pack(tiny_weights):
    return str(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors")


def _argv(files, pack, out, *extra):
    return ["animate", "--reference", str(files.reference), "--pose", str(files.pose), "--video", str(files.video),
            "--mask", str(files.mask), "--models", pack, "--out", str(out), "--quiet", *extra]


def test_animate_writes_every_frame_and_keeps_the_environment_outside_the_mask(scene, pack, tmp_path):
    _, files = scene
    out = tmp_path / "out.mp4"
    argv = _argv(files, pack, out, "--depth", str(files.depth), "--object-mask", str(files.object_mask),
                 "--steps", "2", "--clip-length", "4", "--sampler", "ddim", "--paste-environment", "--feather", "2")
    assert main(argv) == 0  # 6 frames in clips of 4: two clips, one motion frame carried
    result = read_frames(out)
    assert result.shape == (FRAMES, 3, SIZE, SIZE)

    driving = read_frames(files.video)
    agnostic = shape_agnostic_mask(read_masks(files.mask))
    # Pasting reaches 2 * feather px beyond the shape-agnostic mask; a margin of 5 px is clear of it.
    near = F.max_pool2d(agnostic[:, None], 11, stride=1, padding=5)[:, 0] > 0
    outside = rearrange(~near, "f h w -> f 1 h w").expand_as(result)
    assert (result - driving).abs()[outside].mean() < TWO_CODEC_GENERATIONS
    inside = rearrange(agnostic > 0.5, "f h w -> f 1 h w").expand_as(result)
    assert (result - driving).abs()[inside].mean() > 3 * TWO_CODEC_GENERATIONS  # generated there, not copied


def test_stride_max_frames_and_k_sampler_set_the_output_length_and_rate(scene, pack, tmp_path):
    _, files = scene
    out = tmp_path / "strided.mp4"
    argv = _argv(files, pack, out, "--objects", str(files.video), "--steps", "1", "--stride", "2",
                 "--max-frames", "2", "--sampler", "k_euler", "--cfg", "1")
    assert main(argv) == 0
    assert read_frames(out).shape[0] == 2
    assert frame_rate(out) == pytest.approx(frame_rate(files.video) / 2)


def test_demo_runs_end_to_end_and_says_it_proves_only_the_install(tiny_weights, tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    argv = ["demo", "--out", str(out), "--frames", "5", "--size", "64", "--clip-length", "4", "--steps", "1",
            "--models-dir", str(tiny_weights), "--inputs-dir", str(tmp_path / "inputs"), "--quiet"]
    assert main(argv) == 0
    assert read_frames(out).shape == (5, 3, 64, 64)
    said = capsys.readouterr().out
    assert "RANDOM weights" in said and "prove the install" in said
    assert {p.name for p in (tmp_path / "inputs").iterdir()} >= {"driving.mp4", "character_mask.mp4", "depth.mp4",
                                                                  "object_mask.mp4", "pose", "reference.png"}


def test_ctrl_c_cancels_between_steps_writes_nothing_and_restores_the_handler(scene, pack, tmp_path, monkeypatch,
                                                                              capsys):
    _, files = scene
    from aa2.pipeline import animate as pipeline

    real = pipeline.animate

    def animate_then_press_ctrl_c(*args, progress=None, **kwargs):
        def progress_and_interrupt(done, total, preview):
            progress(done, total, preview)
            if done == 1:
                os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C does, to the whole process

        return real(*args, progress=progress_and_interrupt, **kwargs)

    monkeypatch.setattr(pipeline, "animate", animate_then_press_ctrl_c)  # the command looks it up at call time
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "never.mp4"
    status = main(_argv(files, pack, out, "--steps", "3", "--clip-length", "4"))
    assert status == 130
    assert "cancelled after 1 of 6 steps" in capsys.readouterr().err
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------------- bad input


@pytest.fixture
def no_model_load(monkeypatch):
    """Bad input must be reported before the weights are read."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(animate_command, "load_for_device", refuse)


def _fails_with(argv, capsys, *phrases):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    return err


def test_missing_file_is_named(scene, pack, tmp_path, capsys, no_model_load):
    _, files = scene
    argv = _argv(files, pack, tmp_path / "o.mp4")
    argv[argv.index("--reference") + 1] = str(tmp_path / "missing.png")
    _fails_with(argv, capsys, "--reference not found", "missing.png")


def test_frame_count_mismatch_names_the_counts_and_the_fix(scene, pack, tmp_path, capsys, no_model_load):
    data, files = scene
    short = write_video(tmp_path / "short.mp4", rearrange(data.video[:4], "f c h w -> f h w c"))
    argv = _argv(files, pack, tmp_path / "o.mp4")
    argv[argv.index("--video") + 1] = str(short)
    _fails_with(argv, capsys, "pose 6", "video 4", "--max-frames 4")


def test_size_not_a_multiple_of_64_without_resizing_names_a_valid_size(pack, tmp_path, capsys, no_model_load):
    odd = write_video(tmp_path / "pose_frames", torch.rand(3, 80, 64, 3))
    reference = tmp_path / "ref"
    write_video(reference, torch.rand(1, 80, 64, 3))
    argv = ["animate", "--reference", str(next(reference.iterdir())), "--pose", str(odd), "--models", pack,
            "--out", str(tmp_path / "o.mp4"), "--no-resize"]
    _fails_with(argv, capsys, "80x64", "multiple of 64", "64x64")
    _fails_with([*argv, "--size", "64x64"], capsys, "not both")


def test_missing_weights_are_named_before_the_inputs_are_read(scene, tmp_path, capsys, monkeypatch):
    _, files = scene

    def refuse(*args, **kwargs):
        raise AssertionError("inputs were read although the weights are missing")

    monkeypatch.setattr(animate_command, "load_inputs", refuse)
    argv = _argv(files, str(tmp_path / "nothing.safetensors"), tmp_path / "o.mp4", "--vae", str(tmp_path / "v.pt"))
    _fails_with(argv, capsys, "weight files not found", "base: ", "nothing.safetensors", "vae: ", "v.pt")


def test_frames_without_the_character_are_reported_by_index(scene, pack, tmp_path, capsys, no_model_load):
    data, files = scene
    mask = data.mask.clone()
    mask[2] = 0
    holes = write_video(tmp_path / "mask_frames", rearrange(mask, "f h w -> f h w 1").expand(-1, -1, -1, 3))
    argv = _argv(files, pack, tmp_path / "o.mp4")
    argv[argv.index("--mask") + 1] = str(holes)
    _fails_with(argv, capsys, "empty in 1 of 6 frames", "frame indices 2")


def test_unreadable_video_and_unwritable_output_are_messages(scene, pack, tmp_path, capsys, no_model_load):
    _, files = scene
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 64)
    argv = _argv(files, pack, tmp_path / "o.mp4")
    argv[argv.index("--video") + 1] = str(fake)
    _fails_with(argv, capsys, "fake.mp4")
    _fails_with(_argv(files, pack, tmp_path / "o.gif"), capsys, "'.gif'")


def test_a_comfyui_models_folder_resolves_to_its_one_pack_checkpoint(tiny_weights):
    assert resolve_models_path(tiny_weights) == tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"
    assert resolve_models_path(tiny_weights / "diffusers" / "aa2-tiny-sd15") == tiny_weights / "diffusers" / "aa2-tiny-sd15"
