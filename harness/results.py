"""Result files: JSON lines, one row per layer x backend x device x dtype x case x output/pass.

Every row carries the machine's name (``machine``), ``schema`` (``SCHEMA``) and ``env_id``: the
environment it was measured in (``harness.env``) is written once per file, as a line
``{"kind": "env", "schema": 2, "env_id": ..., "env": {...}}`` before the first row measured
under it (again when it changes: another commit, another thread setting), and ``load`` gives every
row its ``env`` back, so rows of several machines can be merged in one report.  Files of schema 1
(no ``schema``, the environment on every row) load as they are.  Rows are appended as they are
produced, so an interrupted run keeps every finished row.
"""

import hashlib
import json
import math
import os
import time

from .machine import machine_name


class ResultsError(ValueError):
    """A results file or folder that cannot be read: missing, empty, or not JSON lines."""


class OutputError(OSError):
    """Results could not be written (read-only folder, full disk, ...): the message names the file
    and the cause; the file is left as it was before the write, so a rerun resumes from it."""


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/NaN
    return v


SCHEMA = 2  # rows point to an env line (``env_id``); schema 1 rows (none given) carry their ``env``
ENV = "env"  # the ``kind`` of an environment line


def env_id(env):
    """A short hash naming an environment within its file."""
    return hashlib.sha256(json.dumps(env, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _last_env_id(path):
    """The ``env_id`` of the last environment line of ``path``, or None."""
    last = None
    if os.path.exists(path):
        with open(path, errors="replace") as fh:
            for line in fh:
                if line.startswith('{"kind": "env"'):
                    try:
                        last = json.loads(line).get("env_id")
                    except json.JSONDecodeError:
                        pass
    return last


def append(path, rows):
    """Append ``rows`` (dicts) to the JSON-lines file ``path``, each with ``machine``, ``schema``,
    ``env_id`` and the time written; the environment line first if the file's last one differs."""
    from .env import environment  # imports torch: only when writing rows

    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    env = environment()
    eid = env_id(env)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    head = ""
    if _last_env_id(path) != eid:
        line = {"kind": ENV, "schema": SCHEMA, "env_id": eid, "machine": machine_name(), "written": stamp, "env": env}
        head = json.dumps({k: _clean(v) for k, v in line.items()}) + "\n"
    text = head + "".join(
        json.dumps(
            {
                k: _clean(v)
                for k, v in {"machine": machine_name(), **r, "schema": SCHEMA, "written": stamp, "env_id": eid}.items()
            }
        )
        + "\n"
        for r in rows
    )
    # One write of the whole batch, flushed to disk: a process killed around it leaves all of the
    # batch or none of it.  A write that fails (full disk) is cut back to the size before it, so the
    # file holds whole batches only; a kill during the write itself can leave a torn last line,
    # which ``load(..., torn="drop")`` and ``repair`` drop.
    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with open(path, "a") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        try:
            with open(path, "r+") as fh:
                fh.truncate(size)
        except OSError:
            pass
        raise OutputError(exc.errno, f"cannot write results to {path}: {exc.strerror or exc}") from None


def writable(path, folder=False):
    """Raise ``OutputError`` unless results can be written at ``path`` (a file, or with ``folder``
    a folder to put files in): checked before any work, so a bad ``--out`` costs nothing."""
    where = path if folder else (os.path.dirname(path) or ".")
    what = "folder" if folder else "file"
    try:
        if folder and os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(20, f"--out {path}: expected a folder, found a file")
        if not folder and os.path.isdir(path):
            raise OutputError(21, f"--out {path}: expected a results file, found a folder")
        os.makedirs(where, exist_ok=True)
        probe = os.path.join(where, f".rfbench-write-test-{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("x")
        os.remove(probe)
        if not folder and os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(exc.errno, f"--out {path}: cannot write this {what} ({exc.strerror or exc})") from None


def repair(path, say=print):
    """Drop a torn last line (a process killed while writing it) from the JSON-lines file ``path``,
    saying so -> the number of bytes dropped (0: nothing to repair)."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as fh:
        data = fh.read()
    if not data or data.endswith(b"\n"):
        return 0
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    say(f"warning: {path}: dropped a torn last line ({len(data) - cut} bytes; a process was killed while writing it)")
    return len(data) - cut


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


def load(paths, say=None):
    """Rows of results files or folders (``files``) -> list of dicts (``"inf"`` strings back to floats).
    Each row gets ``machine`` (from its environment for rows written before the field existed),
    ``env`` (from the file's env line its ``env_id`` names; env lines themselves are not rows),
    ``schema`` (1 where the file predates it) and ``source`` (the file it came from).  A torn last
    line (no newline: a process killed while writing it) is skipped with a warning through ``say``
    (default: stderr).  Raises ``ResultsError`` naming the file and line of any other bad line."""
    import sys

    say = say or (lambda msg: sys.stderr.write(msg + "\n"))
    rows = []
    for p in files(paths):
        with open(p, errors="replace") as fh:
            lines = fh.readlines()
        envs = {}  # env_id -> environment, from this file's env lines
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                if i == len(lines) and not line.endswith("\n"):
                    say(f"warning: {p}:{i}: torn last line skipped (a process was killed while writing it)")
                    continue
                raise ResultsError(f"{p}:{i}: not a JSON-lines results file ({exc.msg})") from None
            if not isinstance(r, dict):
                raise ResultsError(f"{p}:{i}: expected one JSON object per line, got {type(r).__name__}")
            if r.get("kind") == ENV:
                envs[r.get("env_id")] = r.get("env")
                continue
            r = {k: float(v) if v in ("inf", "-inf", "nan") else v for k, v in r.items()}
            if "env_id" in r and "env" not in r:
                if r["env_id"] not in envs:
                    raise ResultsError(f"{p}:{i}: row names environment {r['env_id']!r}, which the file does not hold")
                r["env"] = envs[r["env_id"]]
            r.setdefault("schema", 1)
            r.setdefault("machine", (r.get("env") or {}).get("machine", "unknown"))
            r["source"] = p
            rows.append(r)
    return rows
