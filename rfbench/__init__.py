"""rfbench: convolution layers with learned receptive fields (DAU, ACU, N-Jet), their backends,
and the correctness and speed suite that judges them.

    >>> import torch, rfbench
    >>> x = torch.randn(2, 8, 16, 16)
    >>> rfbench.nn.DAUConv2d(8, 16, units=2)(x).shape
    torch.Size([2, 16, 16, 16])
    >>> "torch-naive" in rfbench.available_backends()
    True

The public API is that of ``rfbench.impls`` (the folder ``impls/``): ``dau_conv2d``,
``dau_gauss_conv2d``, ``acu_conv2d``, ``njet_conv2d``, ``rfbench.nn`` (modules and training
helpers) and the backend registry.  The project's three folders are its subpackages:
``rfbench.impls`` (the layers and their backends), ``rfbench.reference`` (the contract: the
layer table and the float64 reference) and ``rfbench.harness`` (cases, metrics, the runner,
benchmarks, reports and the command line, ``rfbench.harness.cli``; ``python -m rfbench``).

An install (``pip install .``, pyproject.toml) puts the three folders inside this package; in a
checkout they stand beside it, and the line below finds them there.
"""

import os as _os

if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "impls")):  # a checkout
    __path__.append(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))

from .impls import *  # noqa: E402,F403  (no torch import: loaded on a layer's first call)
from .impls import __all__ as __all__  # noqa: E402


def _version():
    """The installed distribution's version; in a checkout without one, pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("rfbench")
    except metadata.PackageNotFoundError:
        pass
    import re

    try:
        with open(
            _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "pyproject.toml")
        ) as fh:
            m = re.search(r'^version\s*=\s*"([^"]+)"', fh.read(), re.M)
    except OSError:
        m = None
    return m.group(1) if m else "unknown"


__version__ = _version()


def __getattr__(name):
    if name == "nn":  # imports torch: only when asked for
        import importlib

        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
