"""The exceptions AA2 raises to a person.

Every message says what was wrong and what to do about it, because in ComfyUI the message text is
all the user sees. They are raised before heavy work starts, so a bad input costs nothing.
"""


class AA2Error(Exception):
    """Base class: catch this to handle any problem the pack reports on purpose."""


class AA2InputError(AA2Error, ValueError):
    """An input (image, video, mask, option) has the wrong shape, size, count or value."""


class AA2WeightsError(AA2Error, ValueError):
    """A weight file is missing, unreadable, unsafe, or is not the model it was expected to be."""


class AA2Cancelled(AA2Error):
    """Sampling was stopped by the user between two steps; the models are left as they were."""
