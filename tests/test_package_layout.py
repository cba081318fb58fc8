"""The pack's shape: how ComfyUI loads it, and what the core may not import."""

import ast
import re
import tomllib

from conftest import REPO

HOST_MODULES = {"comfy", "folder_paths", "server", "nodes", "comfy_extras", "latent_preview"}


def test_pack_loads_under_a_mangled_name_with_node_mappings(pack):
    assert isinstance(pack.NODE_CLASS_MAPPINGS, dict)
    assert isinstance(pack.NODE_DISPLAY_NAME_MAPPINGS, dict)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) <= set(pack.NODE_CLASS_MAPPINGS)


def _core_imports_of(top_level: set[str], folder: str = "aa2") -> list[str]:
    """`file: module` for every absolute import in `folder` of a module under one of `top_level`."""
    offenders = []
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in top_level]
    return offenders


def test_core_never_imports_the_comfyui_host():
    assert _core_imports_of(HOST_MODULES) == []


def test_only_the_host_module_imports_comfyui_among_the_nodes():
    assert [o for o in _core_imports_of(HOST_MODULES, "nodes") if not o.startswith("nodes/host.py")] == []


def test_core_never_imports_the_workshop_whose_metrics_it_lends():
    # the demo scores its render with aa2.metrics; train.metrics re-exports the same functions
    import aa2.metrics
    import train.metrics

    assert _core_imports_of({"train"}) == []
    assert train.metrics.psnr is aa2.metrics.psnr and train.metrics.score_clip is aa2.metrics.score_clip


def test_packaging_never_installs_nodes_or_pins_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.split(".")[0] == "nodes" for pattern in include)
    deps = project["project"]["dependencies"] + (REPO / "requirements.txt").read_text().splitlines()
    assert not any(d.strip().startswith(("torch", "torchvision", "torchaudio")) for d in deps)
    # sam2 on PyPI resolves torch>=2.5.1 and torchvision and can replace a user's CUDA torch:
    # it is installed by hand (README "SAM2"), never as a requirement.
    assert not any(d.strip().lower().startswith("sam2") for d in deps)
    assert "comfy" in project["tool"]


def test_ci_installs_sam2_without_letting_it_touch_torch():
    ci = (REPO / ".ci" / "run").read_text()
    sam2_lines = [line for line in ci.splitlines() if "pip install" in line and re.search(r"\ssam2(==|\s|$)", line)]
    assert sam2_lines and all("--no-deps" in line and "--no-build-isolation" in line for line in sam2_lines)


def test_root_init_imported_as_a_bare_file_does_not_fail():
    """pytest imports the root `__init__.py` as a plain module when the checkout's folder name is not
    an identifier (CI clones, "ComfyUI-AnimateAnyone2"); it must not attempt its relative imports then."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("__init__", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {}


# The node IDs of the design card: saved workflows store these, so they are never renamed.
DESIGN_NODE_IDS = {"LoadAA2Model", "ShapeAgnosticMask", "ObjectSegment", "PoseDepthModulate", "AA2Sampler",
                   "LongVideoChainer"}


def test_readme_node_table_is_the_packs_mappings_and_names_follow_one_pattern(pack):
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Nodes"):readme.index("## Workflows")]
    rows = re.findall(r"^\| ([^|]+?) \| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert dict((node_id, name) for name, node_id in rows) == pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert DESIGN_NODE_IDS <= set(pack.NODE_CLASS_MAPPINGS)
    assert all(name.startswith("AA2 ") for name in pack.NODE_DISPLAY_NAME_MAPPINGS.values())


def test_pyproject_declares_the_oldest_comfyui_the_pack_ran_in():
    comfy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
