"""ComfyUI adapters: thin nodes over `aa2`, one file per concern; no model math lives here."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
