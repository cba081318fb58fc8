"""DWPose through onnxruntime, on tiny ONNX graphs with DWPose's real names and shapes.

The "models" are written with `onnx.helper` and are exact, so every number below is computed by
hand from the conventions in `aa2/conditioning/dwpose.py`'s docstring:

* detectors output `[1, 8400, 85]` zeros except chosen rows (raw YOLOX predictions); a "probe"
  row's objectness is one pixel of the detector's input / 255, so a test can see what the
  detector was fed;
* "peaks" pose models output SimCC vectors `[1, 133, 576]` / `[1, 133, 768]` with one peak per
  keypoint at a chosen bin;
* the "dot" pose model finds the brightest red pixel of its input: simcc_x is the red channel's
  column maxima, each repeated twice (split ratio 2), simcc_y the row maxima, for all 133
  keypoints, so a red dot in the frame is every keypoint.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from aa2.conditioning.dwpose import dwpose_detect, dwpose_keypoints, load_dwpose  # noqa: E402
from aa2.conditioning.skeleton import read_pose_keypoints  # noqa: E402
from aa2.errors import AA2Error, AA2InputError, AA2WeightsError  # noqa: E402

CPU = ["CPUExecutionProvider"]
DET_SHAPE, POSE_SHAPE = [1, 3, 640, 640], [1, 3, 384, 288]
CELLS = 80 * 80 + 40 * 40 + 20 * 20  # YOLOX rows at 640: strides 8, 16, 32
H, W = 120, 160  # detector frames: letterboxed by r = 4 into 480 × 640
DOT_H, DOT_W = 60, 80
DOTS = [(53, 17), (10, 40), (70, 5)]  # (x, y) per frame


def row(stride: int, gx: int, gy: int) -> int:
    """The prediction row of grid cell (gx, gy) at `stride` in a 640 × 640 YOLOX output."""
    offset = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
    return offset + gy * (640 // stride) + gx


A, B, C, D, E = row(8, 20, 30), row(8, 21, 30), row(32, 15, 5), row(16, 5, 5), row(16, 30, 30)
# Raw predictions (dx, dy, log w, log h, objectness, class 0 = person, class 1, ...).
DETECTIONS = {
    A: [0.5, 0.5, math.log(4), math.log(8), 0.9, 0.9],  # centre (164, 244), 32 × 64: score 0.81
    B: [0.5, 0.5, math.log(4), math.log(8), 0.8, 0.75],  # A shifted 8 px right: IoU 0.6, score 0.6
    C: [0.0, 0.0, math.log(2), math.log(4), 1.0, 0.7],  # centre (480, 160), 64 × 128: score 0.7
    D: [0.0, 0.0, math.log(2), math.log(2), 0.9, 0.1, 0.95],  # a confident non-person
    E: [0.0, 0.0, math.log(2), math.log(2), 0.5, 0.5],  # a person at 0.25, under the 0.3 bar
}
# A and C in frame pixels: (centre ∓ size / 2) / r.
BOX_A = [(164 - 16) / 4, (244 - 32) / 4, (164 + 16) / 4, (244 + 32) / 4]
BOX_C = [(480 - 32) / 4, (160 - 64) / 4, (480 + 32) / 4, (160 + 64) / 4]


# --- tiny ONNX graphs ------------------------------------------------------------------------


def _save(path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime releases back to 1.14
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _sparse(name: str, shape: list[int], entries: dict[tuple, float], nodes: list, inits: list) -> str:
    """Nodes making a float tensor of zeros with `entries` set; returns its name."""
    inits.append(_const(f"{name}_shape", shape))
    nodes.append(helper.make_node("ConstantOfShape", [f"{name}_shape"], [f"{name}_zeros"]))
    if not entries:
        return f"{name}_zeros"
    inits += [_const(f"{name}_at", list(entries)), _const(f"{name}_val", list(entries.values()), np.float32)]
    nodes.append(helper.make_node("ScatterND", [f"{name}_zeros", f"{name}_at", f"{name}_val"], [f"{name}_set"]))
    return f"{name}_set"


def detector_file(path, rows: dict[int, list[float]], probes=(), input_shape=DET_SHAPE, cells=CELLS,
                  input_type=TensorProto.FLOAT):
    """probes: (row, (channel, y, x)) — that row's objectness is input[0, channel, y, x] / 255."""
    nodes, inits = [], []
    entries = {(0, r, c): v for r, values in rows.items() for c, v in enumerate(values)}
    base = _sparse("pred", [1, cells, 85], entries, nodes, inits)
    if probes:
        inits += [_const("probe_px", [[0, *px] for _, px in probes]),
                  _const("probe_at", [[0, r, 4] for r, _ in probes]), _const("inv255", 1 / 255, np.float32)]
        nodes += [helper.make_node("GatherND", ["images", "probe_px"], ["probe_raw"]),
                  helper.make_node("Mul", ["probe_raw", "inv255"], ["probe_val"]),
                  helper.make_node("ScatterND", [base, "probe_at", "probe_val"], ["output"])]
    else:
        nodes.append(helper.make_node("Identity", [base], ["output"]))
    return _save(path, nodes, [helper.make_tensor_value_info("images", input_type, input_shape)],
                 [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, cells, 85])], inits)


