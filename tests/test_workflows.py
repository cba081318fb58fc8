"""The shareable workflows in workflows/: valid UI format, wired as the nodes declare, rebuilt exactly.

The files are what ComfyUI's frontend opens from its templates browser, so they are checked the way
the frontend and the server would read them: the link table against every node's slots, our nodes'
widget values against their INPUT_TYPES, and model names against the files a user downloads. Each
workflow is then run, our nodes for real on tiny weights, the host's nodes by small stand-ins.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest
import torch

from test_sam2_segment import micro_files  # noqa: F401  (fixture: micro SAM2 written to disk)
from test_sapiens import model_files  # noqa: F401  (fixture: Sapiens TorchScript stand-ins on disk)

REPO = Path(__file__).resolve().parent.parent
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}  # the frontend's control_after_generate
# Core nodes the workflows may use (ComfyUI 0.3.64), and the one other pack they need.
CORE = {"LoadImage", "LoadVideo", "GetVideoComponents", "ImageFromBatch", "ImageScale", "CreateVideo",
        "SaveVideo", "PreviewImage", "KSamplerSelect"}
CONTROLNET_AUX = {"DWPreprocessor", "DepthAnythingV2Preprocessor"}


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "tools" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


builder = _load_builder()
NAMES = list(builder.WORKFLOWS)


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict]:
    return {name: json.loads((REPO / "workflows" / f"{name}.json").read_text(encoding="utf-8")) for name in NAMES}


@pytest.fixture(scope="module")
def downloads_dir(pack, tmp_path_factory) -> Path:
    """A models folder holding (empty) every file of the README's weight table, as a user would."""
    root = tmp_path_factory.mktemp("downloads")
    for entry in builder.DOWNLOADS:
        path = root / entry
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:  # a folder of several files (Moore-AnimateAnyone)
            path.mkdir(parents=True)
            for name in pack.aa2.weights.moore.FILES:
                (path / name).touch()
    return root


