"""Build the shareable workflows in `workflows/` from compact descriptions (a maintainer tool).

Run from the repository root after changing a node's inputs or a workflow below:

    .venv/bin/python tools/build_workflows.py           # rewrite workflows/*.json
    .venv/bin/python tools/build_workflows.py --check   # exit 1, naming the files, if any is stale

The files are ComfyUI's *UI format* (what the frontend saves and its templates browser opens:
nodes with positions and `widgets_values`, a link table), never the API format. For the pack's own
nodes every widget value is taken from the node class's `INPUT_TYPES` (its default, or a value a
description below sets by input name and that is checked against the declared choices and range),
so a changed input cannot leave a workflow silently stale: `tests/test_workflows.py` rebuilds every
file and compares. Nodes of ComfyUI core and of comfyui_controlnet_aux have their widget lists
written out in `HOST_NODES`, copied from their sources (ComfyUI 0.3.64, controlnet_aux 1.1.5).

Model dropdowns name files from `DOWNLOADS`, the one list of weight files the README's weight table
tells a user to fetch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = REPO / "workflows"

# What a user downloads, as the dropdowns name it ("<models folder>/<file>"). The README's weight
# table lists every one of these; workflows may name no other model file.
DOWNLOADS: dict[str, str] = {
    "animateanyone2/aa2.safetensors": "the pack's checkpoint (python -m aa2 convert, or train/)",
    "animateanyone2/moore-animateanyone": "Moore-AnimateAnyone folder (denoising_unet.pth, ...)",
    "checkpoints/v1-5-pruned-emaonly.safetensors": "SD1.5",
    "animatediff_models/mm_sd_v15_v2.ckpt": "AnimateDiff v2 motion module",
    "clip_vision/sd-image-variations-image_encoder.safetensors": "CLIP ViT-L/14 vision with projection",
    "vae/vae-ft-mse-840000-ema-pruned.safetensors": "SD1.5 VAE",
    "sam2/sam2.1_hiera_small.pt": "SAM2.1 small",
    "sapiens/sapiens_1b_goliath_coco_wholebody_mpii_crowdpose_aic_best_goliath_AP_640_torchscript.pt2":
        "Sapiens pose 1B, 308 keypoints (facebook/sapiens-pose-1b-torchscript)",
    "sapiens/sapiens_0.3b_render_people_epoch_100_torchscript.pt2":
        "Sapiens depth 0.3B (facebook/sapiens-depth-0.3b-torchscript)",
}
# The pack's inputs whose dropdowns list model folders (their choices depend on the user's files).
MODEL_INPUTS: dict[str, tuple[str, ...]] = {
    "LoadAA2Model": ("base", "motion_module", "clip_vision", "vae"),
    "AA2LoadSAM2": ("model",),
    "AA2SapiensPose": ("model",),
    "AA2SapiensDepth": ("model",),
}

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
CONTROL_AFTER_GENERATE = "fixed"  # a shared workflow reproduces its result until the user changes it
OPTIONAL_SHAPE = 7  # the frontend's hollow socket for an optional input


@dataclass(frozen=True)
class HostNode:
    """A node of ComfyUI core or another pack, as its source declares it (no import of either).

    inputs: sockets `(name, type, optional)` in declaration order. widgets: `(name, type, default)`
    in declaration order (type INT/FLOAT/STRING/BOOLEAN or COMBO for a dropdown). extra: values the
    frontend saves after a widget (an upload button's "image").
    """

    inputs: tuple[tuple[str, str, bool], ...]
    widgets: tuple[tuple[str, str, Any], ...]
    outputs: tuple[tuple[str, str], ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


HOST_NODES: dict[str, HostNode] = {
    "LoadImage": HostNode((), (("image", "COMBO", "reference.png"),), (("IMAGE", "IMAGE"), ("MASK", "MASK")),
                          extra={"image": "image"}, source="ComfyUI nodes.py LoadImage"),
    "LoadVideo": HostNode((), (("file", "COMBO", "driving.mp4"),), (("VIDEO", "VIDEO"),),
                          extra={"file": "image"}, source="ComfyUI comfy_extras/nodes_video.py LoadVideo"),
    "GetVideoComponents": HostNode((("video", "VIDEO", False),), (),
                                   (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")),
                                   source="ComfyUI comfy_extras/nodes_video.py GetVideoComponents"),
    "ImageFromBatch": HostNode((("image", "IMAGE", False),), (("batch_index", "INT", 0), ("length", "INT", 1)),
                               (("IMAGE", "IMAGE"),), source="ComfyUI comfy_extras/nodes_images.py ImageFromBatch"),
    "ImageScale": HostNode((("image", "IMAGE", False),),
                           (("upscale_method", "COMBO", "nearest-exact"), ("width", "INT", 512), ("height", "INT", 512),
                            ("crop", "COMBO", "disabled")),
                           (("IMAGE", "IMAGE"),), source="ComfyUI nodes.py ImageScale"),
    "CreateVideo": HostNode((("images", "IMAGE", False), ("audio", "AUDIO", True)), (("fps", "FLOAT", 30.0),),
                            (("VIDEO", "VIDEO"),), source="ComfyUI comfy_extras/nodes_video.py CreateVideo"),
    "SaveVideo": HostNode((("video", "VIDEO", False),),
                          (("filename_prefix", "STRING", "video/ComfyUI"), ("format", "COMBO", "auto"),
                           ("codec", "COMBO", "auto")), (),
                          source="ComfyUI comfy_extras/nodes_video.py SaveVideo"),
    "PreviewImage": HostNode((("images", "IMAGE", False),), (), (), source="ComfyUI nodes.py PreviewImage"),
    "KSamplerSelect": HostNode((), (("sampler_name", "COMBO", "euler"),), (("SAMPLER", "SAMPLER"),),
                               source="ComfyUI comfy_extras/nodes_custom_sampler.py KSamplerSelect"),
    # comfyui_controlnet_aux: image is required, every widget optional (define_preprocessor_inputs).
    "DWPreprocessor": HostNode(
        (("image", "IMAGE", False),),
        (("detect_hand", "COMBO", "enable"), ("detect_body", "COMBO", "enable"), ("detect_face", "COMBO", "enable"),
         ("resolution", "INT", 512), ("bbox_detector", "COMBO", "yolox_l.onnx"),
         ("pose_estimator", "COMBO", "dw-ll_ucoco_384_bs5.torchscript.pt"),
         ("scale_stick_for_xinsr_cn", "COMBO", "disable")),
        (("IMAGE", "IMAGE"), ("POSE_KEYPOINT", "POSE_KEYPOINT")),
        source="comfyui_controlnet_aux node_wrappers/dwpose.py DWPose_Preprocessor"),
    "DepthAnythingV2Preprocessor": HostNode(
        (("image", "IMAGE", False),),
        (("ckpt_name", "COMBO", "depth_anything_v2_vitl.pth"), ("resolution", "INT", 512)),
        (("IMAGE", "IMAGE"),),
        source="comfyui_controlnet_aux node_wrappers/depth_anything_v2.py Depth_Anything_V2_Preprocessor"),
}
CORE_NODES = frozenset(name for name, node in HOST_NODES.items() if node.source.startswith("ComfyUI "))
CONTROLNET_AUX_NODES = frozenset(HOST_NODES) - CORE_NODES
FRONTEND_NODES = frozenset({"Note"})  # saved in the graph, never sent to the server


# ----------------------------------------------------------------------------- the pack's node classes


def load_pack(name: str = "comfyui_animateanyone2_workflows"):
    """Import the repository root as a package, the way ComfyUI imports a custom node folder."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def is_widget(entry: tuple) -> bool:
    """Whether an INPUT_TYPES entry is drawn as a widget (dropdown or value) rather than a socket."""
    kind = entry[0]
    options = entry[1] if len(entry) > 1 else {}
    return not options.get("forceInput") and (isinstance(kind, list) or kind in WIDGET_TYPES)


def declared_inputs(cls: type) -> list[tuple[str, tuple, bool]]:
    """`(name, entry, optional)` for every required then optional input, in declaration order."""
    spec = cls.INPUT_TYPES()
    return ([(name, entry, False) for name, entry in spec.get("required", {}).items()]
            + [(name, entry, True) for name, entry in spec.get("optional", {}).items()])


def has_control_widget(name: str, entry: tuple) -> bool:
    """The frontend adds a "control after generate" widget (saved as its own value) after these."""
    options = entry[1] if len(entry) > 1 else {}
    explicit = options.get("control_after_generate")
    return bool(explicit) if explicit is not None else (entry[0] == "INT" and name in ("seed", "noise_seed"))


def check_widget_value(node_type: str, name: str, entry: tuple, value: Any) -> None:
    """Raise ValueError unless `value` is one the input declares (model dropdowns: a download)."""
    kind, options = entry[0], entry[1] if len(entry) > 1 else {}
    where = f"{node_type}.{name}"
    if name in MODEL_INPUTS.get(node_type, ()):
        if value not in DOWNLOADS and value != options.get("default"):
            raise ValueError(f"{where}: {value!r} is not a documented download (DOWNLOADS)")
    elif isinstance(kind, list):
        if value not in kind:
            raise ValueError(f"{where}: {value!r} is not one of {kind}")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {value!r} is not a boolean")
    elif kind == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"{where}: {value!r} is not a string")
    elif kind in ("INT", "FLOAT"):
        number = int if kind == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            raise ValueError(f"{where}: {value!r} is not {kind}")
        if not options.get("min", value) <= value <= options.get("max", value):
            raise ValueError(f"{where}: {value} is outside [{options.get('min')}, {options.get('max')}]")