def peaks_file(path, peaks: dict[int, tuple[int, float, int, float]], keypoints=133):
    """peaks: keypoint → (x bin, x value, y bin, y value)."""
    nodes, inits = [], []
    x = _sparse("x", [1, keypoints, 576], {(0, k, p[0]): p[1] for k, p in peaks.items()}, nodes, inits)
    y = _sparse("y", [1, keypoints, 768], {(0, k, p[2]): p[3] for k, p in peaks.items()}, nodes, inits)
    nodes += [helper.make_node("Identity", [x], ["simcc_x"]), helper.make_node("Identity", [y], ["simcc_y"])]
    return _save(path, nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, POSE_SHAPE)],
                 [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, keypoints, 576]),
                  helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, keypoints, 768])], inits)


def dot_file(path):
    inits = [_const("c0", [0]), _const("c1", [1]), _const("x_col", [1, 1, 288, 1]), _const("x_len", [1, 1, 576]),
             _const("y_len", [1, 1, 768]), _const("x_all", [1, 133, 576]), _const("y_all", [1, 133, 768])]
    nodes = [
        helper.make_node("Slice", ["input", "c0", "c1", "c1"], ["red"]),  # channel 0: red, if fed RGB
        helper.make_node("ReduceMax", ["red"], ["cols"], axes=[2], keepdims=1),  # [1, 1, 1, 288]
        helper.make_node("Reshape", ["cols", "x_col"], ["cols_t"]),
        helper.make_node("Concat", ["cols_t", "cols_t"], ["cols_2"], axis=3),  # each bin twice: ratio 2
        helper.make_node("Reshape", ["cols_2", "x_len"], ["x1"]),
        helper.make_node("Expand", ["x1", "x_all"], ["simcc_x"]),
        helper.make_node("ReduceMax", ["red"], ["rows"], axes=[3], keepdims=1),  # [1, 1, 384, 1]
        helper.make_node("Concat", ["rows", "rows"], ["rows_2"], axis=3),
        helper.make_node("Reshape", ["rows_2", "y_len"], ["y1"]),
        helper.make_node("Expand", ["y1", "y_all"], ["simcc_y"]),
    ]
    return _save(path, nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, POSE_SHAPE)],
                 [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
                  helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768])], inits)


# Keypoint k peaks at x bin 2k + 10 and y bin 3k + 7, so every keypoint lands somewhere else.
SPREAD = {k: (2 * k + 10, 0.9, 3 * k + 7, 0.9) for k in range(133)}


@pytest.fixture(scope="session")
def onnx_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dwpose")
    files = {
        "detector": detector_file(root / "yolox_l.onnx", DETECTIONS),
        "probe": detector_file(root / "probe.onnx", {r: [*DETECTIONS[r][:4], 0.0, 1.0] for r in (A, C, E)},
                               probes=[(A, (0, 0, 0)), (C, (0, 639, 0)), (E, (2, 0, 0))]),
        "nobody": detector_file(root / "nobody.onnx", {}),
        "small_detector": detector_file(root / "yolox_320.onnx", {}, input_shape=[1, 3, 320, 320], cells=2100),
        "fp16_detector": detector_file(root / "yolox_fp16.onnx", {}, input_type=TensorProto.FLOAT16),
        "spread": peaks_file(root / "dw-ll_ucoco_384.onnx", SPREAD),
        "scores": peaks_file(root / "scores.onnx", {0: (100, 0.9, 100, 0.2), 1: (100, 0.2, 100, 0.9),
                                                    2: (100, 0.9, 100, 0.9)}),
        "body17": peaks_file(root / "rtmpose_body.onnx", {k: SPREAD[k] for k in range(17)}, keypoints=17),
        "dot": dot_file(root / "dot.onnx"),
        "junk": root / "junk.onnx",
    }
    files["junk"].write_bytes(b"not a model")
    return files