def _input_types(pack, models_dir: Path | None) -> dict[str, dict]:
    host = pack.nodes.host
    host.set_models_dir(models_dir)
    try:
        return {name: cls.INPUT_TYPES() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    finally:
        host.set_models_dir(None)


@pytest.fixture(scope="module")
def declared(pack, downloads_dir) -> dict[str, dict]:
    """Our nodes' INPUT_TYPES as a user who downloaded the weight table's files sees them."""
    return _input_types(pack, downloads_dir)


def _is_widget(entry) -> bool:
    options = entry[1] if len(entry) > 1 else {}
    return not options.get("forceInput") and (isinstance(entry[0], list) or entry[0] in WIDGET_TYPES)


def _inputs(spec) -> list[tuple[str, tuple, bool]]:
    return ([(n, e, False) for n, e in spec.get("required", {}).items()]
            + [(n, e, True) for n, e in spec.get("optional", {}).items()])


def _widget_names(node_type: str, declared) -> list[str]:
    if node_type in declared:
        return [n for n, e, _ in _inputs(declared[node_type]) if _is_widget(e)]
    if node_type == "Note":
        return ["text"]
    return [name for name, _, _ in builder.HOST_NODES[node_type].widgets]


def _widget_values(node, declared) -> dict:
    """widgets_values by input name, skipping the values the frontend stores after some widgets."""
    values, queue = {}, list(node["widgets_values"])
    if node["type"] in declared:
        for name, entry, _ in _inputs(declared[node["type"]]):
            if not _is_widget(entry):
                continue
            values[name] = queue.pop(0)
            if (entry[1] if len(entry) > 1 else {}).get("control_after_generate"):
                assert queue.pop(0) in CONTROL_VALUES, f"{node['type']}.{name}: no control value after it"
    else:
        for name in _widget_names(node["type"], declared):
            values[name] = queue.pop(0)
            if name in getattr(builder.HOST_NODES.get(node["type"]), "extra", {}):
                queue.pop(0)
    assert not queue, f"{node['type']} has {len(queue)} widget values too many"
    return values


def _ours(workflow, declared):
    return [n for n in workflow["nodes"] if n["type"] in declared]


# ----------------------------------------------------------------------------- the folder and the builder


def test_the_workflows_folder_holds_exactly_the_built_workflows():
    # ComfyUI lists every JSON file there as a template: nothing else may live in it.
    assert sorted(p.name for p in (REPO / "workflows").iterdir()) == sorted(f"{n}.json" for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_is_exactly_what_the_builder_makes(pack, name):
    text = (REPO / "workflows" / f"{name}.json").read_text(encoding="utf-8")
    assert text == builder.render(name, pack.NODE_CLASS_MAPPINGS), (
        f"workflows/{name}.json is stale: run `.venv/bin/python tools/build_workflows.py`")


def test_the_builder_refuses_values_outside_an_input_declaration(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    with pytest.raises(ValueError, match="not a documented download"):
        builder.pack_widget_values("LoadAA2Model", nodes["LoadAA2Model"], {"base": "checkpoints/other.safetensors"})
    with pytest.raises(ValueError, match="outside"):
        builder.pack_widget_values("AA2Sampler", nodes["AA2Sampler"], {"steps": 0})
    with pytest.raises(ValueError, match="not one of"):
        builder.pack_widget_values("AA2Sampler", nodes["AA2Sampler"], {"environment": "everywhere"})
    with pytest.raises(ValueError, match="no widget named"):
        builder.pack_widget_values("AA2Sampler", nodes["AA2Sampler"], {"pose": 1})


# ----------------------------------------------------------------------------- UI format and links


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_the_frontends_ui_format(workflows, name):
    wf = workflows[name]
    assert {"last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"} <= set(wf)
    assert wf["version"] == 0.4
    ids = [n["id"] for n in wf["nodes"]]
    link_ids = [link[0] for link in wf["links"]]
    assert len(set(ids)) == len(ids) and wf["last_node_id"] == max(ids)
    assert len(set(link_ids)) == len(link_ids) and wf["last_link_id"] == max(link_ids)
    for node in wf["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                "widgets_values"} <= set(node), node["type"]
        assert len(node["pos"]) == 2 and len(node["size"]) == 2 and node["mode"] == 0
        for socket in node["inputs"]:
            assert {"name", "type", "link"} <= set(socket)
        for slot, output in enumerate(node["outputs"]):
            assert {"name", "type", "links"} <= set(output) and output.get("slot_index", slot) == slot
    assert all(len(link) == 6 for link in wf["links"])
    assert sorted(n["order"] for n in wf["nodes"]) == list(range(len(ids)))


@pytest.mark.parametrize("name", NAMES)
def test_links_join_an_output_to_an_input_of_the_same_type(workflows, declared, pack, name):
    wf = workflows[name]
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}
    for link_id, source, out_slot, target, in_slot, kind in wf["links"]:
        output, socket = nodes[source]["outputs"][out_slot], nodes[target]["inputs"][in_slot]
        assert link_id in output["links"] and socket["link"] == link_id
        assert output["type"] == socket["type"] == kind, (nodes[source]["type"], nodes[target]["type"], kind)
        assert nodes[source]["order"] < nodes[target]["order"]  # the frontend's execution order
    for node in wf["nodes"]:  # ...and no slot points at a link that is not in the table, or not to it
        for slot, socket in enumerate(node["inputs"]):
            if socket["link"] is not None:
                assert links[socket["link"]][3:5] == [node["id"], slot]
        for slot, output in enumerate(node["outputs"]):
            for link_id in output["links"] or []:
                assert links[link_id][1:3] == [node["id"], slot]


@pytest.mark.parametrize("name", NAMES)
def test_slots_are_the_ones_each_node_declares(workflows, declared, pack, name):
    """Our nodes' sockets and outputs as INPUT_TYPES / RETURN_TYPES say; host nodes as HOST_NODES copied them."""
    for node in workflows[name]["nodes"]:
        kind = node["type"]
        if kind == "Note":
            assert not node["inputs"] and not node["outputs"]
            continue
        if kind in declared:
            cls = pack.NODE_CLASS_MAPPINGS[kind]
            inputs = _inputs(declared[kind])
            sockets = [(n, e[0], optional) for n, e, optional in inputs if not _is_widget(e)]
            widgets = {n: ("COMBO" if isinstance(e[0], list) else e[0]) for n, e, _ in inputs if _is_widget(e)}
            outputs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))
        else:
            host = builder.HOST_NODES[kind]
            sockets, outputs = list(host.inputs), list(host.outputs)
            widgets = {n: t for n, t, _ in host.widgets}
        saved = node["inputs"]
        assert [(s["name"], s["type"], s.get("shape") == 7) for s in saved[:len(sockets)]] == sockets, kind
        for socket in saved[len(sockets):]:  # widgets fed by a link follow the sockets
            assert socket["widget"]["name"] == socket["name"] and widgets[socket["name"]] == socket["type"]
            assert socket["link"] is not None
        assert [(o["name"], o["type"]) for o in node["outputs"]] == outputs, kind


def test_node_types_are_ours_core_or_controlnet_aux(workflows, pack):
    assert builder.CORE_NODES == CORE and builder.CONTROLNET_AUX_NODES == CONTROLNET_AUX
    used = {n["type"] for wf in workflows.values() for n in wf["nodes"]}
    assert used <= set(pack.NODE_CLASS_MAPPINGS) | CORE | CONTROLNET_AUX | {"Note"}, used
    # every node of ours appears in some workflow, so a user finds it wired up; AA2ObjectFrames takes
    # masks from other packs' nodes (ObjectSegment cuts its own object frames), so none needs it, and
    # AA2DWPose stands in for comfyui_controlnet_aux's DWPose node that the other workflows use.
    assert set(pack.NODE_CLASS_MAPPINGS) - used == {"AA2ObjectFrames", "AA2DWPose"}
    # ...and the built-in extraction workflow needs no other pack
    extraction = {n["type"] for n in workflows["aa2_builtin_extraction"]["nodes"]}
    assert {"AA2SapiensPose", "AA2SapiensDepth"} <= extraction and not extraction & CONTROLNET_AUX, extraction


def _feeds(workflow) -> set[tuple[str, str, str, str]]:
    """Every link as (source type, output name, target type, input name)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    return {(nodes[source]["type"], nodes[source]["outputs"][out_slot]["name"],
             nodes[target]["type"], nodes[target]["inputs"][in_slot]["name"])
            for _, source, out_slot, target, in_slot, _ in workflow["links"]}


def test_builtin_extraction_wires_sapiens_into_pose_depth_modulate(workflows, declared, pack):
    wf = workflows["aa2_builtin_extraction"]
    assert {("ObjectSegment", "mask", "AA2SapiensPose", "mask"),  # the character mask's boxes are the person's
            ("AA2SapiensPose", "pose_keypoints", "PoseDepthModulate", "pose_keypoints"),
            ("AA2SapiensDepth", "depth", "PoseDepthModulate", "depth"),
            ("AA2SapiensPose", "skeleton", "PreviewImage", "images"),
            ("PoseDepthModulate", "pose", "AA2Sampler", "pose"),
            ("ObjectSegment", "mask", "ShapeAgnosticMask", "mask")} <= _feeds(wf)
    (modulate,) = [n for n in wf["nodes"] if n["type"] == "PoseDepthModulate"]
    # Sapiens depth is far-is-bright: read with the inverse convention, the structured depth would be upside down
    convention = _widget_values(modulate, declared)["depth_convention"]
    assert pack.nodes.nodes_pose.CONVENTIONS[convention] == "depth"


@pytest.mark.parametrize("name", NAMES)
def test_required_inputs_of_our_nodes_are_connected(workflows, declared, name):
    for node in _ours(workflows[name], declared):
        linked = {s["name"] for s in node["inputs"] if s["link"] is not None}
        for input_name, entry in declared[node["type"]].get("required", {}).items():
            assert _is_widget(entry) or input_name in linked, f"{node['type']}.{input_name} is not connected"


# ----------------------------------------------------------------------------- widget values


@pytest.mark.parametrize("name", NAMES)
def test_our_widget_values_are_what_the_inputs_declare(workflows, declared, name):
    """Count, type, range and dropdown choice, against the dropdowns of a user with the README's files."""
    for node in _ours(workflows[name], declared):
        spec = {n: e for n, e, _ in _inputs(declared[node["type"]])}
        for input_name, value in _widget_values(node, declared).items():
            kind, options = spec[input_name][0], spec[input_name][1] if len(spec[input_name]) > 1 else {}
            where = f"{name}: {node['type']}.{input_name} = {value!r}"
            if isinstance(kind, list):
                assert value in kind, where
            elif kind == "INT":
                assert isinstance(value, int) and not isinstance(value, bool), where
                assert options["min"] <= value <= options["max"], where
            elif kind == "FLOAT":
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                assert options["min"] <= value <= options["max"], where
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), where
            else:
                assert isinstance(value, str), where