def pack_widget_values(node_type: str, cls: type, settings: Mapping[str, Any]) -> list[Any]:
    """`widgets_values` for one of the pack's nodes: each widget's default unless `settings` sets it."""
    declared = {name: entry for name, entry, _ in declared_inputs(cls) if is_widget(entry)}
    unknown = set(settings) - set(declared)
    if unknown:
        raise ValueError(f"{node_type} has no widget named {sorted(unknown)}")
    values: list[Any] = []
    for name, entry in declared.items():
        options = entry[1] if len(entry) > 1 else {}
        if name in settings:
            value = settings[name]
        elif "default" in options:
            value = options["default"]
        elif name in MODEL_INPUTS.get(node_type, ()):
            raise ValueError(f"{node_type}.{name}: a model dropdown needs a value from DOWNLOADS")
        elif isinstance(entry[0], list):
            value = entry[0][0]  # the frontend shows the first choice
        else:
            value = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[entry[0]]
        check_widget_value(node_type, name, entry, value)
        values.append(value)
        if has_control_widget(name, entry):
            values.append(CONTROL_AFTER_GENERATE)
    return values


# ----------------------------------------------------------------------------- a graph, laid out in columns


@dataclass
class _Node:
    id: int
    type: str
    column: int
    title: str | None
    sockets: list[dict]  # the saved "inputs": unlinked and linked sockets, then widgets fed by a link
    widget_types: dict[str, str]  # widget name -> type, to turn a widget into a linked input
    outputs: list[dict]
    widgets_values: list[Any]
    size: list[float]
    properties: dict = field(default_factory=dict)
    color: tuple[str, str] | None = None


