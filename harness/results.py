"""Result files: JSON lines, one row per layer x backend x device x dtype x case x output/pass.

Every row carries the environment it was measured in (``harness.env``).  Rows are appended
as they are produced, so an interrupted run keeps every finished row.
"""

import json
import math
import os
import time

from .env import environment


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/NaN
    return v


def append(path, rows):
    """Append ``rows`` (dicts) to the JSON-lines file ``path``, each with ``env`` and the UTC time written."""
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    env = environment()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(path, "a") as fh:
        for r in rows:
            fh.write(json.dumps({k: _clean(v) for k, v in {**r, "written": stamp, "env": env}.items()}) + "\n")


def load(paths):
    """Rows of one or more results files -> list of dicts (``"inf"`` strings back to floats)."""
    rows = []
    for p in paths:
        with open(p) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    rows.append({k: float(v) if v in ("inf", "-inf", "nan") else v for k, v in r.items()})
    return rows
