"""Weight files are read safely: pickles only through weights_only, every failure a message naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aa2.errors import AA2WeightsError
from aa2.weights import files
from aa2.weights.files import load_strict, read_safetensors_metadata, read_state_dict, write_safetensors


def _ran_code(path: str) -> None:
    """What a malicious pickle would call on load: it leaves a file behind as proof it ran."""
    Path(path).write_text("the pickle's code ran")


class Payload:
    """An object whose unpickling calls `_ran_code` — a stand-in for arbitrary code in a .ckpt."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_ran_code, (str(self.marker),))


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5, dtype=torch.float16)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_safetensors_round_trip_keeps_tensors_and_metadata(tmp_path, tensors):
    path = write_safetensors(tmp_path / "sub" / "w.safetensors", tensors, {"format": "aa2", "note": "x"})
    assert _same(read_state_dict(path), tensors)
    assert read_safetensors_metadata(path) == {"format": "aa2", "note": "x"}


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, tensors):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, tensors)
    write_safetensors(path, {"only": torch.ones(2)})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    assert list(read_state_dict(path)) == ["only"]


def test_crash_mid_write_keeps_the_previous_file(tmp_path, tensors, monkeypatch):
    path = write_safetensors(tmp_path / "w.safetensors", tensors)

    def crash(state, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors(path, {"new": torch.ones(2)})
    assert _same(read_state_dict(path), tensors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_metadata_of_file_without_metadata_is_empty(tmp_path, tensors):
    assert read_safetensors_metadata(write_safetensors(tmp_path / "w.safetensors", tensors)) == {}


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickles_unwrap_state_dict_and_module(tmp_path, tensors, suffix):
    path = tmp_path / f"w{suffix}"
    torch.save({"state_dict": tensors, "global_step": 10, "epoch": 1}, path)
    assert _same(read_state_dict(path), tensors)
    torch.save({"module": tensors}, path)
    assert _same(read_state_dict(path), tensors)
    torch.save(tensors, path)
    assert _same(read_state_dict(path), tensors)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(AA2WeightsError, match=r"not found: .*nowhere\.safetensors"):
        read_state_dict(tmp_path / "nowhere.safetensors")
    with pytest.raises(AA2WeightsError, match="not found"):
        read_safetensors_metadata(tmp_path / "nowhere.safetensors")


def test_unknown_suffix_lists_the_readable_ones(tmp_path):
    path = tmp_path / "w.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(AA2WeightsError, match=r"unknown weight file type '\.gguf'.*\.safetensors"):
        read_state_dict(path)


def test_truncated_safetensors_is_reported_as_corrupt(tmp_path, tensors):
    path = write_safetensors(tmp_path / "w.safetensors", tensors)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 8])
    with pytest.raises(AA2WeightsError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert str(path) in message and "truncated or corrupt" in message and "Download it again" in message
    with pytest.raises(AA2WeightsError, match="truncated or corrupt"):
        read_safetensors_metadata(path)


def test_garbage_safetensors_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"<html>404</html>")  # a download that saved an error page
    with pytest.raises(AA2WeightsError, match="truncated or corrupt"):
        read_state_dict(path)


def test_truncated_ckpt_is_reported_as_corrupt(tmp_path, tensors):
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": tensors}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AA2WeightsError, match=r"w\.ckpt .*truncated or corrupt"):
        read_state_dict(path)