class Workflow:
    """Nodes added column by column (left to right), linked by input/output *names*."""

    COLUMN_GAP, NODE_GAP, TOP, LEFT = 70, 50, 120, 40

    def __init__(self, name: str, pack_nodes: Mapping[str, type], columns: list[str]) -> None:
        self.name, self.pack_nodes, self.columns = name, pack_nodes, columns
        self.nodes: dict[str, _Node] = {}
        self.links: list[list] = []
        self.models: list[str] = []  # model files the workflow names, listed in its first note

    def add(self, key: str, node_type: str, column: int, title: str | None = None, **settings: Any) -> str:
        if key in self.nodes:
            raise ValueError(f"{self.name}: node key {key!r} used twice")
        if node_type in self.pack_nodes:
            node = self._pack_node(node_type, settings)
        elif node_type in HOST_NODES:
            node = self._host_node(node_type, settings)
        else:
            raise ValueError(f"{self.name}: {node_type} is neither the pack's node nor in HOST_NODES")
        node.id, node.column, node.title = len(self.nodes) + 1, column, title
        self.nodes[key] = node
        return key

    def note(self, key: str, column: int, text: str, width: int = 420, height: int = 300) -> str:
        self.nodes[key] = _Node(len(self.nodes) + 1, "Note", column, None, [], {}, [], [text], [width, height],
                                properties={"text": ""}, color=("#432", "#653"))
        return key

    def link(self, source: str, output: str, target: str, input_name: str) -> None:
        src, dst = self.nodes[source], self.nodes[target]
        out_slot = next((i for i, o in enumerate(src.outputs) if o["name"] == output), None)
        if out_slot is None:
            raise ValueError(f"{self.name}: {src.type} has no output {output!r}")
        in_slot = next((i for i, s in enumerate(dst.sockets) if s["name"] == input_name), None)
        if in_slot is None and input_name in dst.widget_types:
            # A widget fed by a link: the frontend saves it as an input that names its widget.
            dst.sockets.append({"name": input_name, "type": dst.widget_types[input_name],
                                "widget": {"name": input_name}, "link": None})
            in_slot = len(dst.sockets) - 1
        if in_slot is None:
            raise ValueError(f"{self.name}: {dst.type} has no input {input_name!r}")
        socket, out = dst.sockets[in_slot], src.outputs[out_slot]
        if socket["link"] is not None:
            raise ValueError(f"{self.name}: {dst.type}.{input_name} is linked twice")
        if socket["type"] != out["type"]:
            raise ValueError(f"{self.name}: {src.type}.{output} ({out['type']}) cannot feed "
                             f"{dst.type}.{input_name} ({socket['type']})")
        link_id = len(self.links) + 1
        socket["link"] = link_id
        out["links"] = (out["links"] or []) + [link_id]
        self.links.append([link_id, src.id, out_slot, dst.id, in_slot, out["type"]])

    def _pack_node(self, node_type: str, settings: Mapping[str, Any]) -> _Node:
        cls = self.pack_nodes[node_type]
        sockets, widget_types = [], {}
        for name, entry, optional in declared_inputs(cls):
            if is_widget(entry):
                widget_types[name] = "COMBO" if isinstance(entry[0], list) else entry[0]
            else:
                sockets.append({"name": name, "type": entry[0], **({"shape": OPTIONAL_SHAPE} if optional else {}),
                                "link": None})
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        outputs = [{"name": n, "type": t, "links": None, "slot_index": i}
                   for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
        values = pack_widget_values(node_type, cls, settings)
        self.models += [settings[n] for n in MODEL_INPUTS.get(node_type, ()) if n in settings]
        multiline = sum(1 for _, e, _ in declared_inputs(cls) if len(e) > 1 and e[1].get("multiline"))
        return _Node(0, node_type, 0, None, sockets, widget_types, outputs, values,
                     _size(len(sockets), len(outputs), len(widget_types), extra=60 * multiline),
                     properties={"Node name for S&R": node_type})

    def _host_node(self, node_type: str, settings: Mapping[str, Any]) -> _Node:
        host = HOST_NODES[node_type]
        known = {name for name, _, _ in host.widgets}
        if set(settings) - known:
            raise ValueError(f"{node_type} has no widget named {sorted(set(settings) - known)}")
        sockets = [{"name": n, "type": t, **({"shape": OPTIONAL_SHAPE} if optional else {}), "link": None}
                   for n, t, optional in host.inputs]
        values: list[Any] = []
        widget_types = {}
        for name, kind, default in host.widgets:
            value = settings.get(name, default)
            values.append(value)
            widget_types[name] = kind
            if name in host.extra:
                values.append(host.extra[name])
        outputs = [{"name": n, "type": t, "links": None, "slot_index": i} for i, (n, t) in enumerate(host.outputs)]
        preview = node_type in ("LoadImage", "LoadVideo", "PreviewImage", "SaveVideo")
        return _Node(0, node_type, 0, None, sockets, widget_types, outputs, values,
                     _size(len(sockets), len(outputs), len(host.widgets), extra=260 if preview else 0),
                     properties={"Node name for S&R": node_type})

    def to_json(self) -> dict:
        order = self._execution_order()
        xs, x = [], self.LEFT
        for column in range(len(self.columns)):
            xs.append(x)
            widths = [n.size[0] for n in self.nodes.values() if n.column == column]
            x += max(widths, default=300) + self.COLUMN_GAP
        heights = [self.TOP] * len(self.columns)
        nodes, groups = [], []
        first_note = next((n.id for n in self.nodes.values() if n.type == "Note"), None)
        for node in self.nodes.values():
            pos = [xs[node.column], heights[node.column]]
            heights[node.column] += node.size[1] + self.NODE_GAP
            saved = {"id": node.id, "type": node.type, "pos": pos, "size": node.size, "flags": {},
                     "order": order[node.id], "mode": 0, "inputs": node.sockets, "outputs": node.outputs,
                     "properties": node.properties, "widgets_values": node.widgets_values}
            if node.id == first_note and self.models:
                files = "\n".join(f"- {name}" for name in self.models)
                header = "Model files (ComfyUI/models/..., README: Weights):"
                saved["widgets_values"] = [f"{node.widgets_values[0]}\n\n{header}\n{files}"]
            if node.title:
                saved["title"] = node.title
            if node.color:
                saved["color"], saved["bgcolor"] = node.color
            nodes.append(saved)
        for column, title in enumerate(self.columns):
            members = [n for n in nodes if self.nodes_by_id[n["id"]].column == column]
            width = max(n["size"][0] for n in members)
            bottom = max(n["pos"][1] + n["size"][1] for n in members)
            groups.append({"id": column + 1, "title": title, "bounding": [xs[column] - 15, self.TOP - 75, width + 30,
                           bottom - self.TOP + 90], "color": "#3f789e", "font_size": 22, "flags": {}})
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-animateanyone2/workflows/{self.name}")),
            "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": nodes, "links": self.links, "groups": groups, "config": {},
            "extra": {"ds": {"scale": 0.65, "offset": [0, 0]}}, "version": 0.4,
        }

    @property
    def nodes_by_id(self) -> dict[int, _Node]:
        return {n.id: n for n in self.nodes.values()}

    def _execution_order(self) -> dict[int, int]:
        """The frontend's "order": a topological order of the nodes (ties by id, notes first)."""
        pending = {n.id: {link[1] for link in self.links if link[3] == n.id} for n in self.nodes.values()}
        order: dict[int, int] = {}
        while pending:
            ready = sorted(i for i, deps in pending.items() if deps <= set(order))
            if not ready:
                raise ValueError(f"{self.name}: the links form a cycle")
            for i in ready:
                order[i] = len(order)
                del pending[i]
        return order


