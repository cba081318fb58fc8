"""The pack's shape: how ComfyUI loads it, and what the core may not import."""

import ast
import tomllib
from pathlib import Path

from conftest import REPO

HOST_MODULES = {"comfy", "folder_paths", "server", "nodes", "comfy_extras", "latent_preview"}


def test_pack_loads_under_a_mangled_name_with_node_mappings(pack):
    assert isinstance(pack.NODE_CLASS_MAPPINGS, dict)
    assert isinstance(pack.NODE_DISPLAY_NAME_MAPPINGS, dict)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) <= set(pack.NODE_CLASS_MAPPINGS)


def test_core_never_imports_the_comfyui_host():
    offenders = []
    for path in (REPO / "aa2").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in HOST_MODULES]
    assert offenders == []


def test_packaging_never_installs_nodes_or_pins_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.split(".")[0] == "nodes" for pattern in include)
    deps = project["project"]["dependencies"] + (REPO / "requirements.txt").read_text().splitlines()
    assert not any(d.strip().startswith(("torch", "torchvision", "torchaudio")) for d in deps)
    assert "comfy" in project["tool"]
