"""Exception classes shared by every part of bitspike.

Every error a user can cause (a bad file, a bad option, a missing data set)
derives from :class:`BitspikeError`; the command line prints those without a
traceback. Anything else is a bug in bitspike and keeps its traceback.
"""

from __future__ import annotations


class BitspikeError(Exception):
    """Base of all errors that a user's input can cause."""


class ManifestError(BitspikeError):
    """A manifest is malformed: the message names the layer, the field and what was expected.

    Parameters
    ----------
    message
        What is wrong and what was expected.
    layer
        The layer's index and name (``"layer 3 'fc1'"``), or ``None`` for a network-level field.
    field
        The field that is wrong (``"w_bits"``), or ``None``.
    """

    def __init__(self, message: str, *, layer: str | None = None, field: str | None = None):
        self.layer = layer
        self.field = field
        where = []
        if layer is not None:
            where.append(layer)
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class RangeError(BitspikeError):
    """A value left the range that the interval analysis proved for its register."""


class DatasetError(BitspikeError):
    """A data set is missing or malformed; the message says how to get it."""


class CheckpointError(BitspikeError):
    """A training checkpoint is missing, corrupt or from an incompatible run."""


class HardwareError(BitspikeError):
    """Generation, simulation or a build failed in a way the user can act on."""


class BoardError(BitspikeError):
    """The board (or simulated board) did not answer correctly."""