def _size(sockets: int, outputs: int, widgets: int, extra: int = 0) -> list[float]:
    """Roughly the frontend's own size for a node with this many slots and widgets."""
    return [340, 16 + 22 * max(sockets, outputs) + 26 * widgets + extra]


# ----------------------------------------------------------------------------- the workflows

WIDTH, HEIGHT, CLIP_FRAMES = 512, 768, 16

NOTE_STEPS = (
    "1. Load Image: your character (full body, plain background is best). Load Video: the driving video.\n"
    f"2. Output size is {WIDTH}×{HEIGHT} (w×h). To change it, set the same width/height on both Upscale Image "
    "nodes, Pose Depth Modulate" + "{also}" + " (multiples of 64).\n"
    f"3. Character mask (SAM2): positive_points are clicks on the person in the scaled {WIDTH}×{HEIGHT} frame "
    "(x, y from the top left) on prompt_frame; add a box or negative_points if it grabs too much. Check the "
    "mask in the preview before sampling.\n"
)
NOTE_COMMON = ("Needs: comfyui_controlnet_aux (DWPose Estimator, Depth Anything V2), which downloads its own models; "
               "SAM2 installed as the README says.\n\n" + NOTE_STEPS)


def _inputs_and_frames(wf: Workflow, clip_frames: int | None) -> str:
    """Reference image and driving video, scaled to the output size. Returns the frames' node key."""
    wf.add("reference", "LoadImage", 0, title="Character (reference image)")
    wf.add("video", "LoadVideo", 0, title="Driving video")
    wf.add("components", "GetVideoComponents", 1)
    wf.link("video", "VIDEO", "components", "video")
    frames = ("components", "images")
    if clip_frames is not None:
        wf.add("clip", "ImageFromBatch", 1, title=f"First {clip_frames} frames (one clip)", length=clip_frames)
        wf.link(*frames, "clip", "image")
        frames = ("clip", "IMAGE")
    wf.add("driving", "ImageScale", 1, title=f"Driving frames to {WIDTH}×{HEIGHT}", upscale_method="bilinear",
           width=WIDTH, height=HEIGHT, crop="center")
    wf.link(*frames, "driving", "image")
    wf.add("character", "ImageScale", 1, title=f"Reference to {WIDTH}×{HEIGHT}", upscale_method="bilinear",
           width=WIDTH, height=HEIGHT, crop="center")
    wf.link("reference", "IMAGE", "character", "image")
    return "driving"


