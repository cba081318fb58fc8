"""Every input of every registered node, walked with bad values (issue 13 §2).

For each node the walk starts from a valid call (the tiny models and stand-ins the other node tests
build), replaces one input with a bad value of its declared type, and calls the node's FUNCTION as
ComfyUI does. The call must raise one of the pack's `AA2Error`s — a message for a person — and never
another exception (TypeError, KeyError, cv2.error, ...); if it returns, no tensor it returns may hold
NaN or inf. The one exception is a value the host refuses before any node runs: a number outside
its widget's declared min/max. For those the walk asserts the declared bounds exclude it, and still
calls the node (a linked value skips the host's range check), which may then return finite outputs;
except above the max of a cost knob (`steps`), where the node would only do more of the same work.

Each case is named `node-input-bad_value`, so a failure says which one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch

from comfy_contract import EmptyNoise, RandomNoise
from conftest import load_pack_like_comfyui
from test_nodes_extract import dot_image
from test_retarget import driving_clip
from test_sam2_segment import micro_files, one_thread  # noqa: F401  (fixtures: micro SAM2 on disk, one thread)
from test_sapiens import model_files  # noqa: F401  (fixture: Sapiens TorchScript stand-ins on disk)

F, H, W = 2, 64, 64  # two frames: the least that can disagree in length with another input
ESCAPE = "../../../../etc/passwd"
COST_KNOBS = {"steps"}  # above their max they only cost time (201 steps: 15 s), so the host's check is the test
OTHER_REFERENCE = object()  # stands for a reference encoded at another size than the pose's (built in `walk`)


# ------------------------------------------------------------------------------------ bad values by type


@dataclass(frozen=True)
class Bad:
    """One bad value: `make(valid)` builds it from the input's valid value in the node's valid call."""

    name: str
    make: Callable[[Any], Any]
    host_refuses: bool = False  # the host's own validation stops it before the node runs


def _poked(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def make(tensor: torch.Tensor) -> torch.Tensor:
        bad = tensor.clone()
        bad.view(-1)[bad.numel() // 2] = value
        return bad
    return make


IMAGE_BAD = [
    Bad("nan_pixel", _poked(math.nan)),
    Bad("inf_pixel", _poked(math.inf)),
    Bad("floats_0_to_255", lambda image: image * 255),
    Bad("floats_minus1_to_1", lambda image: image * 2 - 1),
    Bad("int32", lambda image: (image * 255).to(torch.int32)),
    Bad("no_frames", lambda image: image[:0]),
    Bad("zero_height", lambda image: image[:, :0]),
    Bad("one_image_without_batch", lambda image: image[0]),
    Bad("channels_first", lambda image: image.permute(0, 3, 1, 2).contiguous()),
]
MASK_BAD = [
    Bad("nan_pixel", _poked(math.nan)),
    Bad("inf_pixel", _poked(math.inf)),
    Bad("no_frames", lambda mask: mask[:0]),
    Bad("zero_size", lambda mask: mask[:, :0, :0]),
    Bad("channel_last_axis", lambda mask: mask[..., None]),
    Bad("one_row", lambda mask: mask[0, 0]),
]
POSE_KEYPOINT_BAD = [
    Bad("empty_list", lambda _: []),
    Bad("frames_not_dicts", lambda _: [1, 2]),
    Bad("people_not_a_list", lambda kp: [{**frame, "people": 5} for frame in kp]),
    Bad("five_numbers", lambda kp: [{**frame, "people": [{"pose_keypoints_2d": [1.0] * 5}]} for frame in kp]),
    Bad("nan_coordinates", lambda kp: [{**frame, "people": [{"pose_keypoints_2d": [math.nan] * 54}]} for frame in kp]),
    Bad("text_coordinates", lambda kp: [{**frame, "people": [{"pose_keypoints_2d": ["x"] * 54}]} for frame in kp]),
    Bad("negative_canvas", lambda kp: [{**frame, "canvas_width": -5} for frame in kp]),
    Bad("nobody", lambda kp: [{**frame, "people": []} for frame in kp]),
]
STRING_BAD = [  # the pack's STRING inputs are JSON or number lists typed by hand
    Bad("unclosed_json", lambda _: "[[1, 2"),
    Bad("nan_numbers", lambda _: "[[NaN, NaN]]"),
    Bad("words_for_numbers", lambda _: '[["a", "b"]]'),
    Bad("bare_numbers", lambda _: "[1, 2]"),
    Bad("dict_of_the_wrong_kind", lambda _: '[{"positive": 5}]'),
    Bad("plain_text", lambda _: "the person on the left"),
    Bad("far_outside_the_frame", lambda _: "[[1e9, 1e9]]"),
]
NOISE_BAD = [
    Bad("not_a_noise", lambda _: object()),
    Bad("all_zeros", lambda _: EmptyNoise()),
    Bad("nan_noise", lambda _: SimpleNamespace(seed=1, generate_noise=lambda latent: latent["samples"] * math.nan)),
    Bad("wrong_shape", lambda _: SimpleNamespace(seed=1, generate_noise=lambda latent: torch.zeros(1, 4, 2, 2))),
]
SIGMAS_BAD = [
    Bad("nan_sigma", _poked(math.nan)),
    Bad("empty", lambda sigmas: sigmas[:0]),
    Bad("one_value", lambda sigmas: sigmas[:1]),
    Bad("matrix", lambda sigmas: sigmas[None].repeat(2, 1)),
]
SAMPLER_BAD = [
    Bad("returns_nan", lambda sampler: SimpleNamespace(
        sampler_function=lambda model, x, sigmas, **kw: x * math.nan, extra_options={})),
]


def _number_bad(kind: str, options: dict) -> list[Bad]:
    bad = []
    if "min" in options:
        bad.append(Bad("below_min", lambda _, v=options["min"] - 1: v, host_refuses=True))
    if "max" in options:
        bad.append(Bad("above_max", lambda _, v=options["max"] + 1: v, host_refuses=True))
    if kind == "FLOAT":  # NaN passes the host's range check: every comparison with it is False
        bad.append(Bad("nan", lambda _: math.nan))
    return bad


def _choice_bad() -> list[Bad]:
    """Names no dropdown lists; for a model dropdown, names that would reach outside its folders."""
    return [
        Bad("not_in_list", lambda _: "no such choice"),
        Bad("missing_file", lambda valid: f"{valid.split('/')[0]}/missing.safetensors"),
        Bad("escapes_with_dotdot", lambda valid: f"{valid.split('/')[0]}/{ESCAPE}"),
        Bad("absolute_path", lambda _: "/etc/passwd"),
        Bad("empty", lambda _: ""),
    ]


def bad_values(kind, options: dict) -> list[Bad]:
    if isinstance(kind, list):
        return _choice_bad()
    if kind in ("INT", "FLOAT"):
        return _number_bad(kind, options)
    return {"IMAGE": IMAGE_BAD, "MASK": MASK_BAD, "POSE_KEYPOINT": POSE_KEYPOINT_BAD, "STRING": STRING_BAD,
            "NOISE": NOISE_BAD, "SIGMAS": SIGMAS_BAD, "SAMPLER": SAMPLER_BAD}.get(kind, [])


# Values of the right type that are wrong with the node's other inputs (lengths, sizes, frame indices).
CROSS_BAD = {
    "ShapeAgnosticMask": {"driving_frames": [Bad("three_frames_for_two_masks", lambda image: image[[0, 1, 1]])]},
    "AA2MaskPreview": {"mask": [Bad("half_size", lambda mask: mask[:, ::2, ::2]),
                                Bad("three_frames_for_two_images", lambda mask: mask[[0, 1, 1]])]},
    "AA2ObjectFrames": {"mask": [Bad("three_frames_for_two_images", lambda mask: mask[[0, 1, 1]])]},
    "AA2SapiensPose": {"mask": [Bad("three_frames_for_two_images", lambda mask: mask[[0, 1, 1]])]},
    "AA2DWPose": {"mask": [Bad("three_frames_for_two_images", lambda mask: mask[[0, 1, 1]])]},
    "PoseDepthModulate": {"depth": [Bad("three_frames_for_two_poses", lambda image: image[[0, 1, 1]])]},
    "ObjectSegment": {"prompt_frame": [Bad("after_the_last_frame", lambda _: F)]},
}
for _sampler in ("AA2Sampler", "LongVideoChainer"):
    CROSS_BAD[_sampler] = {
        "driving_frames": [Bad("longer_than_the_pose", lambda image: image[[0, 1, 1]]),
                           Bad("shorter_than_the_pose", lambda image: image[:1])],
        "object_frames": [Bad("longer_than_the_pose", lambda image: image[[0, 1, 1]])],
        "agnostic_mask": [Bad("three_frames_for_two_poses", lambda mask: mask[[0, 1, 1]])],
        "reference": [Bad("encoded_for_another_size", lambda _: OTHER_REFERENCE)],
    }
CROSS_BAD["LongVideoChainer"]["motion_frames"] = [Bad("a_whole_clip", lambda _: 2)]


# ------------------------------------------------------------------------------------ the cases


def _declared_inputs() -> dict[str, dict[str, tuple]]:
    """node id -> input name -> (type, options), read from a copy of the pack loaded for collection."""
    pack = load_pack_like_comfyui("aa2_node_walk_collection")
    declared = {}
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        entries = {**spec.get("required", {}), **spec.get("optional", {})}
        declared[node_id] = {name: (entry[0], entry[1] if len(entry) > 1 else {}) for name, entry in entries.items()}
    return declared


DECLARED = _declared_inputs()
CASES = [
    pytest.param(node_id, name, bad, id=f"{node_id}-{name}-{bad.name}")
    for node_id, inputs in DECLARED.items()
    for name, (kind, options) in inputs.items()
    for bad in bad_values(kind, options) + CROSS_BAD.get(node_id, {}).get(name, [])
]


# ------------------------------------------------------------------------------------ valid calls


def _image(frames=F, h=H, w=W, seed=0) -> torch.Tensor:
    return torch.rand(frames, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _mask(frames=F, h=H, w=W) -> torch.Tensor:
    mask = torch.zeros(frames, h, w)
    mask[:, h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1
    return mask


def _link_folders(root, sources: dict) -> None:
    """`root/<folder>` as links to the stand-ins' folders: one models dir for every node."""
    for folder, source in sources.items():
        (root / folder).symlink_to(source, target_is_directory=True)