@pytest.mark.parametrize("name", NAMES)
def test_model_names_are_documented_downloads(workflows, declared, name):
    used = []
    for node in _ours(workflows[name], declared):
        values = _widget_values(node, declared)
        for input_name in builder.MODEL_INPUTS.get(node["type"], ()):
            default = declared[node["type"]]["required"][input_name][1].get("default")
            assert values[input_name] in builder.DOWNLOADS or values[input_name] == default, values[input_name]
            used += [values[input_name]] if values[input_name] != default else []
    assert used, "a workflow without a model"
    # and the workflow's note tells the user which files it needs
    notes = " ".join(n["widgets_values"][0] for n in workflows[name]["nodes"] if n["type"] == "Note")
    assert all(entry in notes for entry in used), (used, notes)


def test_the_builder_knows_every_model_dropdown(pack, declared):
    """An input is a model dropdown when its choices come from the models folder: empty without one."""
    empty = _input_types(pack, Path("/nonexistent-models-dir"))
    found = {}
    for node_type, spec in declared.items():
        without = {n: e for n, e, _ in _inputs(empty[node_type])}
        for input_name, entry, _ in _inputs(spec):
            if isinstance(entry[0], list) and entry[0] != without[input_name][0]:
                found.setdefault(node_type, []).append(input_name)
    assert {k: tuple(v) for k, v in found.items()} == builder.MODEL_INPUTS


