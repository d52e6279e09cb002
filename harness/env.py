"""The environment a result was measured in: recorded with every result row."""

import functools
import os
import platform
import subprocess
from importlib import metadata

import numpy as np
import torch

from ..impls._registry import packages as _layer_packages
from . import precision
from .machine import machine_name

# Distributions of the harness's own beyond those of the layers (``impls._registry.packages``: torch,
# numpy and what each backend declares): the reports (pandas) and gpu-run's ACU peer (torchvision).
HARNESS_PACKAGES = ("pandas", "torchvision")

# Settings that change CPU timings (harness.machine.thread_env), recorded as they were at start.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")


def _version(pkg):
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_isa():
    """The widest x86 vector ISA this CPU has (``avx512`` / ``avx2`` / ``avx`` / ``sse``), or the
    architecture's name elsewhere: what a CPU kernel's speed depends on first."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
    except OSError:
        flags = []
    for isa, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse", "sse2")):
        if flag in flags:
            return isa
    return platform.machine()


def _git_commit():
    """``git rev-parse HEAD`` (+dirty), or ``RFBENCH_COMMIT`` where the tree is a copy without its
    git folder (a GPU machine gets the working tree only)."""
    if os.environ.get("RFBENCH_COMMIT"):
        return os.environ["RFBENCH_COMMIT"]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment():
    """-> dict: machine, CPU (model, ISA level, torch's CPU capability, cores, memory, frequency),
    threads, GPU and driver, library versions, git commit, TF32 settings, ``numba_threading_layer``
    and ``vector`` (``vector()``: numba's vector width and SLP, flush-to-zero)."""
    return {
        "machine": machine_name(),
        **_environment(),
        "numba_threading_layer": numba_threading_layer(),
        "vector": vector(),
    }


def numba_threading_layer():
    """The threading layer numba's CPU pool runs on (``omp``, ``tbb``, ``workqueue``), or why it is
    not known: the pool starts on the first parallel call (before it, numba cannot say)."""
    import sys

    nb = sys.modules.get("numba")
    if nb is None:
        return "not loaded"
    try:
        return nb.threading_layer()
    except ValueError:
        return f"not started (NUMBA_THREADING_LAYER={nb.config.THREADING_LAYER})"


def memory_bytes():
    """Physical memory of the machine in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_mhz():
    """-> {"max": MHz or None, "now": MHz or None}: the CPU's highest frequency (cpufreq) and the
    first core's current one (cpufreq, else /proc/cpuinfo); None where the machine does not say
    (many VMs publish neither)."""

    def read(path, scale):
        try:
            with open(path) as fh:
                return float(fh.read().strip()) / scale
        except (OSError, ValueError):
            return None

    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    now = read(base + "scaling_cur_freq", 1000.0)
    if now is None:
        try:
            with open("/proc/cpuinfo") as fh:
                now = next((float(ln.split(":", 1)[1]) for ln in fh if ln.startswith("cpu MHz")), None)
        except (OSError, ValueError):
            now = None
    return {"max": read(base + "cpuinfo_max_freq", 1000.0), "now": now}


def _f32(bits):
    return np.frombuffer(np.uint32(bits).tobytes(), np.float32)


def subnormal_modes():
    """Flush-to-zero and denormals-are-zero as this thread's arithmetic does them now (MXCSR on
    x86: per thread, set by e.g. ``torch.set_flush_denormal``) -> ``{"ftz": bool, "daz": bool}``.
    Probed, not read: 2^-126 * 0.5 is 0 only under FTZ, 2^-127 * 2 is 0 only under DAZ."""
    half, two = np.float32(0.5), np.float32(2.0)
    return {"ftz": bool((_f32(0x00800000) * half)[0] == 0), "daz": bool((_f32(0x00400000) * two)[0] == 0)}


def vector():
    """What the env's ``cpu_isa`` and ``torch_cpu_capability`` do not say about why two machines'
    CPU speed-ups differ (recorded on every speed row and in the report): ``numba_vector_bits`` and
    ``numba_slp`` (what the numba backend's kernels compile with; ``numba_settings``: who chose them;
    ``numba_fallback``: why the wide vectors could not be set, or None; ``impls/backends/numba/target.py``), and
    ``ftz`` / ``daz`` (``subnormal_modes``) in the timing thread."""
    from ..impls.backends.numba import target

    st = target.configure()
    return {
        "numba_vector_bits": st["numba_vector_bits"],
        "numba_slp": st["numba_slp"],
        "numba_settings": f"features: {st['numba_cpu_features']}, slp: {st['slp_source']}",
        "numba_fallback": st["fallback"],
        **subnormal_modes(),
    }


@functools.lru_cache(maxsize=None)
def _environment():
    env = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "cpu_mhz": cpu_mhz(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        # torch's defaults in this process; each result row records the settings it ran under
        "tf32_matmul": precision.DEFAULTS["tf32_matmul"],
        "tf32_cudnn": precision.DEFAULTS["tf32_conv"],
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "thread_env": {k: os.environ.get(k) for k in _THREAD_VARS},
    }
    for key, names in {**_layer_packages(), **{p: (p,) for p in HARNESS_PACKAGES}}.items():
        env[key] = next((v for v in map(_version, names) if v), None)  # the first of its names installed
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    else:
        env["gpu"] = None
    return env