@pytest.fixture(scope="module")
def models(pack, tiny_weights, tmp_path_factory, model_files, micro_files):  # noqa: F811
    try:
        import test_dwpose as dwpose  # its ONNX stand-ins need onnx and onnxruntime
    except pytest.skip.Exception:
        dwpose = None
    root = tmp_path_factory.mktemp("walk_models")
    _link_folders(root, {p.name: p for p in tiny_weights.iterdir() if p.is_dir()})
    for folder in ("sapiens", "dwpose", "sam2"):
        (root / folder).mkdir()
    (root / "sapiens" / "pose133_torchscript.pt2").symlink_to(model_files[133])
    (root / "sapiens" / "depth_torchscript.pt2").symlink_to(model_files["depth"])
    if dwpose is not None:
        dwpose.detector_file(root / "dwpose" / "yolox_l.onnx", dwpose.DETECTIONS)
        dwpose.dot_file(root / "dwpose" / "dw-ll_ucoco_384.onnx")
    (root / "sam2" / "micro.pt").symlink_to(micro_files["pt"])
    pack.nodes.host.set_models_dir(root)
    yield SimpleNamespace(root=root, dwpose=dwpose)
    pack.nodes.host.set_models_dir(None)


@pytest.fixture(scope="module")
def walk(pack, models, micro_files):  # noqa: F811
    """Valid calls of every node; the walk takes the first one that connects the input it spoils."""
    nodes = pack.nodes
    (hosted,) = nodes.nodes_model.LoadAA2Model().load(base="animateanyone2/aa2-tiny.safetensors")
    convention = list(nodes.nodes_pose.CONVENTIONS)[0]
    pose, _, _ = nodes.nodes_pose.PoseDepthModulate().prepare(W, H, convention, skeleton_images=_image(seed=1))
    (reference,) = nodes.nodes_sampling.AA2EncodeReference().encode(hosted, _image(1, seed=4), W, H)
    (other_reference,) = nodes.nodes_sampling.AA2EncodeReference().encode(hosted, _image(1, seed=4), 64, 128)
    (sigmas,) = nodes.nodes_sampling.AA2Sigmas().sigmas(hosted, "karras", 2)
    from aa2.sampling.k_samplers import sample_euler

    euler = SimpleNamespace(sampler_function=lambda model, x, sigmas, extra_args=None, callback=None, disable=None,
                            **options: sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback),
                            extra_options={})
    sam2 = pack.aa2.conditioning.sam2_segment.load_sam2(micro_files["pt"], config=micro_files["yaml"])
    dw = models.dwpose
    segment_frames = _image(h=40, w=56, seed=7)
    render = dict(aa2_model=hosted, pose=pose, seed=3, steps=1, cfg=1.0, sampler_name="default",
                  environment="auto", paste_environment=False)
    scene = dict(reference_image=_image(1, seed=4), driving_frames=_image(seed=5), agnostic_mask=_mask(),
                 object_frames=_image(seed=6), release_model=False, offload="model", cut_longer_inputs=False)
    custom = dict(reference=reference, sampler=euler, sigmas=sigmas, noise=RandomNoise(5))
    chain = dict(clip_length=2, motion_frames=1, overlap=0)
    calls = {
        "LoadAA2Model": [dict(base="animateanyone2/aa2-tiny.safetensors", motion_module="from base",
                              clip_vision="from base", vae="from base", fusion="auto", precision="auto")],
        "ShapeAgnosticMask": [dict(mask=_mask(), blocks_h=0, blocks_w=0, box="per_frame", dilate=0,
                                   empty_frames="keep", driving_frames=_image(), fill=0.5)],
        "AA2MaskPreview": [dict(images=_image(), mask=_mask(), color="red", opacity=0.5)],
        "PoseDepthModulate": [
            dict(width=W, height=H, depth_convention=convention, skeleton_images=_image(seed=1), depth=_image(seed=2),
                 hands=True, face=True),
            dict(width=192, height=256, depth_convention=convention, pose_keypoints=driving_clip(F),
                 reference_keypoints=driving_clip(1, seed=1)),
        ],
        "AA2SapiensPose": [dict(frames=dot_image()[:F], model="sapiens/pose133_torchscript.pt2", precision="fp32",
                                mask=_mask(h=60, w=80), hands=True, face=True)],
        "AA2SapiensDepth": [dict(frames=dot_image()[:F], model="sapiens/depth_torchscript.pt2", precision="fp32")],
        "AA2LoadSAM2": [dict(model="sam2/micro.pt", precision="fp32")],
        "ObjectSegment": [dict(sam2=sam2, frames=segment_frames, prompt_frame=0, positive_points="[[14, 12]]",
                               negative_points="[[2, 2]]", box="30, 5, 54, 35",
                               objects_json='[{"box": [30, 5, 54, 35]}]', prompt_mask=_mask(1, 40, 56))],
        "AA2ObjectFrames": [dict(frames=segment_frames, mask=_mask(h=40, w=56))],
        "AA2EncodeReference": [dict(aa2_model=hosted, image=_image(1, seed=4), width=W, height=H,
                                    clip_crop="squash", offload="model")],
        "AA2Sampler": [{**render, **scene}, {**render, **custom}],
        "LongVideoChainer": [{**render, **chain, **scene}, {**render, **chain, **custom}],
        "AA2Sigmas": [dict(aa2_model=hosted, schedule="karras", steps=2)],
    }
    if dw is not None:
        calls["AA2DWPose"] = [dict(frames=_image(h=dw.H, w=dw.W, seed=8), detector="dwpose/yolox_l.onnx",
                                   pose_model="dwpose/dw-ll_ucoco_384.onnx", mask=_mask(h=dw.H, w=dw.W),
                                   max_people=0, hands=True, face=True)]
    return SimpleNamespace(pack=pack, calls=calls, other_reference=other_reference, micro_config=micro_files["yaml"])


