"""The exceptions AA2 raises to a person, and the wording for the interface that person is using.

Every message says what was wrong and what to do about it, because in ComfyUI the message text is
all the user sees. They are raised before heavy work starts, so a bad input costs nothing.

"What to do" depends on where the user is: a ComfyUI user disconnects an input or picks a file from
`models/vae`, a command-line user leaves out `--depth` or passes `--vae`. The interface says which
it is with `interface("cli")` around its work (ComfyUI's wording is the default, as the nodes are the
pack's main door); a message with two wordings picks its own with `worded(...)`.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Literal

Interface = Literal["comfyui", "cli"]
_INTERFACE: ContextVar[Interface] = ContextVar("aa2_interface", default="comfyui")


class AA2Error(Exception):
    """Base class: catch this to handle any problem the pack reports on purpose."""


class AA2InputError(AA2Error, ValueError):
    """An input (image, video, mask, option) has the wrong shape, size, count or value."""


class AA2WeightsError(AA2Error, ValueError):
    """A weight file is missing, unreadable, unsafe, or is not the model it was expected to be."""


class AA2Cancelled(AA2Error):
    """Sampling was stopped by the user between two steps; the models are left as they were."""


@contextmanager
def interface(name: Interface) -> Iterator[None]:
    """Word the messages raised inside for this interface; the previous one is restored after."""
    token = _INTERFACE.set(name)
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def worded(*, comfyui: str, cli: str) -> str:
    """The advice for the interface in use (see `interface`)."""
    return cli if _INTERFACE.get() == "cli" else comfyui


def setting_name(field: str) -> str:
    """A setting as the interface in use names it: the node's widget `clip_length`, the command
    line's `--clip-length` (every CLI option that sets a `SamplingSettings` field is its name with
    dashes), so a message points at the very control to change."""
    return worded(comfyui=field, cli="--" + field.replace("_", "-"))


def size_text(height: int, width: int) -> str:
    """A frame size as every message writes it: width first, as the nodes' widgets ask for it, and
    labelled, since aa2's tensors (and many tools) put height first and "192x256" reads either way."""
    return f"{width}×{height} (width × height)"