def _pose(wf: Workflow, driving: str, depth: bool = True) -> str:
    """DWPose keypoints (and Depth Anything) of the driving frames -> AA2_POSE. Returns its key."""
    wf.add("dwpose", "DWPreprocessor", 2)
    wf.link(driving, "IMAGE", "dwpose", "image")
    if depth:
        wf.add("depth", "DepthAnythingV2Preprocessor", 2)
        wf.link(driving, "IMAGE", "depth", "image")
    wf.add("pose", "PoseDepthModulate", 2, width=WIDTH, height=HEIGHT)
    wf.link("dwpose", "POSE_KEYPOINT", "pose", "pose_keypoints")
    if depth:
        wf.link("depth", "IMAGE", "pose", "depth")
        wf.add("depth_preview", "PreviewImage", 2, title="Structured depth (check)")
        wf.link("pose", "structured_depth", "depth_preview", "images")
    return "pose"


def _character_mask(wf: Workflow, driving: str, column: int = 3) -> str:
    """SAM2 on the character -> shape-agnostic mask (+ environment preview). Returns its key."""
    wf.add("sam2", "AA2LoadSAM2", column, model="sam2/sam2.1_hiera_small.pt")
    wf.add("person", "ObjectSegment", column, title="Character mask (SAM2)",
           positive_points=f"[[{WIDTH // 2}, {HEIGHT // 2}]]")
    wf.link("sam2", "sam2", "person", "sam2")
    wf.link(driving, "IMAGE", "person", "frames")
    wf.add("agnostic", "ShapeAgnosticMask", column)
    wf.link("person", "mask", "agnostic", "mask")
    wf.link(driving, "IMAGE", "agnostic", "driving_frames")
    wf.add("environment_preview", "PreviewImage", column, title="Environment the model keeps (check)")
    wf.link("agnostic", "environment", "environment_preview", "images")
    return "agnostic"