def blank(f=1, h=H, w=W, rgb=(0.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(f, 3, h, w).clone()


@pytest.fixture(scope="session")
def dot_frames() -> torch.Tensor:
    out = torch.zeros(len(DOTS), 3, DOT_H, DOT_W)
    for f, (x, y) in enumerate(DOTS):
        out[f, 0, y, x] = 1.0  # red: found only if the pose model is fed RGB
    return out


def points(person: dict, key: str) -> np.ndarray:
    return np.asarray(person[key]).reshape(-1, 3)


# --- detector --------------------------------------------------------------------------------


def test_detector_decodes_grid_rows_to_frame_boxes_and_nms_drops_the_duplicate(onnx_files):
    model = load_dwpose(onnx_files["detector"], onnx_files["spread"], providers=CPU)
    (found,) = dwpose_detect(model, blank())
    # A kept, B (IoU 0.6 with A, lower score) suppressed, C kept; D is no person, E scores too low.
    np.testing.assert_allclose(found, [[*BOX_A, 0.81], [*BOX_C, 0.7]], atol=1e-4)


def test_detector_is_fed_bgr_in_a_top_left_letterbox_padded_with_114(onnx_files):
    model = load_dwpose(onnx_files["probe"], onnx_files["spread"], providers=CPU)
    (found,) = dwpose_detect(model, blank(rgb=(0.0, 0.0, 1.0)))  # pure blue
    # A reads channel 0 at the top-left pixel: blue in BGR, and image (not padding) when the
    # letterbox sits top-left. C reads row 639, below the 480 image rows: padding, 114.
    # E reads channel 2 (red in BGR): 0, so nobody.
    np.testing.assert_allclose(found, [[*BOX_A, 1.0], [*BOX_C, 114 / 255]], atol=1e-4)


def test_detector_input_size_is_read_from_the_model(onnx_files):
    model = load_dwpose(onnx_files["small_detector"], onnx_files["spread"], providers=CPU)
    assert model.detector_size == (320, 320)
    assert [len(f) for f in dwpose_detect(model, blank(2))] == [0, 0]


# --- pose ------------------------------------------------------------------------------------


def test_keypoints_map_back_through_the_padded_3_4_crop(onnx_files):
    model = load_dwpose(None, onnx_files["spread"], providers=CPU)
    (frame,) = dwpose_keypoints(model, blank(), boxes=[(40, 20, 100, 140)])
    # Box 60 × 120, padded 1.25 → 75 × 150, widened to 3:4 → 112.5 × 150 around (70, 80):
    # window from (13.75, 5); 288 / 112.5 = 2.56 input pixels per frame pixel.
    def at(k):
        return 13.75 + (2 * k + 10) / 2 / 2.56, 5 + (3 * k + 7) / 2 / 2.56

    person = frame["people"][0]
    body = points(person, "pose_keypoints_2d")
    assert (body[:, 2] == 1).all()
    coco = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 8: 12, 14: 2, 15: 1, 16: 4, 17: 3}  # OpenPose ← COCO
    for openpose, k in coco.items():
        np.testing.assert_allclose(body[openpose, :2], at(k), atol=1e-4)
    np.testing.assert_allclose(body[1, :2], np.mean([at(5), at(6)], axis=0), atol=1e-4)  # neck
    np.testing.assert_allclose(points(person, "hand_left_keypoints_2d")[0, :2], at(91), atol=1e-4)
    np.testing.assert_allclose(points(person, "hand_right_keypoints_2d")[20, :2], at(132), atol=1e-4)
    face = points(person, "face_keypoints_2d")
    assert len(face) == 70
    np.testing.assert_allclose(face[0, :2], at(23), atol=1e-4)
    np.testing.assert_allclose(face[68:, :2], [at(2), at(1)], atol=1e-4)  # the eyes close the face


def test_a_keypoint_scores_the_smaller_of_its_two_simcc_maxima(onnx_files):
    model = load_dwpose(None, onnx_files["scores"], providers=CPU)
    (frame,) = dwpose_keypoints(model, blank())
    body = points(frame["people"][0], "pose_keypoints_2d")
    # COCO 0 (nose) peaks 0.9 in x, 0.2 in y; COCO 1 (left eye) the reverse; COCO 2 both 0.9.
    assert body[0, 2] == 0 and body[15, 2] == 0 and body[14, 2] == 1


def test_red_dot_found_in_boxes_and_in_the_whole_frame(onnx_files, dot_frames):
    model = load_dwpose(None, onnx_files["dot"], providers=CPU)
    boxes = [(x - 6, y - 9, x + 6, y + 9) for x, y in DOTS[:2]] + [None]
    out = dwpose_keypoints(model, dot_frames, boxes=boxes)
    # The argmax is the input pixel nearest the dot: within half an input pixel, which is 0.03
    # frame px in the boxes (17 input px per frame px) and 0.17 in the whole frame (2.88).
    for frame, (x, y), tol in zip(out, DOTS, (0.05, 0.05, 0.2)):
        assert (frame["canvas_height"], frame["canvas_width"]) == (DOT_H, DOT_W)
        (person,) = frame["people"]
        pts = np.concatenate([points(person, k) for k in ("pose_keypoints_2d", "hand_left_keypoints_2d",
                                                            "hand_right_keypoints_2d", "face_keypoints_2d")])
        assert (pts[:, 2] == 1).all()
        assert np.abs(pts[:, 0] - x).max() < tol and np.abs(pts[:, 1] - y).max() < tol


def test_low_confidence_keypoints_are_written_missing(onnx_files, dot_frames):
    model = load_dwpose(None, onnx_files["dot"], providers=CPU)
    # The dot's normalised red is (255 - 123.675) / 58.395 ≈ 2.25 at most.
    (frame,) = dwpose_keypoints(model, dot_frames[:1], min_confidence=3.0)
    assert (points(frame["people"][0], "pose_keypoints_2d") == 0).all()


def test_given_boxes_skip_the_detector_frame_by_frame(onnx_files):
    loaded = load_dwpose(onnx_files["detector"], onnx_files["spread"], providers=CPU)

    class Counting:
        def __init__(self, session):
            self.session, self.calls = session, 0

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, *args, **kwargs):
            self.calls += 1
            return self.session.run(*args, **kwargs)

    model = dataclasses.replace(loaded, detector=Counting(loaded.detector))
    boxed = dwpose_keypoints(model, blank(2), boxes=torch.tensor([[40.0, 20, 100, 140]] * 2))
    assert model.detector.calls == 0 and [len(f["people"]) for f in boxed] == [1, 1]
    mixed = dwpose_keypoints(model, blank(2), boxes=[(40, 20, 100, 140), None])
    assert model.detector.calls == 1 and [len(f["people"]) for f in mixed] == [1, 2]
    assert mixed[0] == boxed[0]