def test_host_widget_values_have_the_declared_types(workflows):
    python = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool, "COMBO": str}
    for wf in workflows.values():
        for node in wf["nodes"]:
            host = builder.HOST_NODES.get(node["type"])
            if host is None:
                continue
            assert len(node["widgets_values"]) == len(host.widgets) + len(host.extra), node["type"]
            values = iter(node["widgets_values"])
            for name, kind, _ in host.widgets:
                assert isinstance(next(values), python[kind]), (node["type"], name)
                if name in host.extra:
                    assert next(values) == host.extra[name]


def test_readme_lists_every_download():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [entry for entry in builder.DOWNLOADS if PurePosixPath(entry).name not in readme]
    assert not missing, f"README's weight table does not list {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_nodes_do_not_overlap(workflows, name):
    title = 30  # the frontend draws the title bar above `pos`
    boxes = [(n["pos"][0], n["pos"][1] - title, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in workflows[name]["nodes"]]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


# ----------------------------------------------------------------------------- running the workflows

VIDEO_FRAMES, SIZE, FPS = 7, 64, 12.0
SAPIENS_POSE, SAPIENS_DEPTH = (n for n in builder.DOWNLOADS if n.startswith("sapiens/"))  # as DOWNLOADS lists them
# The weight table's files -> the tiny files of the same formats (make-tiny-weights).
TINY = {
    "animateanyone2/aa2.safetensors": "animateanyone2/aa2-tiny.safetensors",
    "animateanyone2/moore-animateanyone": "animateanyone2/aa2-tiny-moore",
    "vae/vae-ft-mse-840000-ema-pruned.safetensors": "vae/aa2-tiny-vae.safetensors",
    "clip_vision/sd-image-variations-image_encoder.safetensors": "clip_vision/aa2-tiny-clip-vision.safetensors",
    SAPIENS_POSE: "sapiens/aa2-tiny-pose308_torchscript.pt2",  # made by the fixture workflow_models
    SAPIENS_DEPTH: "sapiens/aa2-tiny-depth_torchscript.pt2",
}
# Widget values scaled down for a CPU test (by input name, whichever node has it).
SHRINK = {"width": SIZE, "height": SIZE, "steps": 2, "length": 4, "clip_length": 4,
          "positive_points": f"[[{SIZE // 2}, {SIZE // 2}]]"}


@pytest.fixture(scope="module")
def micro_sam2(pack, micro_files):  # noqa: F811
    return pack.aa2.conditioning.sam2_segment.load_sam2(micro_files["pt"], config=micro_files["yaml"])


@pytest.fixture(scope="module")
def workflow_models(tiny_weights, model_files, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny weights' folders (linked, left untouched for other tests) plus models/sapiens.

    The Sapiens stand-ins have the real files' shapes (input [B, 3, 1024, 768]; 308 heatmaps at 1/4, as the
    Goliath pose model the workflow names; one depth channel) and only pool the input, so they cost little.
    """
    root = tmp_path_factory.mktemp("workflow-models")
    for folder in tiny_weights.iterdir():
        (root / folder.name).symlink_to(folder, target_is_directory=folder.is_dir())
    (root / "sapiens").mkdir()
    shutil.copy(model_files[308], root / TINY[SAPIENS_POSE])
    shutil.copy(model_files["depth"], root / TINY[SAPIENS_DEPTH])
    return root


def _stand_ins(pack, micro_sam2, sinks: list):
    """The host's and comfyui_controlnet_aux's nodes, reduced to what they hand our nodes (same types)."""
    def rand(*shape, seed):
        return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))

    def scale(image, upscale_method, width, height, crop):
        resized = torch.nn.functional.interpolate(image.permute(0, 3, 1, 2), size=(height, width), mode="bilinear")
        return (resized.permute(0, 2, 3, 1),)

    def keypoints(image):  # DWPose's POSE_KEYPOINT: one dict per frame, coordinates relative to the canvas
        person = {"pose_keypoints_2d": [0.5, 0.2, 1, 0.5, 0.4, 1, 0.4, 0.4, 1, 0.6, 0.4, 1] + [0, 0, 0] * 14}
        return [{"people": [person], "canvas_width": image.shape[2], "canvas_height": image.shape[1]}] * image.shape[0]

    from aa2.sampling.k_samplers import sample_euler

    def euler(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):  # a ComfyUI SAMPLER's
        return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback)

    def sink(kind):
        def record(**inputs):
            sinks.append((kind, inputs))
            return ()
        return record

    return {
        "LoadImage": lambda image: (rand(1, 80, 56, 3, seed=1), torch.zeros(1, 80, 56)),
        "LoadVideo": lambda file: ({"file": file},),
        "GetVideoComponents": lambda video: (rand(VIDEO_FRAMES, 72, 96, 3, seed=2), None, FPS),
        "ImageFromBatch": lambda image, batch_index, length: (image[batch_index:batch_index + length],),
        "ImageScale": scale,
        "DWPreprocessor": lambda image, **_: (image, keypoints(image)),
        "DepthAnythingV2Preprocessor": lambda image, **_: (image.mean(-1, keepdim=True).expand_as(image),),
        "KSamplerSelect": lambda sampler_name: (SimpleNamespace(sampler_function=euler, extra_options={}),),
        "AA2LoadSAM2": lambda model, precision: (micro_sam2,),  # the micro SAM2 needs its own config
        "CreateVideo": lambda images, fps, audio=None: ({"images": images, "fps": fps},),
        "SaveVideo": sink("SaveVideo"),
        "PreviewImage": sink("PreviewImage"),
    }


def _run(workflow, pack, declared, stand_ins) -> dict[int, tuple]:
    """Execute the graph in its saved order, inputs from widgets_values and links, as the server would.

    Returns every node's outputs by node id."""
    links = {link[0]: link for link in workflow["links"]}
    results = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["order"]):
        kind = node["type"]
        if kind == "Note":
            continue
        inputs = {name: SHRINK.get(name, TINY.get(value, value)) if isinstance(value, (str, int)) else value
                  for name, value in _widget_values(node, declared).items()}
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, source, slot, *_ = links[socket["link"]]
                inputs[socket.get("widget", {}).get("name", socket["name"])] = results[source][slot]
        if kind in stand_ins:
            results[node["id"]] = stand_ins[kind](**inputs)
        else:
            cls = pack.NODE_CLASS_MAPPINGS[kind]
            results[node["id"]] = getattr(cls(), cls.FUNCTION)(**inputs)
            assert len(results[node["id"]]) == len(cls.RETURN_TYPES), kind
    return results


