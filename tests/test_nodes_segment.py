"""SAM2 nodes: prompts from the UI's strings, tracking through the real sam2 code on a micro model."""

from __future__ import annotations

import pytest
import torch

from comfy_contract import contract_problems
from test_sam2_segment import micro_files, one_thread  # noqa: F401  (fixtures: micro SAM2 written to disk)


@pytest.fixture(scope="module")
def segment(pack):
    return pack.nodes.nodes_segment


@pytest.fixture(scope="module")
def micro_pack(pack, micro_files):  # noqa: F811
    # loaded through the pack's own aa2 (the module ComfyUI would use), with the micro config
    return pack.aa2.conditioning.sam2_segment.load_sam2(micro_files["pt"], config=micro_files["yaml"])


def _frames(f=4, h=40, w=56):
    return torch.rand(f, h, w, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["AA2LoadSAM2", "ObjectSegment", "AA2ObjectFrames"])
def test_segment_nodes_meet_the_node_contract(pack, name):
    assert contract_problems(pack.NODE_CLASS_MAPPINGS[name]) == []


def test_points_accept_plain_pairs_and_points_editor_json(segment):
    assert segment._points("[[1, 2], [3.5, 4]]", "p") == [(1.0, 2.0), (3.5, 4.0)]
    assert segment._points('[{"x": 5, "y": 6}]', "p") == [(5.0, 6.0)]
    assert segment._points("  ", "p") == []
    assert segment._box("10, 20, 30, 40") == (10.0, 20.0, 30.0, 40.0)


@pytest.mark.parametrize("text", ["[1, 2", "[[1, 2, 3]]", '[{"x": 1}]'])
def test_malformed_points_say_what_is_expected(segment, pack, text):
    with pytest.raises(pack.aa2.errors.AA2InputError, match="point|JSON"):
        segment._points(text, "positive_points")


def test_object_segment_tracks_every_frame_and_cuts_the_objects(segment, micro_pack):
    frames = _frames()
    mask, cut = segment.ObjectSegment().segment(micro_pack, frames, 1, positive_points="[[14, 12]]",
                                                objects_json='[{"box": [30, 5, 54, 35]}]')
    assert mask.shape == (4, 40, 56) and cut.shape == (4, 40, 56, 3)
    inside = mask > 0.5
    assert torch.equal(cut[inside], frames[inside])  # the objects' own pixels
    assert bool((cut[~inside] == 0.5).all())  # grey elsewhere, like the environment's fill


def test_object_segment_needs_a_prompt(segment, micro_pack, pack):
    with pytest.raises(pack.aa2.errors.AA2InputError, match="give the object"):
        segment.ObjectSegment().segment(micro_pack, _frames(), 0)


def test_object_frames_from_any_mask_node(segment):
    frames = _frames()
    mask = torch.zeros(1, 20, 28)
    mask[:, 5:15, 5:15] = 1  # one mask at half size, for every frame
    (cut,) = segment.AA2ObjectFrames().cut(frames, mask)
    assert cut.shape == frames.shape
    assert torch.equal(cut[:, 10:30, 10:30], frames[:, 10:30, 10:30]) and float(cut[:, 0, 0].mean()) == 0.5


def test_sam2_loader_lists_and_resolves_only_the_sam2_folder(pack, tmp_path):
    host = pack.nodes.host
    (tmp_path / "sam2").mkdir()
    (tmp_path / "sam2" / "sam2.1_hiera_tiny.pt").write_bytes(b"")
    host.set_models_dir(tmp_path)
    try:
        choices = pack.nodes.nodes_segment.AA2LoadSAM2.INPUT_TYPES()["required"]["model"][0]
        assert choices == ["sam2/sam2.1_hiera_tiny.pt"]
        with pytest.raises(pack.aa2.errors.AA2WeightsError):
            pack.nodes.nodes_segment.AA2LoadSAM2().load("checkpoints/../../etc/passwd")
    finally:
        host.set_models_dir(None)
