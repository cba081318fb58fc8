"""tools/knockout.py: a copy of a checkpoint with the named tensors zeroed, the rest and the metadata kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

_SPEC = importlib.util.spec_from_file_location("knockout", Path(__file__).parents[1] / "tools" / "knockout.py")
knockout = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(knockout)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file({"branch.to_out.weight": torch.full((2, 2), 0.5), "branch.to_out.bias": torch.ones(2),
               "blend.a.gate": torch.tensor(-0.25), "blend.a.conv": torch.ones(3), "trunk.weight": torch.ones(4)},
              str(path), metadata={"format": "aa2", "aa2_config": "{}"})
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata()


def test_the_named_tensors_are_zeroed_and_nothing_else_changes(checkpoint, tmp_path):
    out = tmp_path / "out.safetensors"
    zeroed = knockout.knockout(checkpoint, out, ["branch.to_out"])
    assert sorted(zeroed) == [("branch.to_out.bias", 1.0), ("branch.to_out.weight", 0.5)]
    tensors, metadata = _read(out)
    assert metadata == {"format": "aa2", "aa2_config": "{}"}
    assert not tensors["branch.to_out.weight"].any() and not tensors["branch.to_out.bias"].any()
    assert torch.equal(tensors["trunk.weight"], torch.ones(4)) and torch.equal(tensors["blend.a.conv"], torch.ones(3))
    assert torch.equal(_read(checkpoint)[0]["branch.to_out.bias"], torch.ones(2))  # the source is untouched


def test_a_suffix_narrows_the_prefix(checkpoint, tmp_path):
    out = tmp_path / "out.safetensors"
    assert knockout.main(["--suffix", ".gate", str(checkpoint), str(out), "blend."]) == 0
    tensors, _ = _read(out)
    assert float(tensors["blend.a.gate"]) == 0.0 and torch.equal(tensors["blend.a.conv"], torch.ones(3))


def test_a_prefix_naming_nothing_and_writing_over_the_source_are_refused(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="no tensor of .* starts with 'missing.'"):
        knockout.knockout(checkpoint, tmp_path / "out.safetensors", ["missing."])
    assert not (tmp_path / "out.safetensors").exists()
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit, match="is the checkpoint itself"):
        knockout.knockout(checkpoint, checkpoint, ["branch."])
    assert checkpoint.read_bytes() == before