@pytest.fixture(scope="module")
def runs(workflows, pack, declared, workflow_models, micro_sam2):
    """`run(name)`: the workflow executed once, then remembered: (outputs by node id, sinks' inputs)."""
    done = {}

    def run(name):
        if name not in done:
            sinks = []
            pack.nodes.host.set_models_dir(workflow_models)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # micro SAM2 and tiny UNets: on a busy machine, thread sync costs more
            try:
                done[name] = (_run(workflows[name], pack, declared, _stand_ins(pack, micro_sam2, sinks)), sinks)
            finally:
                torch.set_num_threads(threads)
                pack.nodes.host.set_models_dir(None)
        return done[name]
    return run


@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_our_nodes_end_to_end_on_tiny_weights(workflows, runs, name):
    _, sinks = runs(name)
    one_clip = any(n["type"] == "ImageFromBatch" for n in workflows[name]["nodes"])
    frames = SHRINK["length"] if one_clip else VIDEO_FRAMES
    (video,) = [inputs["video"] for kind, inputs in sinks if kind == "SaveVideo"]
    assert video["images"].shape == (frames, SIZE, SIZE, 3) and video["fps"] == FPS  # the driving video's rate
    images = video["images"]
    assert torch.isfinite(images).all() and 0 <= float(images.min()) <= float(images.max()) <= 1
    previews = [inputs["images"] for kind, inputs in sinks if kind == "PreviewImage"]
    assert previews and all(p.shape[1:] == (SIZE, SIZE, 3) for p in previews)