def test_detected_people_come_best_first_and_max_people_keeps_the_best(onnx_files):
    model = load_dwpose(onnx_files["detector"], onnx_files["spread"], providers=CPU)
    (everyone,) = dwpose_keypoints(model, blank())
    (best,) = dwpose_keypoints(model, blank(), max_people=1)
    (in_a,) = dwpose_keypoints(model, blank(), boxes=[BOX_A])
    (in_c,) = dwpose_keypoints(model, blank(), boxes=[BOX_C])
    assert everyone["people"] == in_a["people"] + in_c["people"]
    assert best["people"] == in_a["people"]


def test_a_frame_where_the_detector_finds_nobody_has_no_people(onnx_files):
    model = load_dwpose(onnx_files["nobody"], onnx_files["spread"], providers=CPU)
    out = dwpose_keypoints(model, blank(2))
    assert [f["people"] for f in out] == [[], []] and out[0]["canvas_width"] == W


def test_body_only_rtmpose_gives_a_body_without_hands_or_face(onnx_files):
    model = load_dwpose(None, onnx_files["body17"], providers=CPU)
    (frame,) = dwpose_keypoints(model, blank())
    person = frame["people"][0]
    assert person["hand_left_keypoints_2d"] is None and person["face_keypoints_2d"] is None
    assert (points(person, "pose_keypoints_2d")[:, 2] == 1).all()


