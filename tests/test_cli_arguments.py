"""`python -m aa2 animate` checks every argument before loading anything (issue 13): the model's limits
where its files state them, the rest right after the load and before any sampling; every error exits 2
and names the option (the nodes read the same checks with their widget names); and a folder of PNG
frames is one output, replaced whole, never mixed with an earlier run's frames or the user's files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import aa2.animate_command as animate_command
from aa2.cli import main
from aa2.demo import make_scene, write_scene
from aa2.errors import AA2InputError, interface
from aa2.pipeline.inputs import SamplingSettings
from aa2.video_io import read_frames, write_video
from test_cli_animate import _fails_with as fails_with
from test_cli_animate import nothing_loads  # noqa: F401  (fixture: neither inputs nor weights may be read)

FRAMES, SIZE = 4, 64


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 4-frame 64x64 scene written as a user's files."""
    return write_scene(make_scene(FRAMES, SIZE), tmp_path_factory.mktemp("scene"))


@pytest.fixture
def pack(tiny_weights) -> str:
    return str(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors")


@pytest.fixture
def unstated(pack, tiny_weights) -> list[str]:
    """Weights whose motion window only the load tells: a separate motion module replaces the pack's
    (its window is in its tensors, not in any stored config)."""
    return [pack, "--motion-module", str(tiny_weights / "animatediff_models" / "aa2-tiny-mm-v2.ckpt")]


def _argv(files, models, out, *extra):
    models = [models] if isinstance(models, str) else models
    return ["animate", "--reference", str(files.reference), "--pose", str(files.pose), "--video", str(files.video),
            "--mask", str(files.mask), "--models", *models, "--out", str(out), "--quiet", *extra]


@pytest.fixture
def nothing_samples(monkeypatch):
    """The model may load, but nothing may be rendered."""

    def refuse(*args, **kwargs):
        raise AssertionError("sampling started although an argument does not fit the model")

    monkeypatch.setattr(animate_command, "render", refuse)


class _KeepsOutput:
    """`capsys` that remembers what it last read, so stdout can be checked after `fails_with` read it."""

    def __init__(self, capsys):
        self.capsys, self.captured = capsys, None

    def readouterr(self):
        self.captured = self.capsys.readouterr()
        return self.captured


def _fails_with(argv, capsys, *phrases):
    """Exit 2 with a message holding `phrases`, before the run was announced ("animating ...")."""
    kept = _KeepsOutput(capsys)
    err = fails_with(argv, kept, *phrases)
    assert "animating" not in kept.captured.out
    return err


# ---------------------------------------------------------------------------------- steps


@pytest.mark.parametrize("steps", ["1001", "100000"])
def test_more_steps_than_the_schedule_has_are_refused_before_loading(files, pack, tmp_path, capsys, nothing_loads,
                                                                      steps):
    _fails_with(_argv(files, pack, tmp_path / "o.mp4", "--steps", steps), capsys, f"--steps {steps}", "1000")


def test_the_step_bound_every_sd15_checkpoint_shares_is_checked_before_a_base_without_a_config_loads(
        files, unstated, tmp_path, capsys, nothing_loads):
    _fails_with(_argv(files, unstated, tmp_path / "o.mp4", "--steps", "1001"), capsys, "--steps 1001", "1000")


def test_the_loaded_models_own_schedule_bounds_the_steps_before_sampling(files, unstated, tmp_path, capsys,
                                                                          monkeypatch, nothing_samples):
    real = animate_command.load_for_device

    def load_with_a_shorter_schedule(*args, **kwargs):
        model = real(*args, **kwargs)
        model.config = model.config.replace(scheduler=dataclasses.replace(model.config.scheduler,
                                                                          num_train_timesteps=500))
        return model

    monkeypatch.setattr(animate_command, "load_for_device", load_with_a_shorter_schedule)
    _fails_with(_argv(files, unstated, tmp_path / "o.mp4", "--steps", "600"), capsys, "--steps 600", "500 timesteps")


# ---------------------------------------------------------------------------------- clips


@pytest.mark.parametrize("extra, phrases", [
    (["--clip-length", "2", "--motion-frames", "2"], ["--motion-frames (2)", "--clip-length (2)"]),
    (["--clip-length", "3", "--overlap", "3"], ["--overlap (3)", "--clip-length (3)"]),
])
def test_clips_that_make_no_new_frames_are_refused_before_anything_loads(files, unstated, tmp_path, capsys,
                                                                          nothing_loads, extra, phrases):
    _fails_with(_argv(files, unstated, tmp_path / "o.mp4", *extra), capsys, *phrases)


WINDOW_ERRORS = [
    (["--clip-length", "40"], ["--clip-length (40)", "between 1 and 32"]),
    (["--motion-frames", "16"], ["--motion-frames (16)", "the clip length (16", "set --clip-length"]),
    (["--overlap", "20"], ["--overlap (20)", "the clip length (16"]),
]


@pytest.mark.parametrize("extra, phrases", WINDOW_ERRORS)
def test_a_pack_checkpoints_stored_window_refuses_clip_settings_before_loading(files, pack, tmp_path, capsys,
                                                                             nothing_loads, extra, phrases):
    _fails_with(_argv(files, pack, tmp_path / "o.mp4", *extra), capsys, *phrases)


@pytest.mark.parametrize("extra, phrases", WINDOW_ERRORS)
def test_a_window_only_the_load_tells_refuses_clip_settings_before_sampling(files, unstated, tmp_path, capsys,
                                                                          nothing_samples, extra, phrases):
    _fails_with(_argv(files, unstated, tmp_path / "o.mp4", *extra), capsys, *phrases)


# ---------------------------------------------------------------------------------- seeds and wording


def test_a_negative_seed_is_refused_as_the_node_refuses_it(files, pack, tmp_path, capsys, nothing_loads):
    _fails_with(_argv(files, pack, tmp_path / "o.mp4", "--seed", "-5"), capsys, "--seed must be 0 or more, got -5")
    with pytest.raises(AA2InputError, match="seed must be 0 or more"):
        SamplingSettings(seed=-5).check()


@pytest.mark.parametrize("option, value, field", [
    ("--clip-length", "0", "clip_length"),
    ("--steps", "0", "steps"),
    ("--motion-frames", "-1", "motion_frames"),
    ("--overlap", "-1", "overlap"),
    ("--vae-chunk", "-1", "vae_chunk"),
    ("--feather", "-1", "feather"),
    ("--cfg", "0.5", "cfg"),
])
def test_each_bad_value_is_named_alone_by_the_interface_that_set_it(files, pack, tmp_path, capsys, nothing_loads,
                                                                      option, value, field):
    err = _fails_with(_argv(files, pack, tmp_path / "o.mp4", option, value), capsys, f"error: {option} ")
    others = {"clip_length", "steps", "motion_frames", "overlap", "vae_chunk", "feather"} - {field}
    assert not any(name in err or "--" + name.replace("_", "-") in err for name in others), err

    bad = SamplingSettings(**{field: float(value) if field == "cfg" else int(value)})
    with pytest.raises(AA2InputError, match=f"^{field} ") as for_a_node:
        bad.check()
    assert "--" not in str(for_a_node.value)
    with interface("cli"), pytest.raises(AA2InputError, match=f"^{option} "):
        bad.check()


# ---------------------------------------------------------------------------------- PNG folder outputs


def _frame_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_folder_of_an_earlier_longer_run_is_replaced_whole(tmp_path):
    out = tmp_path / "frames"
    write_video(out, torch.rand(10, 64, 64, 3))
    write_video(out, torch.rand(4, 64, 64, 3))
    assert _frame_names(out) == [f"frame_{i:05d}.png" for i in range(4)]  # no stale frame_00009
    assert _frame_names(tmp_path) == ["frames"]  # no temporary left beside it


def test_a_failed_folder_write_keeps_the_earlier_frames_and_leaves_no_temporary(tmp_path, monkeypatch):
    import aa2.video_io as video_io

    out = tmp_path / "frames"
    write_video(out, torch.rand(3, 64, 64, 3))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = video_io.cv2.imencode, {"n": 0}

    def encode_then_die(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as Ctrl-C or a full disk would, halfway through the frames
        return real(*args)

    monkeypatch.setattr(video_io.cv2, "imencode", encode_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_video(out, torch.rand(5, 64, 64, 3))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _frame_names(tmp_path) == ["frames"]


def test_a_folder_holding_the_users_files_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "frames"
    write_video(out, torch.rand(2, 64, 64, 3))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(AA2InputError, match="notes.txt"):
        write_video(out, torch.rand(2, 64, 64, 3))
    assert _frame_names(out) == ["frame_00000.png", "frame_00001.png", "notes.txt"]


def test_the_cli_refuses_a_folder_of_other_files_before_loading(files, pack, tmp_path, capsys, nothing_loads):
    out = tmp_path / "frames"
    out.mkdir()
    (out / "frame_00000.png").write_bytes(b"not written by aa2, but named as if")
    (out / "holiday.jpg").write_bytes(b"a photo")
    _fails_with(_argv(files, pack, out), capsys, "holiday.jpg", "new or empty folder")
    assert (out / "holiday.jpg").read_bytes() == b"a photo"


def test_the_cli_replaces_an_earlier_runs_frame_folder(files, pack, tmp_path):
    out = tmp_path / "frames"
    write_video(out, torch.rand(10, SIZE, SIZE, 3))
    assert main(_argv(files, pack, out, "--steps", "1", "--clip-length", "4", "--cfg", "1")) == 0
    assert _frame_names(out) == [f"frame_{i:05d}.png" for i in range(FRAMES)]
    assert read_frames(out).shape == (FRAMES, 3, SIZE, SIZE)
