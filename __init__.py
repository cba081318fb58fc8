"""ComfyUI entry point of the Animate Anyone 2 pack.

ComfyUI imports this folder as a package under a name made from its path, so everything below is
imported relatively. The model code lives in `aa2/` (no ComfyUI imports); `nodes/` adapts it.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a bare file, not as a package: pytest does this to a checkout whose folder name is
    # not an identifier (e.g. "ComfyUI-AnimateAnyone2"), because this file makes the folder look like
    # a package around tests/. There are no relative imports to make then, and no nodes to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
