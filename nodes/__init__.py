"""ComfyUI adapters: thin nodes over `aa2`, one file per concern; no model math lives here.

Each `nodes_*.py` declares its own NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS; they are
merged here. Imports are relative: ComfyUI loads the pack under a name made from its path, and
has a top-level `nodes` module of its own.
"""

from . import host  # registers the model folders before any INPUT_TYPES lists them
from . import nodes_extract, nodes_masks, nodes_model, nodes_pose, nodes_sampling, nodes_segment

_MODULES = (nodes_model, nodes_masks, nodes_pose, nodes_extract, nodes_segment, nodes_sampling)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in _MODULES:
    _clash = set(NODE_CLASS_MAPPINGS) & set(_module.NODE_CLASS_MAPPINGS)
    assert not _clash, f"node ids defined twice: {_clash}"  # ids are public API: never shadow one
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "host"]
