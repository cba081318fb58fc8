"""ComfyUI entry point of the Animate Anyone 2 pack.

ComfyUI imports this folder as a package under a name made from its path, so everything below is
imported relatively. The model code lives in `aa2/` (no ComfyUI imports); `nodes/` adapts it.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