def test_builtin_extraction_runs_sapiens_into_the_sampler(workflows, runs):
    results, sinks = runs("aa2_builtin_extraction")
    by_type = {n["type"]: n["id"] for n in workflows["aa2_builtin_extraction"]["nodes"]}
    keypoints, skeleton = results[by_type["AA2SapiensPose"]]
    frames = SHRINK["length"]
    assert len(keypoints) == frames and all(len(f["people"]) == 1 for f in keypoints)
    assert all((f["canvas_width"], f["canvas_height"]) == (SIZE, SIZE) for f in keypoints)
    # the stand-in's heatmaps peak on the crop's reddest pixel: every body point found, hands too (308 set)
    person = keypoints[0]["people"][0]
    assert all(c == 1 for c in person["pose_keypoints_2d"][2::3]) and person["hand_left_keypoints_2d"]
    assert skeleton.shape == (frames, SIZE, SIZE, 3) and float(skeleton.max()) > 0  # drawn, not blank
    assert any(inputs["images"] is skeleton for kind, inputs in sinks if kind == "PreviewImage")
    (depth,) = results[by_type["AA2SapiensDepth"]]
    assert depth.shape == (frames, SIZE, SIZE, 3) and float(depth.max()) == 1.0
    pose = results[by_type["PoseDepthModulate"]][0]
    assert pose["depth"] is not None and pose["depth"].shape[-2:] == (SIZE, SIZE)
    assert torch.isfinite(pose["depth"]).all() and float(pose["skeleton"].max()) > 0
