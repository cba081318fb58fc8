"""nodes/host.py: model folders, name resolution and the fallbacks used when ComfyUI is absent."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture
def host(pack):
    """The pack's host module, with whatever models folder a test sets reset afterwards."""
    module = pack.nodes.host
    yield module
    module.set_models_dir(None)


@pytest.fixture
def errors(pack):
    return pack.aa2.errors  # the pack's own classes: it is imported under ComfyUI's module name


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_loading_the_pack_imports_no_comfyui_module(pack, host):
    assert host.folder_paths is None and host.model_management is None and host.comfy_utils is None
    leaked = [m for m in sys.modules if m.split(".")[0] in ("comfy", "folder_paths", "latent_preview")]
    assert leaked == []


def test_without_a_models_folder_lists_nothing_and_says_how_to_set_one(host, errors, monkeypatch):
    monkeypatch.delenv(host.MODELS_DIR_VARIABLE, raising=False)
    assert host.folder_roots("checkpoints") == [] and host.list_models("checkpoints") == []
    with pytest.raises(errors.AA2WeightsError, match=host.MODELS_DIR_VARIABLE):
        host.resolve_model("checkpoints/a.safetensors", {"checkpoints": "SD1.5 checkpoints"})


def test_environment_variable_gives_the_models_folder(host, tmp_path, monkeypatch):
    _touch(tmp_path / "vae" / "v.safetensors")
    monkeypatch.setenv(host.MODELS_DIR_VARIABLE, str(tmp_path))
    assert host.folder_roots("vae") == [tmp_path / "vae"]
    assert host.resolve_model("vae/v.safetensors", {"vae": "VAEs"}) == tmp_path / "vae" / "v.safetensors"


def test_model_folders_are_listed_as_one_entry_and_not_searched(host, tiny_weights):
    host.set_models_dir(tiny_weights)
    from aa2.weights.moore import is_moore_folder

    pack_entries = host.list_models(host.PACK_FOLDER, folders=is_moore_folder)
    assert pack_entries == ["animateanyone2/aa2-tiny-mimo", "animateanyone2/aa2-tiny-moore",
                            "animateanyone2/aa2-tiny.safetensors"]
    diffusers = host.list_models("diffusers", files=False, folders=lambda p: (p / "unet").is_dir())
    assert diffusers == ["diffusers/aa2-tiny-sd15"]
    # Without a folder rule, the weight files inside those folders are what gets listed.
    assert "animateanyone2/aa2-tiny-moore/denoising_unet.pth" in host.list_models(host.PACK_FOLDER)


def test_listing_skips_non_weight_files_and_hidden_folders(host, tmp_path):
    _touch(tmp_path / "checkpoints" / "sub" / "a.safetensors")
    _touch(tmp_path / "checkpoints" / "notes.txt")
    _touch(tmp_path / "checkpoints" / ".cache" / "b.safetensors")
    host.set_models_dir(tmp_path)
    assert host.list_models("checkpoints") == ["checkpoints/sub/a.safetensors"]


@pytest.mark.parametrize("name", ["../secret.safetensors", "checkpoints/../../secret.safetensors",
                                  "/etc/passwd", "C:/models/x.safetensors", "checkpoints\\..\\..\\x.ckpt"])
def test_names_outside_the_model_folders_are_refused(host, errors, tmp_path, name):
    _touch(tmp_path / "secret.safetensors")
    host.set_models_dir(tmp_path / "models")
    with pytest.raises(errors.AA2WeightsError, match="models/checkpoints") as caught:
        host.resolve_model(name, {"checkpoints": "SD1.5 checkpoints"})
    assert "'..'" in str(caught.value)


def test_a_name_from_another_folder_is_refused_naming_the_right_ones(host, errors, tiny_weights):
    host.set_models_dir(tiny_weights)
    slot = {"checkpoints": "SD1.5 checkpoints", "diffusers": "diffusers folders"}
    with pytest.raises(errors.AA2WeightsError, match="models/checkpoints .*models/diffusers"):
        host.resolve_model("vae/aa2-tiny-vae.safetensors", slot)


