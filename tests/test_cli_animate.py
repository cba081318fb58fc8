"""`python -m aa2 animate` and `python -m aa2 demo` end to end on tiny weights and small mp4 files, and the demo
on SynthWorld-preset weights (fresh ones made here; the shipped ones when the checkout has them)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import aa2.animate_command as animate_command
from aa2.animate_command import resolve_models_path
from aa2.cli import main
from aa2.conditioning.masks import shape_agnostic_mask
from aa2.demo import SHIPPED_WEIGHTS, make_scene, write_scene
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
    argv = ["demo", "--random-weights", "--out", str(out), "--frames", "5", "--size", "64", "--clip-length", "4",
            "--steps", "1", "--models-dir", str(tiny_weights), "--inputs-dir", str(tmp_path / "inputs"), "--quiet"]
    assert main(argv) == 0
    assert read_frames(out).shape == (5, 3, 64, 64)
    said = capsys.readouterr().out
    assert "RANDOM weights" in said and "prove the install" in said
    assert {p.name for p in (tmp_path / "inputs").iterdir()} >= {"driving.mp4", "character_mask.mp4", "depth.mp4",
                                                                  "object_mask.mp4", "pose", "reference.png"}
    assert not (tmp_path / "metrics.json").exists()  # random weights: nothing worth scoring


@pytest.fixture(scope="module")
def synthworld_checkpoint(tmp_path_factory) -> Path:
    """A freshly initialised SynthWorld-preset checkpoint (untrained: the demo's path, not its quality)."""
    from train.init_model import init_model

    return init_model("synthworld", tmp_path_factory.mktemp("synthworld") / "fresh.safetensors", vae=None)


def test_demo_with_weights_animates_a_heldout_synthworld_clip_and_scores_it(synthworld_checkpoint, tmp_path, capsys):
    from aa2.synthworld import HELDOUT_SEED_BASE

    out = tmp_path / "demo.mp4"
    argv = ["demo", "--weights", str(synthworld_checkpoint), "--out", str(out), "--frames", "8", "--steps", "2",
            "--inputs-dir", str(tmp_path / "inputs"), "--quiet"]
    assert main(argv) == 0
    assert read_frames(out).shape == (8, 3, 64, 64)
    said = capsys.readouterr().out
    assert "RANDOM" not in said and "the weights you gave" in said
    # the clip is written as a user's files: lossless PNG folders by default, the skeletons rendered by aa2
    assert {p.name for p in (tmp_path / "inputs").iterdir()} == {"driving", "character_mask", "depth", "object_mask",
                                                                  "pose", "reference.png"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("psnr", "ssim", "psnr_environment", "psnr_character", "silhouette_iou"):
        assert isinstance(metrics[name], float) and math.isfinite(metrics[name]), name
    assert 0.0 <= metrics["ssim"] <= 1.0 and 0.0 <= metrics["silhouette_iou"] <= 1.0
    assert metrics["clip_seed"] >= HELDOUT_SEED_BASE and metrics["motion"] == "push"  # never a training clip
    assert metrics["steps"] == 2 and metrics["environment"] == "input" and metrics["paste_environment"] is False
    assert metrics["weights"] == str(synthworld_checkpoint) and metrics["seconds"] > 0
    # the reference is a portrait of the figure, as the recipe trains (data.reference_framing: character)
    assert metrics["reference_framing"] == "character"
    portrait = read_frames(tmp_path / "inputs" / "reference.png")[0]
    assert (portrait.float().mean(0) < 0.9).float().mean() > 0.05  # not an empty crop of the scene
    assert main([*argv[:-1], "--out", str(tmp_path / "framed.mp4"), "--inputs-dir", str(tmp_path / "framed"),
                 "--reference-framing", "frame", "--quiet"]) == 0
    whole = read_frames(tmp_path / "framed" / "reference.png")[0]
    assert not torch.equal(portrait, whole)


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="the SynthWorld weights are not shipped in this checkout")
def test_shipped_synthworld_weights_load_with_the_presets_shapes_and_a_learned_environment():
    from aa2.config import synthworld
    from aa2.pipeline.animate import environment_is_learned
    from aa2.weights.sources import ModelSources, load_model

    assert SHIPPED_WEIGHTS.stat().st_size < 20 * 2**20  # small enough to commit (fp16)
    model = load_model(ModelSources.from_path(SHIPPED_WEIGHTS))
    preset = synthworld()
    for part in ("unet", "motion", "pose", "image_encoder", "scheduler"):  # the VAE is the trained one's shape
        assert getattr(model.config, part) == getattr(preset, part), part
    assert model.config.use_environment and model.config.use_object_guider
    assert environment_is_learned(model)  # the demo feeds the environment as the model's input


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
    _fails_with(argv, capsys, "64×80 (width × height)", "multiple of 64", "64×64 (width × height)")
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


# ---------------------------------------------------------------------------------- arguments and outputs


@pytest.fixture
def nothing_loads(monkeypatch):
    """Argument errors must come before any input or weight file is read."""

    def refuse(*args, **kwargs):
        raise AssertionError("a file was loaded before the arguments were checked")

    monkeypatch.setattr(animate_command, "load_inputs", refuse)
    monkeypatch.setattr(animate_command, "load_for_device", refuse)


def _digest(path):
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return [(p.name, p.read_bytes()) for p in files if p.is_file()]


@pytest.mark.parametrize("option", ["--video", "--reference", "--pose", "--mask", "--depth", "--object-mask",
                                    "a frame in --pose", "--models"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(scene, pack, tmp_path, capsys, nothing_loads,
                                                                    option):
    _, files = scene
    argv = _argv(files, pack, tmp_path / "o.mp4", "--depth", str(files.depth), "--object-mask", str(files.object_mask))
    if option == "a frame in --pose":
        target = sorted(files.pose.iterdir())[0]
    else:
        target = argv[argv.index(option) + 1]
    before = _digest(Path(target))
    argv[argv.index("--out") + 1] = str(target)
    _fails_with(argv, capsys, "output", "Choose")
    assert _digest(Path(target)) == before


def test_an_output_reaching_an_input_through_a_link_or_dot_dot_is_refused(scene, pack, tmp_path, capsys, nothing_loads):
    _, files = scene
    link = tmp_path / "link.mp4"
    link.symlink_to(files.video)
    _fails_with(_argv(files, pack, link), capsys, "is the --video input")
    dotted = files.video.parent / ".." / files.video.parent.name / files.video.name
    _fails_with(_argv(files, pack, dotted), capsys, "is the --video input")
    _fails_with(_argv(files, pack, files.pose.parent), capsys, "output folder", "holds the")  # PNG frames among inputs


@pytest.mark.parametrize("extra, phrase", [
    (["--clip-length", "0"], "--clip-length must be at least 1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--cfg", "-2"], "cfg must be a number >= 1"),
    (["--cfg", "nan"], "cfg must be a number >= 1"),
    (["--cfg", "inf"], "cfg must be a number >= 1"),
    (["--fps", "0"], "--fps must be a positive number"),
    (["--fps", "-5"], "--fps must be a positive number"),
    (["--fps", "nan"], "--fps must be a positive number"),
    (["--stride", "0"], "stride must be at least 1"),
    (["--max-frames", "0"], "max-frames must be at least 1"),
    (["--mask-threshold", "1.5"], "mask threshold must be in [0, 1)"),
    (["--motion-frames", "-1"], "--motion-frames cannot be negative"),
    (["--vae-chunk", "-1"], "--vae-chunk must be >= 0"),
])
def test_bad_numbers_are_refused_before_anything_loads(scene, pack, tmp_path, capsys, nothing_loads, extra, phrase):
    _, files = scene
    _fails_with(_argv(files, pack, tmp_path / "o.mp4", *extra), capsys, phrase)
    assert not (tmp_path / "o.mp4").exists()


def test_an_output_path_that_cannot_be_written_is_refused_first(scene, pack, tmp_path, capsys, nothing_loads):
    _, files = scene
    a_file = tmp_path / "notes"
    a_file.write_text("mine")
    _fails_with(_argv(files, pack, a_file), capsys, "is a file")  # no suffix means a folder of frames
    _fails_with(_argv(files, pack, a_file / "o.mp4"), capsys, "is not a folder")
    assert a_file.read_text() == "mine"


def test_info_on_a_missing_or_wrong_path_exits_non_zero(tmp_path, capsys):
    _fails_with(["info", str(tmp_path / "missing.safetensors")], capsys, "not found", "missing.safetensors")
    text = tmp_path / "notes.ckpt"
    text.write_text("not weights\n")
    _fails_with(["info", str(text)], capsys, "not a PyTorch checkpoint")


def test_convert_refuses_to_write_over_its_source_before_loading(pack, tmp_path, capsys, monkeypatch):
    import aa2.weights.sources as sources

    monkeypatch.setattr(sources, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    source = tmp_path / "aa2.safetensors"
    source.write_bytes(Path(pack).read_bytes())
    before = source.read_bytes()
    _fails_with(["convert", str(source), str(source)], capsys, "is the SRC input")
    _fails_with(["convert", str(source), str(tmp_path / "x.pt")], capsys, "must end in .safetensors")
    _fails_with(["convert", str(source), str(tmp_path / "o.safetensors"), "--vae", str(tmp_path / "o.safetensors")],
                capsys, "is the --vae input")
    assert source.read_bytes() == before


def test_messages_name_options_not_comfyui_folders(tiny_weights, scene, tmp_path, capsys):
    _, files = scene
    sd15 = tiny_weights / "checkpoints" / "aa2-tiny-sd15.safetensors"  # lacks motion module and image encoder
    err = _fails_with(_argv(files, str(sd15), tmp_path / "o.mp4"), capsys, "passed with --motion-module",
                      "passed with --image-encoder")
    assert "models/" not in err


def test_a_failed_video_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import aa2.video_io as video_io

    out = write_video(tmp_path / "out.mp4", torch.rand(2, 64, 64, 3))
    before = out.read_bytes()

    class Crashes:  # a writer that dies mid-video, as a full disk or Ctrl-C would
        def __init__(self, filename, *args):
            self.filename = filename

        def isOpened(self):
            return True

        def write(self, frame):
            Path(self.filename).write_bytes(b"half a video")
            raise KeyboardInterrupt

        def release(self):
            pass

    monkeypatch.setattr(video_io.cv2, "VideoWriter", Crashes)
    with pytest.raises(KeyboardInterrupt):
        write_video(out, torch.rand(3, 64, 64, 3))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
