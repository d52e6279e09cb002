"""``python -m rfbench``: the command line (``rfbench.harness.cli``), also from a checkout with nothing installed."""

import sys

from .harness.cli import main

sys.exit(main())
