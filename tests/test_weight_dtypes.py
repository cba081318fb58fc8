"""Integer tensors where a model holds floating-point weights (or the reverse) are refused with a message naming
the file, the tensor and the dtypes, on every path that loads weights; integer buffers still take integers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aa2.errors import AA2WeightsError
from aa2.weights.clip_vision import load_clip_vision
from aa2.weights.files import load_strict
from aa2.weights.sources import ModelSources, load_model


def _retyped_copy(source: Path, target: Path, chosen: Callable[[str], bool], dtype: torch.dtype) -> Path:
    """A copy of a safetensors file, metadata kept (a pack file says what it is there), with the chosen tensors
    cast to `dtype`; the integer file a broken converter would write."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = {key: tensor.to(dtype) if chosen(key) else tensor for key, tensor in load_file(str(source)).items()}
    assert any(chosen(key) for key in tensors), "the test changed no tensor"
    save_file(tensors, str(target), metadata=metadata)
    return target


@pytest.fixture(scope="module")
def pack_file(tiny_weights) -> Path:
    return tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"


# ---------------------------------------------------------------------------------- load_strict itself


class WithPositions(torch.nn.Module):
    """A layer beside an integer buffer, as CLIP's embeddings keep `position_ids`."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 3)
        self.register_buffer("position_ids", torch.arange(4))


@pytest.mark.parametrize("assign", [True, False])
def test_integer_weights_into_float_parameters_are_refused_naming_tensor_and_dtypes(assign):
    state = {"linear.weight": torch.ones(3, 2, dtype=torch.int32), "linear.bias": torch.zeros(3),
             "position_ids": torch.arange(4)}
    with pytest.raises(AA2WeightsError) as error:
        load_strict(WithPositions(), state, "toy net", "toy.safetensors", assign=assign)
    message = str(error.value)
    assert "toy.safetensors" in message and "linear.weight is int32" in message and "floating-point" in message
    assert "float16 or float32" in message and "linear.bias" not in message


def test_float_values_into_an_integer_buffer_are_refused():
    state = {"linear.weight": torch.ones(3, 2), "linear.bias": torch.zeros(3), "position_ids": torch.arange(4.0)}
    with pytest.raises(AA2WeightsError, match=r"position_ids is float32, where it needs integer \(int64\) values"):
        load_strict(WithPositions(), state, "toy net", "toy.safetensors")


def test_integer_buffers_and_half_precision_weights_still_load():
    state = {"linear.weight": torch.ones(3, 2, dtype=torch.float16), "linear.bias": torch.zeros(3, dtype=torch.bfloat16),
             "position_ids": torch.arange(4, dtype=torch.int32)}
    module = load_strict(WithPositions(), state, "toy net", "toy.safetensors", assign=False)
    assert module.linear.weight.dtype == torch.float32 and torch.equal(module.position_ids, torch.arange(4))


# ---------------------------------------------------------------------------------- real files, every loading path


def test_a_pack_checkpoint_with_integer_conv_in_is_refused_not_torchs_runtime_error(pack_file, tmp_path):
    broken = _retyped_copy(pack_file, tmp_path / "aa2-int.safetensors", lambda key: key.endswith("conv_in.weight"),
                           torch.int64)
    with pytest.raises(AA2WeightsError) as error:  # the old code raised torch's RuntimeError here
        load_model(ModelSources.from_path(broken))
    message = str(error.value)
    assert "aa2-int.safetensors" in message and "conv_in.weight is int64" in message


def test_an_integer_object_guider_weight_is_refused_not_cast_silently(pack_file, tmp_path):
    """The AA2 extras load with assign=False, where torch copies integers into the float parameter unasked."""
    name = "denoising_net.object_guider.blocks.0.weight"
    broken = _retyped_copy(pack_file, tmp_path / "aa2-int-guider.safetensors", lambda key: key == name, torch.int32)
    with pytest.raises(AA2WeightsError, match=r"aa2-int-guider\.safetensors(.|\n)*object guider's blocks\.0\.weight "
                                              r"is int32"):
        load_model(ModelSources.from_path(broken))


def test_an_sd15_checkpoint_with_one_integer_tensor_is_refused(tiny_weights, tmp_path):
    name = "model.diffusion_model.out.2.weight"
    broken = _retyped_copy(tiny_weights / "checkpoints" / "aa2-tiny-sd15.safetensors", tmp_path / "sd15-int.safetensors",
                           lambda key: key == name, torch.int64)
    sources = ModelSources(base=broken, motion_module=tiny_weights / "animatediff_models" / "aa2-tiny-mm-v3.safetensors",
                           image_encoder=tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors")
    with pytest.raises(AA2WeightsError, match=r"sd15-int\.safetensors(.|\n)*conv_out\.weight is int64"):
        load_model(sources)


def test_an_integer_pose_guider_weight_in_a_moore_folder_is_refused(tiny_weights, tmp_path):
    """The pose guider loads into a built module (assign=False), like the extras."""
    folder = tmp_path / "moore"
    folder.mkdir()
    for file in (tiny_weights / "animateanyone2" / "aa2-tiny-moore").iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    state = torch.load(folder / "pose_guider.pth", weights_only=True)
    key = next(key for key in state if key.endswith("weight"))
    state[key] = state[key].to(torch.int64)
    torch.save(state, folder / "pose_guider.pth")
    sources = ModelSources(base=folder, motion_module=tiny_weights / "animatediff_models" / "aa2-tiny-mm-v3.safetensors",
                           image_encoder=tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors",
                           vae=tiny_weights / "vae" / "aa2-tiny-vae.safetensors")
    with pytest.raises(AA2WeightsError, match=r"pose_guider\.pth(.|\n)*pose guider's .* is int64"):
        load_model(sources)


def test_a_clip_vision_file_with_int64_position_ids_loads(tiny_weights, tmp_path):
    """Files written by older transformers keep the `position_ids` buffer, as int64: a legitimate integer tensor."""
    source = tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors"
    tensors = load_file(str(source))
    positions = tensors["vision_model.embeddings.position_embedding.weight"].shape[0]
    tensors["vision_model.embeddings.position_ids"] = torch.arange(positions)[None]
    path = tmp_path / "clip-with-position-ids.safetensors"
    save_file(tensors, str(path))
    width = tensors["visual_projection.weight"].shape[0]
    assert load_clip_vision(path, cross_attention_dim=width).visual_projection.weight.dtype == torch.float32


def test_the_cli_reports_an_integer_checkpoint_as_an_error_not_a_traceback(pack_file, tmp_path, capsys):
    from aa2.cli import main
    from aa2.demo import make_scene, write_scene

    files = write_scene(make_scene(4, 64), tmp_path / "scene")
    broken = _retyped_copy(pack_file, tmp_path / "aa2-int.safetensors", lambda key: key.endswith("conv_in.weight"),
                           torch.int64)
    argv = ["animate", "--reference", str(files.reference), "--pose", str(files.pose), "--video", str(files.video),
            "--mask", str(files.mask), "--models", str(broken), "--out", str(tmp_path / "out.mp4"), "--quiet",
            "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "aa2-int.safetensors" in err and "conv_in.weight is int64" in err
    assert not (tmp_path / "out.mp4").exists()
