"""Extraction nodes: Sapiens pose / depth and DWPose, on the stand-in models of test_sapiens and test_dwpose,
read from a models folder the way ComfyUI resolves names."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from comfy_contract import contract_problems
from test_sapiens import model_files  # noqa: F401  (fixture: Sapiens TorchScript stand-ins on disk)

DOTS = [(53, 17), (10, 40), (70, 5)]  # (x, y) per frame
H, W = 60, 80


@pytest.fixture(scope="module")
def extract(pack):
    return pack.nodes.nodes_extract


@pytest.fixture(scope="module")
def errors(pack):
    return pack.aa2.errors  # the pack's own classes: it is imported under ComfyUI's module name


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, model_files):  # noqa: F811
    root = tmp_path_factory.mktemp("models")
    (root / "sapiens").mkdir()
    names = {133: "pose133_torchscript.pt2", "depth": "depth_torchscript.pt2", "state_dict": "sapiens.pth"}
    for key, name in names.items():
        shutil.copy(model_files[key], root / "sapiens" / name)
    (root / "sapiens" / "notes.txt").write_text("not a model")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "elsewhere_torchscript.pt2").write_bytes(b"")
    (root / "checkpoints" / "elsewhere.onnx").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def dwpose_dir(models_dir):
    dwpose = pytest.importorskip("test_dwpose")  # skips without onnx / onnxruntime
    (models_dir / "dwpose").mkdir(exist_ok=True)
    dwpose.detector_file(models_dir / "dwpose" / "yolox_l.onnx", dwpose.DETECTIONS)  # people at BOX_A, BOX_C
    dwpose.dot_file(models_dir / "dwpose" / "dw-ll_ucoco_384.onnx")  # every keypoint on the reddest pixel
    (models_dir / "dwpose" / "readme.safetensors").write_bytes(b"")
    return dwpose


@pytest.fixture
def in_models(pack, models_dir):
    pack.nodes.host.set_models_dir(models_dir)
    yield models_dir
    pack.nodes.host.set_models_dir(None)


def dot_image(colour=(1.0, 1.0, 1.0), h=H, w=W, dots=DOTS) -> torch.Tensor:
    """IMAGE [F, H, W, 3]: black frames with one dot each."""
    image = torch.zeros(len(dots), h, w, 3)
    for f, (x, y) in enumerate(dots):
        image[f, y, x] = torch.tensor(colour)
    return image


def body(frame: dict) -> np.ndarray:
    return np.asarray(frame["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)


@pytest.mark.parametrize("name", ["AA2SapiensPose", "AA2SapiensDepth", "AA2DWPose"])
def test_extraction_nodes_meet_the_node_contract(pack, name):
    assert contract_problems(pack.NODE_CLASS_MAPPINGS[name]) == []


def test_dropdowns_list_only_their_own_model_folder(extract, in_models, dwpose_dir):
    sapiens = extract.AA2SapiensPose.INPUT_TYPES()["required"]["model"][0]
    assert sapiens == ["sapiens/depth_torchscript.pt2", "sapiens/pose133_torchscript.pt2", "sapiens/sapiens.pth"]
    assert extract.AA2SapiensDepth.INPUT_TYPES()["required"]["model"][0] == sapiens
    required = extract.AA2DWPose.INPUT_TYPES()["required"]
    files = ["dwpose/dw-ll_ucoco_384.onnx", "dwpose/yolox_l.onnx"]
    assert required["detector"][0] == files + [extract.NO_DETECTOR]
    assert required["pose_model"][0] == files
    # DWPose's usual files are preselected, not merely the first in the list
    assert required["detector"][1]["default"] == "dwpose/yolox_l.onnx"
    assert required["pose_model"][1]["default"] == "dwpose/dw-ll_ucoco_384.onnx"


def test_without_files_the_dropdowns_are_empty_and_the_nodes_still_list(extract, pack, tmp_path):
    pack.nodes.host.set_models_dir(tmp_path)
    try:
        assert extract.AA2SapiensPose.INPUT_TYPES()["required"]["model"][0] == []
        assert extract.AA2DWPose.INPUT_TYPES()["required"]["detector"][0] == [extract.NO_DETECTOR]
    finally:
        pack.nodes.host.set_models_dir(None)


def test_mask_boxes_scale_to_the_frames_and_skip_empty_frames(extract):
    mask = torch.zeros(2, 30, 40)  # half the frames' size
    mask[0, 5:10, 10:20] = 1
    frames = torch.zeros(2, 3, H, W)
    assert extract._mask_boxes(mask, frames) == [(20.0, 10.0, 40.0, 20.0), None]
    assert extract._mask_boxes(None, frames) is None


def test_sapiens_pose_finds_the_dot_and_draws_it(extract, in_models):
    keypoints, skeleton = extract.AA2SapiensPose().extract(dot_image(), "sapiens/pose133_torchscript.pt2")
    assert len(keypoints) == len(DOTS) and (keypoints[0]["canvas_height"], keypoints[0]["canvas_width"]) == (H, W)
    for frame, (x, y) in zip(keypoints, DOTS):
        kp = body(frame)
        assert (kp[:, 2] == 1).all() and np.abs(kp[:, :2] - (x, y)).max() < 0.5
    assert skeleton.shape == (len(DOTS), H, W, 3)
    for f, (x, y) in enumerate(DOTS):  # every joint sits on the dot: drawn there, and nowhere far off
        assert skeleton[f, y, x].max() > 0.5 and skeleton[f, (y + 30) % H, (x + 40) % W].max() == 0


def test_sapiens_pose_reads_the_person_box_from_the_mask(extract, in_models):
    mask = torch.zeros(len(DOTS), H, W)
    mask[0, 40:60, 0:20] = 1  # frame 0: a box away from its dot; frames 1, 2: empty, so whole frames
    keypoints, _ = extract.AA2SapiensPose().extract(dot_image(), "sapiens/pose133_torchscript.pt2", mask=mask,
                                                    hands=False, face=False)
    assert (body(keypoints[0])[:, 2] == 0).all()  # the dot is outside the crop
    assert all((body(frame)[:, 2] == 1).all() for frame in keypoints[1:])
    assert keypoints[1]["people"][0]["hand_left_keypoints_2d"] is None


def test_a_missing_or_outside_file_names_models_sapiens(extract, errors, in_models):
    with pytest.raises(errors.AA2WeightsError, match="not found in models/sapiens"):
        extract.AA2SapiensPose().extract(dot_image(), "sapiens/missing_torchscript.pt2")
    with pytest.raises(errors.AA2WeightsError, match="models/sapiens"):
        extract.AA2SapiensDepth().extract(dot_image(), "checkpoints/elsewhere_torchscript.pt2")
    with pytest.raises(errors.AA2WeightsError, match=r"_torchscript\.pt2"):  # the state dict explains itself
        extract.AA2SapiensPose().extract(dot_image(), "sapiens/sapiens.pth")


def test_a_node_keeps_its_model_until_a_setting_changes(extract, in_models, monkeypatch):
    loads = []

    def counting(*args, **kwargs):
        loads.append(kwargs["dtype"])
        return load(*args, **kwargs)

    load = extract.load_sapiens
    monkeypatch.setattr(extract, "load_sapiens", counting)
    node = extract.AA2SapiensPose()
    first, _ = node.extract(dot_image(), "sapiens/pose133_torchscript.pt2")
    again, _ = node.extract(dot_image(), "sapiens/pose133_torchscript.pt2")
    assert first == again and loads == [torch.float32]
    node.extract(dot_image(), "sapiens/pose133_torchscript.pt2", precision="bf16")
    assert loads == [torch.float32, torch.bfloat16]


def test_sapiens_depth_is_far_bright_and_fits_pose_depth_modulate_as_its_tooltip_says(extract, pack, in_models):
    h, w, dots = 64, 128, [(90, 20), (30, 50)]
    (depth,) = extract.AA2SapiensDepth().extract(dot_image(h=h, w=w, dots=dots), "sapiens/depth_torchscript.pt2")
    assert depth.shape == (2, h, w, 3) and float(depth.min()) == 0.0
    for f, (x, y) in enumerate(dots):  # the stand-in's depth peaks at the dot: the farthest point is 1
        iy, ix = divmod(int(depth[f, ..., 0].argmax()), w)
        assert abs(ix - x) <= 1 and abs(iy - y) <= 1 and float(depth[f, iy, ix, 0]) == 1.0
    convention = extract.DEPTH_CONVENTION
    assert pack.nodes.nodes_pose.CONVENTIONS[convention] == "depth"
    assert convention in extract.AA2SapiensDepth.DESCRIPTION
    everywhere = torch.ones(2, h, w, 3)  # a skeleton covering the frame keeps all the depth
    _, _, structured = pack.nodes.nodes_pose.PoseDepthModulate().prepare(
        w, h, convention, skeleton_images=everywhere, depth=depth)
    for f, (x, y) in enumerate(dots):  # near is bright there: the far dot darkest, the background brightest
        assert float(structured[f, y, x, 0]) < 0.2 and float(structured[f, 0, 0, 0]) == 1.0


def test_dwpose_detects_people_and_keeps_the_best(extract, in_models, dwpose_dir):
    frames = torch.zeros(2, dwpose_dir.H, dwpose_dir.W, 3)
    node = extract.AA2DWPose()
    keypoints, skeleton = node.extract(frames, "dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx")
    assert [len(f["people"]) for f in keypoints] == [2, 2] and skeleton.shape == (2, dwpose_dir.H, dwpose_dir.W, 3)
    best, _ = node.extract(frames, "dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx", max_people=1)
    assert [len(f["people"]) for f in best] == [1, 1]


def test_dwpose_finds_the_dot_in_mask_boxes_or_whole_frames(extract, in_models, dwpose_dir):
    image = dot_image(colour=(1.0, 0.0, 0.0))
    mask = torch.zeros(len(DOTS), H, W)
    for f, (x, y) in enumerate(DOTS[:2]):
        mask[f, y - 9 : y + 9, x - 6 : x + 6] = 1  # frame 2: empty, so the detector runs there
    node = extract.AA2DWPose()
    boxed, _ = node.extract(image, "dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx", mask=mask)
    whole, _ = node.extract(image, extract.NO_DETECTOR, "dwpose/dw-ll_ucoco_384.onnx")
    for frame, (x, y) in list(zip(boxed[:2], DOTS)) + list(zip(whole, DOTS)):
        kp = body(frame)
        assert len(frame["people"]) == 1 and (kp[:, 2] == 1).all() and np.abs(kp[:, :2] - (x, y)).max() < 0.5
    assert len(boxed[2]["people"]) == 2  # the detector's two people, not one whole-frame person


def test_dwpose_names_models_dwpose_for_a_missing_file(extract, errors, in_models, dwpose_dir):
    with pytest.raises(errors.AA2WeightsError, match="not found in models/dwpose"):
        extract.AA2DWPose().extract(dot_image(), extract.NO_DETECTOR, "dwpose/missing.onnx")
    with pytest.raises(errors.AA2WeightsError, match="models/dwpose"):
        extract.AA2DWPose().extract(dot_image(), "checkpoints/elsewhere.onnx", "dwpose/dw-ll_ucoco_384.onnx")