def test_pickle_with_code_is_refused_and_not_executed(tmp_path, tensors):
    marker = tmp_path / "code_ran.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {**tensors, "payload": Payload(marker)}}, path)
    assert not marker.exists()  # saving does not run it
    with pytest.raises(AA2WeightsError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert "refused and NOT executed" in message and "evil.ckpt" in message and ".safetensors" in message
    assert not marker.exists(), "weights_only must refuse the payload before calling it"


def test_non_tensor_values_are_rejected(tmp_path, tensors):
    path = tmp_path / "w.pt"
    torch.save({**tensors, "config": {"lr": 1.0}, "step": 3}, path)
    with pytest.raises(AA2WeightsError, match=r"mixes tensors with other values \(2 entries"):
        read_state_dict(path)


def test_empty_dict_is_rejected(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(AA2WeightsError, match="holds no tensors at all"):
        read_state_dict(path)


def test_a_bare_tensor_is_not_a_state_dict(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(AA2WeightsError, match="holds a Tensor, not a dictionary"):
        read_state_dict(path)


def test_load_strict_names_missing_unexpected_and_misshaped_keys():
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(4), "extra.weight": torch.zeros(1)}
    with pytest.raises(AA2WeightsError) as error:
        load_strict(module, state, "toy net", "toy.safetensors")
    message = str(error.value)
    assert "toy.safetensors does not fit the toy net" in message
    assert "2 missing keys" in message and "1.weight" in message
    assert "1 unexpected keys" in message and "extra.weight" in message
    assert "0.bias: file has (4,), the toy net needs (3,)" in message


def test_load_strict_loads_into_meta_modules():
    with torch.device("meta"):
        module = torch.nn.Linear(2, 3)
    state = {"weight": torch.ones(3, 2), "bias": torch.zeros(3)}
    load_strict(module, state, "toy net", "toy")
    assert module.weight.device.type == "cpu" and torch.equal(module(torch.ones(1, 2)), torch.full((1, 3), 2.0))



# ---------------------------------------------------------------------------------- misdiagnosis


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_a_zero_byte_file_is_called_empty(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    path.touch()
    with pytest.raises(AA2WeightsError, match=r"w\.\w+ is empty \(0 bytes\)"):
        read_state_dict(path)


def test_a_text_file_renamed_ckpt_is_not_a_checkpoint_and_no_traceback(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4265146304\n")  # an LFS pointer
    with pytest.raises(AA2WeightsError) as error:  # torch.load alone raises KeyError / IndexError here
        read_state_dict(path)
    message = str(error.value)
    assert "model.ckpt" in message and "is not a PyTorch checkpoint" in message and "looks like text" in message
    assert "NOT executed" not in message and "could run code" not in message


@pytest.mark.parametrize("head", [b"", b"\x80\x02", b"PK\x03\x04"], ids=["random", "pickle-like start", "zip-like start"])
def test_random_bytes_are_corrupt_not_a_security_risk(tmp_path, head):
    path = tmp_path / "w.ckpt"
    path.write_bytes(head + torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                          dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(AA2WeightsError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert "w.ckpt" in message and "corrupt" in message and "Download it again" in message
    assert "NOT executed" not in message and "could run code" not in message


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_bare_pickle_with_code_is_refused_and_not_executed(tmp_path, protocol):
    """Not a torch.save file at all, yet a pickle naming a callable: the security message, never run."""
    import pickle

    marker = tmp_path / "code_ran.txt"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=protocol))
    with pytest.raises(AA2WeightsError, match="refused and NOT executed"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_safetensors_file_saved_as_pt_is_read_as_what_it_is(tmp_path, tensors):
    path = tmp_path / "w.pt"
    write_safetensors(tmp_path / "w.safetensors", tensors).rename(path)
    assert _same(read_state_dict(path), tensors)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_non_finite_weights_are_refused_naming_the_file_and_the_tensor(tmp_path, tensors, value, suffix):
    bad = {**tensors, "ids": torch.arange(3)}  # integer tensors are never "non-finite"
    bad["a.weight"] = bad["a.weight"].clone()
    bad["a.weight"][1, 2] = value
    path = tmp_path / f"w{suffix}"
    write_safetensors(path, bad) if suffix == ".safetensors" else torch.save(bad, path)
    with pytest.raises(AA2WeightsError, match=r"w\.\w+ holds NaN or infinite weights in 1 of 3 tensors.*a\.weight"):
        read_state_dict(path)
    fine = {**bad, "a.weight": tensors["a.weight"]}
    write_safetensors(path, fine) if suffix == ".safetensors" else torch.save(fine, path)
    assert _same(read_state_dict(path), fine)