def test_hands_and_face_can_be_left_out(onnx_files):
    model = load_dwpose(None, onnx_files["spread"], providers=CPU)
    (frame,) = dwpose_keypoints(model, blank(), hands=False, face=False)
    person = frame["people"][0]
    assert person["hand_right_keypoints_2d"] is None and person["face_keypoints_2d"] is None


def test_output_reads_back_as_pose_keypoints(onnx_files):
    model = load_dwpose(onnx_files["detector"], onnx_files["spread"], providers=CPU)
    (frame,) = read_pose_keypoints(dwpose_keypoints(model, blank()))
    assert len(frame.people) == 2 and frame.people[0].body.shape == (18, 3)


# --- errors ----------------------------------------------------------------------------------


def test_missing_or_unreadable_files_say_where_they_belong(onnx_files, tmp_path):
    with pytest.raises(AA2WeightsError, match=r"not found.*yolox_l\.onnx.*models/dwpose"):
        load_dwpose(tmp_path / "yolox_l.onnx", onnx_files["spread"], providers=CPU)
    with pytest.raises(AA2WeightsError, match=r"pose model not found.*dw-ll_ucoco_384\.onnx.*models/dwpose"):
        load_dwpose(None, tmp_path / "dw-ll_ucoco_384.onnx", providers=CPU)
    with pytest.raises(AA2WeightsError, match="not an ONNX model onnxruntime can read"):
        load_dwpose(onnx_files["junk"], onnx_files["spread"], providers=CPU)


def test_swapped_files_are_refused_saying_what_was_found(onnx_files):
    with pytest.raises(AA2WeightsError, match=r"not a YOLOX person detector.*\[1, 3, 384, 288\].*swapped"):
        load_dwpose(onnx_files["spread"], onnx_files["spread"], providers=CPU)
    with pytest.raises(AA2WeightsError, match=r"not an RTMPose.*output \[1, 8400, 85\].*swapped"):
        load_dwpose(None, onnx_files["detector"], providers=CPU)
    with pytest.raises(AA2WeightsError, match=r"not a YOLOX person detector.*tensor\(float16\).*takes float32"):
        load_dwpose(onnx_files["fp16_detector"], onnx_files["spread"], providers=CPU)


def test_bad_frames_and_boxes_are_refused(onnx_files, dot_frames):
    model = load_dwpose(None, onnx_files["spread"], providers=CPU)
    with pytest.raises(AA2InputError, match=r"\[F, 3, H, W\]"):
        dwpose_keypoints(model, dot_frames.permute(0, 2, 3, 1))
    with pytest.raises(AA2InputError, match="float 0..1"):
        dwpose_keypoints(model, (dot_frames * 255).to(torch.uint8))
    with pytest.raises(AA2InputError, match=r"one \(or None\) per frame"):
        dwpose_keypoints(model, dot_frames, boxes=[None])
    with pytest.raises(AA2InputError, match="x2 > x1"):
        dwpose_keypoints(model, dot_frames, boxes=[(5, 5, 1, 9), None, None])
    with pytest.raises(AA2InputError, match="max_people"):
        dwpose_keypoints(model, dot_frames, max_people=0)
    with pytest.raises(AA2InputError, match="without a detector"):
        dwpose_detect(model, dot_frames)
    with pytest.raises(AA2InputError, match="DWPoseModel"):
        dwpose_keypoints("yolox_l.onnx", dot_frames)


def test_without_onnxruntime_the_error_says_what_to_install(onnx_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(AA2Error, match=r"pip install onnxruntime-gpu.*pip install onnxruntime"):
        load_dwpose(onnx_files["detector"], onnx_files["spread"])


def test_providers_follow_the_torch_device():
    from aa2.conditioning.dwpose import providers_for

    assert providers_for("cpu") == ["CPUExecutionProvider"] and providers_for("mps") == ["CPUExecutionProvider"]
    assert providers_for("cuda:1") is None and providers_for(torch.device("cuda")) is None