def _valid_calls(walk, node_id: str) -> list[dict]:
    if node_id == "AA2DWPose" and node_id not in walk.calls:
        pytest.skip("DWPose's stand-in models need onnx and onnxruntime")
    return walk.calls[node_id]


def _run(walk, node_id: str, call: dict, monkeypatch):
    pack = walk.pack
    if node_id == "AA2LoadSAM2":  # the micro model's config is not one of SAM2's bundled ones
        segment = pack.nodes.nodes_segment
        monkeypatch.setattr(segment, "load_sam2", functools.partial(segment.load_sam2, config=walk.micro_config))
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    return getattr(cls(), cls.FUNCTION)(**call)


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in a node's result, however nested (tuples, dicts, lists, dataclasses)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for name in value.__dataclass_fields__ for t in _tensors(getattr(value, name))]
    return []


def _non_finite(result) -> list[str]:
    return [f"output tensor {i} {tuple(t.shape)}" for i, t in enumerate(_tensors(result))
            if t.is_floating_point() and not torch.isfinite(t).all()]


# ------------------------------------------------------------------------------------ tests


def test_the_walk_covers_every_registered_node(walk):
    assert set(walk.calls) | {"AA2DWPose"} == set(walk.pack.NODE_CLASS_MAPPINGS) == set(DECLARED)


