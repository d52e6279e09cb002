"""``rfbench.nn`` is ``rfbench.impls.nn`` (the trainable layers and their training helpers): one module, two names."""

import sys

from .impls import nn as _nn

sys.modules[__name__] = _nn