def _sapiens_pose(wf: Workflow, driving: str, column: int) -> str:
    """Sapiens keypoints (in the character mask's boxes) and depth of the driving frames -> AA2_POSE.

    Needs the character mask ("person") already added. Returns the PoseDepthModulate's key.
    """
    wf.add("sapiens_pose", "AA2SapiensPose", column, title="Pose (Sapiens, person box from the mask)",
           model="sapiens/sapiens_1b_goliath_coco_wholebody_mpii_crowdpose_aic_best_goliath_AP_640_torchscript.pt2")
    wf.link(driving, "IMAGE", "sapiens_pose", "frames")
    wf.link("person", "mask", "sapiens_pose", "mask")
    wf.add("skeleton_preview", "PreviewImage", column, title="Sapiens skeleton (check)")
    wf.link("sapiens_pose", "skeleton", "skeleton_preview", "images")
    wf.add("sapiens_depth", "AA2SapiensDepth", column, title="Depth (Sapiens)",
           model="sapiens/sapiens_0.3b_render_people_epoch_100_torchscript.pt2")
    wf.link(driving, "IMAGE", "sapiens_depth", "frames")
    # Sapiens' depth is far-is-bright, the opposite of the preprocessors' inverse depth the other workflows use.
    conventions = sys.modules[wf.pack_nodes["PoseDepthModulate"].__module__].CONVENTIONS
    wf.add("pose", "PoseDepthModulate", column, width=WIDTH, height=HEIGHT,
           depth_convention=next(label for label, value in conventions.items() if value == "depth"))
    wf.link("sapiens_pose", "pose_keypoints", "pose", "pose_keypoints")
    wf.link("sapiens_depth", "depth", "pose", "depth")
    wf.add("depth_preview", "PreviewImage", column, title="Structured depth (check)")
    wf.link("pose", "structured_depth", "depth_preview", "images")
    return "pose"


def _render(wf: Workflow, sampler_type: str, column: int, model: str, driving: str, pose: str, agnostic: str,
            reference: tuple[str, str, str], **settings: Any) -> str:
    wf.add("sampler", sampler_type, column, **settings)
    wf.link(model, "aa2_model", "sampler", "aa2_model")
    wf.link(pose, "pose", "sampler", "pose")
    wf.link(reference[0], reference[1], "sampler", reference[2])
    wf.link(driving, "IMAGE", "sampler", "driving_frames")
    wf.link(agnostic, "agnostic_mask", "sampler", "agnostic_mask")
    return "sampler"


def _save(wf: Workflow, column: int, sampler: str) -> None:
    wf.add("video_out", "CreateVideo", column)
    wf.link(sampler, "frames", "video_out", "images")
    wf.link("components", "fps", "video_out", "fps")  # the driving video's own frame rate
    wf.add("save", "SaveVideo", column, filename_prefix="video/AnimateAnyone2")
    wf.link("video_out", "VIDEO", "save", "video")


def _pack_model(wf: Workflow, column: int) -> str:
    return wf.add("model", "LoadAA2Model", column, base="animateanyone2/aa2.safetensors")


COLUMNS = ["Inputs", "Frames at the output size", "Pose + depth (comfyui_controlnet_aux)",
           "Character mask (SAM2)", "Animate Anyone 2", "Save"]


def character_environment(pack_nodes: Mapping[str, type]) -> Workflow:
    wf = Workflow("aa2_character_environment", pack_nodes, COLUMNS)
    wf.note("note", 0, "Animate a character in the driving video's scene (Animate Anyone 2).\n\n"
            + NOTE_COMMON.format(also=" and the sampler") + "4. AA2 Load Model: "
            "animateanyone2/aa2.safetensors (from `python -m aa2 convert` or train/; README, Weights). "
            f"AA2 Sampler renders one clip ({CLIP_FRAMES} frames here, at most 32): for longer videos use the "
            "long video workflow.\n5. The output keeps the video's frame rate; it is saved under "
            "output/video/.")
    driving = _inputs_and_frames(wf, CLIP_FRAMES)
    pose = _pose(wf, driving)
    agnostic = _character_mask(wf, driving)
    model = _pack_model(wf, 4)
    sampler = _render(wf, "AA2Sampler", 4, model, driving, pose, agnostic, ("character", "IMAGE", "reference_image"))
    _save(wf, 5, sampler)
    return wf


