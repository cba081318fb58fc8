"""Shared fixtures: the pack loaded the way ComfyUI loads it, and tiny weights built once."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# One CPU thread for the whole suite (and, through the environment, for every process a test
# starts), unless AA2_TEST_THREADS says otherwise. Why: the tiny models' kernels are far too small
# to share between threads, so on a 2-core machine that is busy with other work the threads spend
# their time waiting for each other — measured 13x slower at torch's default of 2 than at 1. It
# also makes every run repeat bit for bit, which the resume and NaN-stop tests assert (at several
# threads, CPU kernels may split a reduction differently from one run to the next; those tests
# then compare within the tolerance that train/README.md states).
TEST_THREADS = int(os.environ.get("AA2_TEST_THREADS", "1"))
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = str(TEST_THREADS)


def pytest_configure(config):
    import torch

    torch.set_num_threads(TEST_THREADS)
    try:
        torch.set_num_interop_threads(TEST_THREADS)
    except RuntimeError:  # inter-op threads are fixed once any parallel work ran; intra-op is what counts
        pass


def pytest_report_header(config):
    return f"aa2: torch CPU threads = {TEST_THREADS} (set AA2_TEST_THREADS to change)"


# ComfyUI (nodes.py, load_custom_node) names a pack's module after its folder's full path with
# "." replaced by "_x_", so the name has no dots. A dotted name whose parent is not a module (such
# as "custom_nodes.Pack") breaks the pack's first `from ..aa2 import x`: Python then imports the
# missing parent "custom_nodes".
COMFYUI_MODULE_NAME = str(REPO).replace(".", "_x_")


def load_pack_like_comfyui(name: str = COMFYUI_MODULE_NAME):
    """Import the repo root as a package under the kind of name ComfyUI gives it.

    A broken relative import inside the pack fails here exactly as it would in ComfyUI.
    """
    spec = importlib.util.spec_from_file_location(
        name, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack_like_comfyui()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A ComfyUI-style models folder of tiny random weights in every format, written by the real CLI."""
    from aa2.cli import main

    root = tmp_path_factory.mktemp("models")
    assert main(["make-tiny-weights", str(root)]) == 0
    return root


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    """The tiny pack checkpoint, loaded through the same path LoadAA2Model uses."""
    from aa2.weights.sources import ModelSources, load_model

    return load_model(ModelSources.from_path(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"))
