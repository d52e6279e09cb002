"""SciPy/NumPy float64 reference of every layer of reference/README.md: the ground truth of rfbench.

``LAYERS[name]`` (``reference.layers``) is the table of the layers: for each, its public name,
tensor arguments, hyper-parameters with their defaults and radius rules, and its code here
(``dau`` holds ``dau`` and ``dau_gauss``, then ``acu``, ``njet``; central differences in
``finite_diff``): the forward (built on SciPy: ``scipy.ndimage`` blurs and samples,
``scipy.signal`` correlates, ``scipy.special`` evaluates the Hermite polynomials; see
``reference._scipy``), the analytic backward (NumPy), and ``forward_numpy``, the same forward
written with NumPy alone: an independent cross-check, not the truth.  Nothing here imports
``impls``.

The NumPy and SciPy modules load when first used (``reference.dau``, ``LAYERS["dau"].forward``),
so that the table alone is read without them (the CLI's ``--help`` and ``backends``).
"""

import importlib

from .layers import LAYERS, REQUIRED, Layer, Param

_LAZY = ("acu", "dau", "njet", "finite_diff", "_ops", "_scipy")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "central_diff":
        return importlib.import_module(f"{__name__}.finite_diff").central_diff
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LAYERS", "REQUIRED", "Layer", "Param", "central_diff", "acu", "dau", "njet"]
