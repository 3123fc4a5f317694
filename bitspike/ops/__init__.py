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

Below the op modules (they import nothing above themselves, so any layer of
the package may use them): :mod:`~bitspike.ops.base` (the :class:`Op`
interface, the layer and requantizer dataclasses, the registry),
:mod:`~bitspike.ops.kernels` (the integer neuron, rounding shift and trace
record), :mod:`~bitspike.ops.hooks` (the audit's forward hooks) and
:mod:`~bitspike.ops.stream` (stream order).

:func:`load_builtin` imports every module of this package (registering
each op), so a new op is one new file here; :mod:`bitspike.manifest` calls
it, so every op is registered once a manifest can be read. This package file
imports nothing itself at import time, so :mod:`bitspike.ops.base` can be
imported from anywhere without pulling in the op modules.
docs/ARCHITECTURE.md says how to add an op.
"""

from __future__ import annotations

__all__ = ["load_builtin"]

#: modules of this package that define no op of their own (kernels and hooks import torch: not at manifest load)
_NOT_OPS = ("base", "hooks", "kernels", "neuron", "stream")


def load_builtin() -> None:
    """Import (and so register) every op module of this package, in name order."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name not in _NOT_OPS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