def object_interaction(pack_nodes: Mapping[str, type]) -> Workflow:
    wf = Workflow("aa2_object_interaction", pack_nodes,
                  COLUMNS[:3] + ["Character and object masks (SAM2)"] + COLUMNS[4:])
    wf.note("note", 0, "Animate a character that touches an object in the scene (a chair, a box, a ball): the "
            "object, tracked by SAM2, goes to the object guider so the character keeps interacting with it.\n\n"
            + NOTE_COMMON.format(also=" and the sampler")
            + "4. Object mask (SAM2): click the object (same coordinates as above), or give a box "
            "x0, y0, x1, y1; several objects: objects_json. The overlay preview shows what is tracked.\n"
            "5. AA2 Load Model: animateanyone2/aa2.safetensors (README, Weights). One clip of "
            f"{CLIP_FRAMES} frames; output saved under output/video/.")
    driving = _inputs_and_frames(wf, CLIP_FRAMES)
    pose = _pose(wf, driving)
    agnostic = _character_mask(wf, driving)
    wf.add("object", "ObjectSegment", 3, title="Object mask (SAM2)",
           positive_points=f"[[{WIDTH * 3 // 4}, {HEIGHT * 3 // 4}]]")
    wf.link("sam2", "sam2", "object", "sam2")
    wf.link(driving, "IMAGE", "object", "frames")
    wf.add("object_overlay", "AA2MaskPreview", 3, color="green")
    wf.link(driving, "IMAGE", "object_overlay", "images")
    wf.link("object", "mask", "object_overlay", "mask")
    wf.add("object_preview", "PreviewImage", 3, title="Object mask (check)")
    wf.link("object_overlay", "overlay", "object_preview", "images")
    model = _pack_model(wf, 4)
    sampler = _render(wf, "AA2Sampler", 4, model, driving, pose, agnostic, ("character", "IMAGE", "reference_image"))
    wf.link("object", "object_frames", sampler, "object_frames")
    _save(wf, 5, sampler)
    return wf


def long_video(pack_nodes: Mapping[str, type]) -> Workflow:
    wf = Workflow("aa2_long_video", pack_nodes, COLUMNS)
    wf.note("note", 0, "A driving video of any length, rendered clip by clip (Long Video Chainer): each clip "
            "starts from the previous one's last frames, carried as latents; memory stays flat.\n\n"
            + NOTE_COMMON.format(also=", AA2 Encode Reference")
            + "4. AA2 Load Model: animateanyone2/aa2.safetensors (README, Weights). AA2 Encode "
            "Reference encodes the character once; re-running with another seed reuses it.\n"
            "5. clip_length 16 is what the motion module was trained on; motion_frames 1 as in the paper; "
            "overlap cross-fades extra frames between clips. The whole video is used; to test on a part, "
            "put an Image From Batch after Get Video Components.")
    driving = _inputs_and_frames(wf, None)
    pose = _pose(wf, driving)
    agnostic = _character_mask(wf, driving)
    model = _pack_model(wf, 4)
    wf.add("encoded", "AA2EncodeReference", 4, width=WIDTH, height=HEIGHT)
    wf.link(model, "aa2_model", "encoded", "aa2_model")
    wf.link("character", "IMAGE", "encoded", "image")
    sampler = _render(wf, "LongVideoChainer", 4, model, driving, pose, agnostic, ("encoded", "reference", "reference"))
    _save(wf, 5, sampler)
    return wf


def swap_sampler(pack_nodes: Mapping[str, type]) -> Workflow:
    wf = Workflow("aa2_swap_sampler", pack_nodes, COLUMNS)
    wf.note("note", 0, "ComfyUI's own samplers driving the Animate Anyone 2 model: KSamplerSelect picks any "
            "sampler, AA2 Sigmas spaces the steps over the checkpoint's own noise range (Moore-style weights "
            "start near sigma 4096, not SD1.5's 14.6, so ComfyUI's schedulers for SD1.5 do not fit them). "
            "Connected, they replace AA2 Sampler's sampler_name; its steps are then the sigmas'.\n\n"
            + NOTE_COMMON.format(also=" and the sampler")
            + "4. AA2 Load Model: animateanyone2/aa2.safetensors (README, Weights). One clip of "
            f"{CLIP_FRAMES} frames; output saved under output/video/.")
    driving = _inputs_and_frames(wf, CLIP_FRAMES)
    pose = _pose(wf, driving)
    agnostic = _character_mask(wf, driving)
    model = _pack_model(wf, 4)
    wf.add("k_sampler", "KSamplerSelect", 4, sampler_name="dpmpp_2m")
    wf.add("sigmas", "AA2Sigmas", 4, schedule="karras", steps=20)
    wf.link(model, "aa2_model", "sigmas", "aa2_model")
    sampler = _render(wf, "AA2Sampler", 4, model, driving, pose, agnostic, ("character", "IMAGE", "reference_image"))
    wf.link("k_sampler", "SAMPLER", sampler, "sampler")
    wf.link("sigmas", "SIGMAS", sampler, "sigmas")
    _save(wf, 5, sampler)
    return wf


