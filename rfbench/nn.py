"""``rfbench.nn``: the trainable layers and their training helpers (``rfbench.impls.nn``)."""

from .impls.nn import *  # noqa: F403
from .impls.nn import __all__  # noqa: F401