@pytest.mark.parametrize("node_id", sorted(DECLARED))
def test_every_input_is_connected_in_a_valid_call_that_succeeds(walk, node_id, monkeypatch):
    """The walk's baseline: without this, a bad value could be 'refused' for another input's fault."""
    calls = _valid_calls(walk, node_id)
    unconnected = set(DECLARED[node_id]) - {name for call in calls for name in call}
    assert not unconnected, f"no valid call connects {sorted(unconnected)}"
    for call in calls:
        result = _run(walk, node_id, dict(call), monkeypatch)
        assert not _non_finite(result)


@pytest.mark.parametrize("node_id, name, bad", CASES)
def test_a_bad_input_gets_an_aa2_error_never_another_exception_or_a_non_finite_output(
        walk, node_id, name, bad, monkeypatch):
    _, options = DECLARED[node_id][name]
    call = dict(next(c for c in _valid_calls(walk, node_id) if name in c))
    value = bad.make(call[name])
    if value is OTHER_REFERENCE:
        value = walk.other_reference
    call[name] = value
    if bad.host_refuses:  # the host stops this widget value before any node runs; a link skips that check
        assert not options["min"] <= value <= options["max"]
        if name in COST_KNOBS and value > options["max"]:
            return
    try:
        result = _run(walk, node_id, call, monkeypatch)
    except walk.pack.aa2.errors.AA2Error as error:
        assert str(error).strip(), "an empty message"
        return
    except Exception as error:  # noqa: BLE001 - the point of the walk: name what escaped
        pytest.fail(f"{type(error).__module__}.{type(error).__name__} instead of an AA2 error: {error}")
    assert not _non_finite(result), f"returned non-finite values: {_non_finite(result)}"
    assert bad.host_refuses, f"{name}={bad.name} was accepted without a word"
