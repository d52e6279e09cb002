"""Result files: JSON lines, one row per layer x backend x device x dtype x case x output/pass.

Every row carries the environment it was measured in (``harness.env``) and the machine's name
(``machine``), so rows of several machines can be merged in one report.  Rows are appended as
they are produced, so an interrupted run keeps every finished row.
"""

import json
import math
import os
import platform
import time


class ResultsError(ValueError):
    """A results file or folder that cannot be read: missing, empty, or not JSON lines."""


def machine_name():
    """The name rows are filed under: ``RFBENCH_MACHINE`` if set, else the host name."""
    return os.environ.get("RFBENCH_MACHINE") or platform.node() or "unknown"


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/NaN
    return v


def append(path, rows):
    """Append ``rows`` (dicts) to the JSON-lines file ``path``, each with ``env``, ``machine`` and the time written."""
    from .env import environment  # imports torch: only when writing rows

    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    env = environment()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = "".join(
        json.dumps({k: _clean(v) for k, v in {"machine": machine_name(), **r, "written": stamp, "env": env}.items()})
        + "\n"
        for r in rows
    )
    # One write of the whole batch, flushed to disk: a process killed around it leaves all of the
    # batch or none of it (a torn line only where the disk fills mid-write).
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def files(paths):
    """Results files named by ``paths``: a file as is, a folder -> its ``*.jsonl`` files (superseded
    rows left out).  Raises ``ResultsError`` for a path that does not exist or a folder without any."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, n) for n in os.listdir(p) if n.endswith(".jsonl") and ".superseded." not in n
            )
            if not found:
                raise ResultsError(f"results folder {p!r} holds no *.jsonl files")
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ResultsError(f"results file {p!r} does not exist")
    return out


def load(paths):
    """Rows of results files or folders (``files``) -> list of dicts (``"inf"`` strings back to floats).
    Each row gets ``machine`` (from its environment for rows written before the field existed) and
    ``source`` (the file it came from).  Raises ``ResultsError`` naming the file and line of a bad line."""
    rows = []
    for p in files(paths):
        with open(p, errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ResultsError(f"{p}:{i}: not a JSON-lines results file ({exc.msg})") from None
                if not isinstance(r, dict):
                    raise ResultsError(f"{p}:{i}: expected one JSON object per line, got {type(r).__name__}")
                r = {k: float(v) if v in ("inf", "-inf", "nan") else v for k, v in r.items()}
                r.setdefault("machine", (r.get("env") or {}).get("machine", "unknown"))
                r["source"] = p
                rows.append(r)
    return rows
