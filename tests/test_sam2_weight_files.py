"""SAM2 files are read by the pack's one weight reader: each bad file gets a message naming it and saying what it
is (empty, corrupt, a web page, safetensors under `.pt`, not SAM2, NaN or integer weights), never torch's text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aa2.conditioning.sam2_segment import load_sam2
from aa2.errors import AA2WeightsError

from sam2_micro import write_micro_checkpoint

TORCH_TEXT = ("Weights only load failed", "UnpicklingError", "EOFError")


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("sam2")
    return write_micro_checkpoint(tmp_path_factory.mktemp("sam2-files"))


@pytest.fixture(scope="module")
def micro_state(micro) -> dict[str, torch.Tensor]:
    return torch.load(micro["pt"], weights_only=True)["model"]


def _refusal(path: Path, config: Path | None = None) -> str:
    with pytest.raises(AA2WeightsError) as error:
        load_sam2(path, config=config)
    message = str(error.value)
    assert path.name in message and not any(text in message for text in TORCH_TEXT), message
    return message


def test_an_empty_file_is_called_empty(tmp_path):
    path = tmp_path / "sam2_hiera_tiny.pt"
    path.touch()
    assert "is empty (0 bytes)" in _refusal(path)


def test_random_bytes_are_corrupt_not_a_security_risk(tmp_path):
    path = tmp_path / "sam2_hiera_tiny.pt"
    path.write_bytes(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(2),
                                   dtype=torch.uint8).numpy().tobytes())
    message = _refusal(path)
    assert "corrupt" in message and "Download it again" in message and "NOT executed" not in message


def test_a_web_page_saved_as_pt_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "sam2.1_hiera_large.pt"
    path.write_text("<!DOCTYPE html><html><body>Rate limit exceeded</body></html>")
    message = _refusal(path)
    assert "is not a PyTorch checkpoint" in message and "looks like text" in message


def test_a_safetensors_sam2_file_saved_as_pt_loads_as_what_it_is(micro, micro_state, tmp_path):
    path = tmp_path / "sam2_micro.pt"
    save_file(micro_state, str(path))
    loaded = load_sam2(path, config=micro["yaml"]).predictor.state_dict()
    assert all(torch.equal(loaded[key], micro_state[key]) for key in micro_state)


def test_a_safetensors_file_of_another_model_saved_as_pt_is_not_sam2(tmp_path):
    path = tmp_path / "sam2_hiera_tiny.pt"
    save_file({"conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(path))
    message = _refusal(path)
    assert "is not a SAM2 checkpoint" in message and "conv_in.weight" in message and "sam2_hiera_tiny.pt" in message


def test_nan_weights_are_refused_naming_the_tensor(micro, micro_state, tmp_path):
    key = "image_encoder.trunk.patch_embed.proj.weight"
    state = {**micro_state, key: micro_state[key].clone()}
    state[key][0, 0, 0, 0] = float("nan")
    path = tmp_path / "sam2_micro.pt"
    torch.save({"model": state}, path)
    message = _refusal(path, micro["yaml"])
    assert "NaN or infinite" in message and key in message


def test_integer_weights_are_refused_naming_the_tensor(micro, micro_state, tmp_path):
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    path = tmp_path / "sam2_micro.safetensors"
    save_file({**micro_state, key: micro_state[key].to(torch.int64)}, str(path))
    message = _refusal(path, micro["yaml"])
    assert f"{key} is int64" in message and "float16 or float32" in message
