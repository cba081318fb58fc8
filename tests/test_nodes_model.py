"""LoadAA2Model: dropdowns over the model folders, every tiny format loaded by its dropdown name."""

from __future__ import annotations

import shutil

import pytest
import torch

from comfy_contract import contract_problems

FORMATS = {  # dropdown names of the base and the slots each format needs (as test_model_sources)
    "pack": {"base": "animateanyone2/aa2-tiny.safetensors"},
    "moore": {"base": "animateanyone2/aa2-tiny-moore", "vae": "vae/aa2-tiny-vae.safetensors",
              "clip_vision": "clip_vision/aa2-tiny-clip-vision.safetensors"},
    "mimo": {"base": "animateanyone2/aa2-tiny-mimo", "vae": "diffusers/aa2-tiny-sd15/vae",
             "clip_vision": "diffusers/aa2-tiny-sd15/image_encoder"},
    "sd15": {"base": "checkpoints/aa2-tiny-sd15.safetensors", "motion_module": "animatediff_models/aa2-tiny-mm-v2.ckpt",
             "clip_vision": "clip_vision/aa2-tiny-clip-vision.safetensors"},
    "sd15_ckpt": {"base": "checkpoints/aa2-tiny-sd15.ckpt", "motion_module": "animatediff_models/aa2-tiny-mm-v3.safetensors",
                  "clip_vision": "clip_vision/aa2-tiny-clip-vision.safetensors"},
    "diffusers": {"base": "diffusers/aa2-tiny-sd15", "motion_module": "animatediff_models/aa2-tiny-mm-v2.ckpt"},
}


@pytest.fixture(scope="module")
def node_module(pack, tiny_weights):
    pack.nodes.host.set_models_dir(tiny_weights)
    yield pack.nodes.nodes_model
    pack.nodes.host.set_models_dir(None)


@pytest.fixture(scope="module")
def loader(node_module):
    return node_module.LoadAA2Model()


@pytest.fixture
def errors(pack):
    return pack.aa2.errors


def test_loader_is_registered_and_meets_the_node_contract(pack, node_module):
    assert pack.NODE_CLASS_MAPPINGS["LoadAA2Model"] is node_module.LoadAA2Model
    assert "LoadAA2Model" in pack.NODE_DISPLAY_NAME_MAPPINGS
    assert contract_problems(node_module.LoadAA2Model) == []
    assert node_module.LoadAA2Model.RETURN_TYPES == ("AA2_MODEL",)


def test_dropdowns_offer_every_tiny_file_and_from_base(node_module):
    spec = node_module.LoadAA2Model.INPUT_TYPES()["required"]
    offered = {name: set(entry[0]) for name, entry in spec.items()}
    for choices in FORMATS.values():
        for slot, value in choices.items():
            assert value in offered[slot], (slot, value)
    for slot in ("motion_module", "clip_vision", "vae"):
        assert spec[slot][0][0] == node_module.FROM_BASE
    # The files inside a Moore folder or a diffusers folder are parts of one entry, not bases.
    assert not any(name.endswith(".pth") or "/unet" in name for name in offered["base"])


def test_input_types_stay_valid_with_no_models_folder(pack, node_module, monkeypatch):
    monkeypatch.delenv(pack.nodes.host.MODELS_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(pack.nodes.host, "_models_dir_override", None)
    assert contract_problems(node_module.LoadAA2Model) == []
    assert node_module.LoadAA2Model.INPUT_TYPES()["required"]["base"][0] == []


def test_the_pack_checkpoint_loads_the_same_weights_as_the_core_loader(loader, tiny_model):
    (hosted,) = loader.load(**FORMATS["pack"])
    assert hosted.info["kind"] == "aa2" and hosted.dtype == torch.float32  # CPU: fp32 under "auto"
    ours, reference = hosted.model.state_dict(), tiny_model.state_dict()
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


@pytest.mark.parametrize("name", ["moore", "mimo", "sd15", "sd15_ckpt", "diffusers"])
def test_each_base_format_loads_from_its_dropdown_names(loader, node_module, tiny_weights, name):
    choices = FORMATS[name]
    sources = node_module.model_sources(**choices)
    assert sources.base == tiny_weights / choices["base"]  # names resolve inside the models folder
    (hosted,) = loader.load(**choices)
    expected_fusion = "full" if name in ("moore", "mimo") else "aa2"  # AA1 weights keep AA1 attention
    assert hosted.model.config.fusion == expected_fusion
    assert hosted.info["base"] == choices["base"]


def test_fusion_and_precision_overrides_apply(loader):
    (hosted,) = loader.load(**FORMATS["pack"], fusion="full", precision="bf16")
    assert hosted.model.config.fusion == "full"
    assert {p.dtype for p in hosted.model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("slot, name", [("base", "../aa2-tiny.safetensors"),
                                        ("base", "/etc/passwd"),
                                        ("vae", "vae/../../checkpoints/aa2-tiny-sd15.safetensors")])
def test_paths_outside_the_model_folders_are_refused(loader, errors, slot, name):
    choices = {**FORMATS["pack"], slot: name}
    with pytest.raises(errors.AA2WeightsError, match="never absolute or with '..'"):
        loader.load(**choices)


def test_a_file_from_the_wrong_folder_is_refused_naming_the_folders(loader, errors):
    with pytest.raises(errors.AA2WeightsError, match="models/animatediff_models"):
        loader.load(base=FORMATS["sd15"]["base"], motion_module="checkpoints/aa2-tiny-sd15.ckpt")


def test_a_missing_file_says_which_folder_to_put_it_in(loader, errors):
    with pytest.raises(errors.AA2WeightsError, match="not found in models/checkpoints.*SD1.5 checkpoints"):
        loader.load(base="checkpoints/v1-5-pruned-emaonly.safetensors")


def test_a_base_lacking_parts_says_which_folder_supplies_them(loader, errors):
    with pytest.raises(errors.AA2WeightsError, match="models/animatediff_models") as caught:
        loader.load(base=FORMATS["sd15"]["base"])
    assert "models/clip_vision" in str(caught.value)


def test_is_changed_follows_the_files_and_never_raises(node_module, pack, tmp_path, tiny_weights):
    host = pack.nodes.host
    shutil.copytree(tiny_weights / "animateanyone2", tmp_path / "animateanyone2")
    host.set_models_dir(tmp_path)
    try:
        is_changed = node_module.LoadAA2Model.IS_CHANGED
        first = is_changed(**FORMATS["pack"])
        assert first and is_changed(**FORMATS["pack"]) == first
        with open(tmp_path / FORMATS["pack"]["base"], "ab") as handle:
            handle.write(b"\0")  # replaced in place under the same name
        assert is_changed(**FORMATS["pack"]) != first
        assert is_changed(base="../../etc/passwd") == ""  # the run itself reports the problem
    finally:
        host.set_models_dir(tiny_weights)