def moore_weights(pack_nodes: Mapping[str, type]) -> Workflow:
    wf = Workflow("aa2_moore_weights", pack_nodes, COLUMNS[:2] + ["Pose (comfyui_controlnet_aux)"] + COLUMNS[3:])
    wf.note("note", 0, "Animate Anyone 1 weights (Moore-AnimateAnyone) with the environment kept without "
            "training: the video's scene outside the character's shape-agnostic mask is blended into the "
            "latents at every step (environment 'blend') and its exact pixels pasted back after decoding.\n\n"
            + NOTE_COMMON.format(also=" and the sampler")
            + "4. AA2 Load Model: base animateanyone2/moore-animateanyone (the folder with "
            "denoising_unet.pth, reference_unet.pth, pose_guider.pth, motion_module.pth), plus the VAE and "
            "CLIP vision files it does not contain (README, Weights). These weights take no depth, so "
            "none is computed.")
    driving = _inputs_and_frames(wf, CLIP_FRAMES)
    pose = _pose(wf, driving, depth=False)
    agnostic = _character_mask(wf, driving)
    model = wf.add("model", "LoadAA2Model", 4, base="animateanyone2/moore-animateanyone",
                   clip_vision="clip_vision/sd-image-variations-image_encoder.safetensors",
                   vae="vae/vae-ft-mse-840000-ema-pruned.safetensors")
    sampler = _render(wf, "AA2Sampler", 4, model, driving, pose, agnostic, ("character", "IMAGE", "reference_image"),
                      environment="blend", paste_environment=True)
    _save(wf, 5, sampler)
    return wf


def builtin_extraction(pack_nodes: Mapping[str, type]) -> Workflow:
    wf = Workflow("aa2_builtin_extraction", pack_nodes,
                  COLUMNS[:2] + ["Character mask (SAM2)", "Pose + depth (Sapiens, built in)"] + COLUMNS[4:])
    wf.note("note", 0, "The paper's own conditioning, with no other node pack: Sapiens finds the driving "
            "person's keypoints (inside the SAM2 character mask's box) and depth, as Animate Anyone 2 extracts "
            "them.\n\nNeeds: SAM2 installed as the README says; the Sapiens nodes are built in.\n\n"
            + NOTE_STEPS.format(also=" and the sampler")
            + "4. Sapiens: the TorchScript exports (*_torchscript.pt2) from huggingface.co/facebook "
            "(sapiens-pose-1b-torchscript, sapiens-depth-0.3b-torchscript) go in models/sapiens/; the "
            "*_bfloat16.pt2 and .pth files of the same models do not load. Sapiens depth is far-is-bright, so Pose "
            "Depth Modulate's depth_convention is set to 'depth (Sapiens, ...)'. Check the skeleton preview.\n"
            "5. AA2 Load Model: animateanyone2/aa2.safetensors (README, Weights). One clip of "
            f"{CLIP_FRAMES} frames; output saved under output/video/.")
    driving = _inputs_and_frames(wf, CLIP_FRAMES)
    agnostic = _character_mask(wf, driving, column=2)
    pose = _sapiens_pose(wf, driving, 3)
    model = _pack_model(wf, 4)
    sampler = _render(wf, "AA2Sampler", 4, model, driving, pose, agnostic, ("character", "IMAGE", "reference_image"))
    _save(wf, 5, sampler)
    return wf


WORKFLOWS: dict[str, Callable[[Mapping[str, type]], Workflow]] = {
    "aa2_character_environment": character_environment,
    "aa2_object_interaction": object_interaction,
    "aa2_long_video": long_video,
    "aa2_swap_sampler": swap_sampler,
    "aa2_moore_weights": moore_weights,
    "aa2_builtin_extraction": builtin_extraction,
}


def render(name: str, pack_nodes: Mapping[str, type]) -> str:
    """The exact text of `workflows/<name>.json`."""
    return json.dumps(WORKFLOWS[name](pack_nodes).to_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    pack_nodes = load_pack().NODE_CLASS_MAPPINGS
    stale = []
    for name in WORKFLOWS:
        path = WORKFLOWS_DIR / f"{name}.json"
        text = render(name, pack_nodes)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(REPO)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