def test_a_missing_file_names_its_folder_and_what_belongs_there(host, errors, tiny_weights):
    host.set_models_dir(tiny_weights)
    with pytest.raises(errors.AA2WeightsError, match="not found in models/animatediff_models.*motion modules"):
        host.resolve_model("animatediff_models/mm_sd_v15_v2.ckpt", {"animatediff_models": "motion modules"})


def test_a_linked_folder_leading_outside_is_refused_but_a_linked_file_is_not(host, errors, tmp_path):
    outside = _touch(tmp_path / "elsewhere" / "x.safetensors")
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "escape").symlink_to(outside.parent, target_is_directory=True)
    (tmp_path / "models" / "checkpoints" / "linked.safetensors").symlink_to(outside)
    host.set_models_dir(tmp_path / "models")
    slot = {"checkpoints": "SD1.5 checkpoints"}
    with pytest.raises(errors.AA2WeightsError, match="outside models/checkpoints"):
        host.resolve_model("checkpoints/escape/x.safetensors", slot)
    assert host.resolve_model("checkpoints/linked.safetensors", slot).resolve() == outside.resolve()
    # The dropdown offers exactly what resolves: the linked file, not what lies behind the linked folder.
    assert host.list_models("checkpoints") == ["checkpoints/linked.safetensors"]


def test_registration_adds_only_missing_folders_and_roots_come_from_the_host(host, monkeypatch):
    added = {}
    yaml_paths = ["/yaml/animatediff"]
    fake = SimpleNamespace(
        models_dir="/comfy/models",
        folder_names_and_paths={"checkpoints": (["/comfy/models/checkpoints"], {".safetensors"}),
                                "animatediff_models": (yaml_paths, set())},
        add_model_folder_path=lambda name, path: added.setdefault(name, path),
        get_folder_paths=lambda name: list(fake.folder_names_and_paths[name][0]),
    )
    monkeypatch.setattr(host, "folder_paths", fake)
    host.register_model_folders()
    assert added == {name: f"/comfy/models/{name}" for name in ("animateanyone2", "sam2", "sapiens", "dwpose")}
    assert [str(p) for p in host.folder_roots("animatediff_models")] == yaml_paths
    assert host.folder_roots("never_registered") == []  # a KeyError must not escape INPUT_TYPES


def test_device_dtype_and_interruption_fall_back_to_cpu_fp32_and_never(host):
    assert host.torch_device() == torch.device("cpu") == host.intermediate_device() == host.offload_device()
    assert host.preferred_dtype() == torch.float32
    assert host.interrupted() is False
    host.check_interrupted()  # no host: nothing to raise
    assert host.latent_previewer() is None


def test_progress_counts_and_clamps_without_a_host(host):
    progress = host.Progress(5)
    progress.update()
    progress.update(2)
    assert progress.current == 3
    progress.update_absolute(9)
    assert progress.current == 5
    progress.update_absolute(4, total=10)
    assert (progress.current, progress.total) == (4, 10)


def test_hosted_model_casts_parks_and_readies_without_a_host(host):
    hosted = host.host_model(torch.nn.Linear(2, 2), torch.bfloat16, {"base": "x"})
    assert hosted.patcher is None and hosted.model.weight.dtype == torch.bfloat16
    assert hosted.ready() is hosted.model and hosted.model.weight.device == torch.device("cpu")
    hosted.release()
    assert hosted.info == {"base": "x"}


def test_files_signature_changes_when_a_file_is_rewritten(host, tmp_path):
    path = _touch(tmp_path / "m" / "a.bin", b"1")
    before = host.files_signature([path, None, tmp_path / "m"])
    assert host.files_signature([path, tmp_path / "m"]) == before
    path.write_bytes(b"22")
    assert host.files_signature([path, tmp_path / "m"]) != before
