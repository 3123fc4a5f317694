"""The layer types ("ops"): one module per op, registered in :data:`bitspike.ops.base.OPS`.

==========================  ================================================
module                      op(s)
==========================  ================================================
:mod:`~bitspike.ops.linear`   ``linear``
:mod:`~bitspike.ops.conv2d`   ``conv2d``
:mod:`~bitspike.ops.pooling`  ``maxpool``, ``avgpool``
:mod:`~bitspike.ops.flatten`  ``flatten``
:mod:`~bitspike.ops.add`      ``add``
:mod:`~bitspike.ops.neuron`   the neuron and the rules linear and conv2d share
==========================  ================================================

:func:`load_builtin` imports them (registering each); :mod:`bitspike.manifest`
calls it, so every op is registered once a manifest can be read. This package
file imports nothing itself, so :mod:`bitspike.ops.base` can be imported
from anywhere without pulling in the op modules. docs/ARCHITECTURE.md says
how to add an op.
"""

from __future__ import annotations

__all__ = ["BUILTIN", "load_builtin"]

#: the op modules shipped with bitspike, in registration order
BUILTIN = ("linear", "conv2d", "pooling", "flatten", "add")


def load_builtin() -> None:
    """Import (and so register) every built-in op module."""
    import importlib

    for name in BUILTIN:
        importlib.import_module(f"{__name__}.{name}")
