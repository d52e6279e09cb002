"""The backend registry: what each backend can run, and why it cannot when it cannot.

One record per backend (name, module, devices, dtypes, layers, passes, requirements); ``select``
turns a request (backend name, layer, input tensor) into the backend's op for that layer (its
module's ``OPS[layer]``, the interface of ``impls.backends``), or raises ``BackendUnavailable``
naming the backend and the reason.  ``"auto"`` takes the first backend of ``AUTO_ORDER`` that
accepts the request.  Adding a backend: its module under ``impls/backends/`` and one record here.
"""

import functools
import glob
import importlib
import importlib.util
import re
import shutil
from importlib import metadata
from dataclasses import dataclass, field

from ..reference.layers import LAYERS as _LAYERS

# No torch import here: ``rfbench backends`` reads this table in well under a second.
LAYERS = tuple(_LAYERS)  # the contract's layers (reference/layers.py)
F16 = ("float16", "bfloat16")
F32_64 = ("float32", "float64")
DTYPES = F32_64 + F16  # every dtype a backend may run, by torch's name
# Distributions whose versions every result records, whatever the backends (harness.env): the rest
# are the backends' own (``Backend.packages``).
CORE_PACKAGES = ("torch", "numpy")


def dtype_name(dtype):
    """``torch.float32`` (or ``"float32"``) -> ``"float32"``."""
    return str(dtype).rsplit(".", 1)[-1]


@functools.lru_cache(maxsize=None)
def cuda_available():
    """Whether torch sees a CUDA device; without an NVIDIA driver on the machine, False without importing torch."""
    if not (glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi")):
        return False
    import torch

    return torch.cuda.is_available()


class BackendUnavailable(RuntimeError):
    """A backend refuses a request (not installed, no device, dtype or layer unsupported)."""


class Inexpressible(BackendUnavailable):
    """A peer (``origin="peer"``) cannot express this call of our layer exactly (a position outside its
    window, a hyper-parameter it does not know, ...): raised by its op when it sees the arguments, and
    reported like any other refusal, with the reason (never approximated)."""


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # the module whose ``OPS`` maps each layer to its op, relative to impls (impls.backends)
    devices: tuple  # torch device types: "cpu", "cuda"
    dtypes: tuple  # names: "float32", ...
    layers: tuple = LAYERS
    passes: tuple = ("forward", "backward")
    requires: tuple = ()  # importable Python modules it needs
    # distributions whose versions every result records (harness.env, the report's environment
    # table): a name, or (key, name, name, ...) for one package published under several names
    packages: tuple = ()
    summary: str = ""
    cuda_dtypes: tuple = field(default=())  # extra dtypes accepted on CUDA only
    # dtypes whose results this backend flushes to zero below the smallest normal on CUDA
    # (compiled with -ftz=true); the tolerance floor of harness.metrics follows
    ftz_cuda: tuple = field(default=())
    # layers whose dense kernel this backend flushes below the smallest normal on the CPU in
    # float32 (``_math.flush_subnormal``: no subnormal stalls); the floor follows likewise
    ftz_cpu: tuple = field(default=())
    # "ours" (the project's code) or "peer" (an external implementation reached through an exact
    # parameter mapping, reference/README.md section 12); ``library``: the distribution it runs
    origin: str = "ours"
    library: str = ""
    # distributions built for one torch release: unavailable when their metadata's torch requirement
    # excludes the installed torch (read from the metadata, so ``rfbench backends`` imports no torch)
    torch_builds: tuple = ()
    # computes its interpolation weights from a rounded coordinate (``x + offset`` first, as
    # ``grid_sample`` and deform_conv2d do) rather than from the displacement and its floor: the
    # judge adds that rounding's bound (``harness.metrics.coordinate_floor``, reference/README.md section 9)
    coordinate_first: bool = False

    def unavailable(self):
        """Why this backend cannot run on this machine at all, or None."""
        return _unavailable(self)

    def refusal(self, layer, device, dtype):
        """Why this backend cannot run ``layer`` on ``device`` (a torch device) in ``dtype``, or None."""
        reason = self.unavailable()
        if reason:
            return reason
        if layer not in self.layers:
            return f"layer '{layer}' not implemented (has {', '.join(self.layers)})"
        if device.type not in self.devices:
            return f"runs on {'/'.join(self.devices)} only, not {device.type}"
        dtypes = self.dtypes + (self.cuda_dtypes if device.type == "cuda" else ())
        if dtype_name(dtype) not in dtypes:
            return f"dtype {dtype} not supported on {device.type} (has {', '.join(dtypes)})"
        return None

    def flushes_subnormals(self, device, dtype, layer=None):
        """Whether results in ``dtype`` on ``device`` (a torch device) are flushed to zero below the
        smallest normal (on the CPU: the dense kernel of ``layer``)."""
        if device.type == "cpu":
            return layer in self.ftz_cpu and dtype_name(dtype) == "float32"
        return device.type == "cuda" and dtype_name(dtype) in self.ftz_cuda

    def load(self):
        """The backend's module (imported on first use)."""
        reason = self.unavailable()
        if reason:
            raise BackendUnavailable(f"backend '{self.name}' is unavailable: {reason}")
        return importlib.import_module(self.module, __package__)

    def ops(self):
        """The backend's ops by layer: its module's ``OPS`` (the interface of ``impls.backends``)."""
        return self.load().OPS


@functools.lru_cache(maxsize=None)
def _unavailable(b):
    for mod in b.requires:
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not installed"
    if b.devices == ("cuda",) and not cuda_available():
        return "no CUDA device"
    if importlib.util.find_spec(b.module, __package__) is None:
        return f"module {b.module} missing"
    for dist in b.torch_builds:
        why = _torch_mismatch(dist)
        if why:
            return why
    return None


def _release(v):
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``."""
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:3])


def _torch_mismatch(dist):
    """Why ``dist`` was not built for the installed torch (its metadata's torch requirement), or None."""
    try:
        have = metadata.version("torch")
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError as exc:
        return f"{exc} not installed"
    for req in reqs:
        m = re.match(r"torch\s*\(?\s*([^;)]*)", req)
        if not m or ";" in req.split(m.group(0))[0]:
            continue
        for op, ver in re.findall(r"(==|>=|<=|<|>|~=)\s*([\w.+*]+)", m.group(1)):
            a, b = _release(have), _release(ver.rstrip(".*"))
            ok = {"==": a[: len(b)] == b, ">=": a >= b, "<=": a <= b, "<": a < b, ">": a > b, "~=": a >= b}[op]
            if not ok:
                return f"{dist} {metadata.version(dist)} is built for torch{op}{ver}, this is torch {have}"
    return None


BACKENDS = {
    b.name: b
    for b in (
        Backend(
            "reference",
            ".backends.reference",
            ("cpu",),
            ("float64",),
            requires=("scipy",),
            packages=("scipy",),
            summary="SciPy/NumPy float64 ground truth (slow, loops)",
        ),
        Backend(
            "torch-naive",
            ".backends.torch_naive",
            ("cpu", "cuda"),
            F32_64,
            passes=("forward", "backward", "double_backward"),
            cuda_dtypes=F16,
            summary="materialised dense kernel + conv2d; autograd",
            ftz_cpu=("dau_gauss",),
        ),
        Backend(
            "torch-fast",
            ".backends.torch_fast",
            ("cpu", "cuda"),
            F32_64,
            summary="the papers' efficient algorithms in torch ops; hand-written backward; groups: a pass per group",
            ftz_cpu=("dau_gauss",),
        ),
        Backend(
            "numba",
            ".backends.numba.layers",
            ("cpu",),
            F32_64,
            requires=("numba",),
            packages=("numba",),
            summary="Numba CPU kernels (parallel, deterministic); hand-written backward",
            ftz_cpu=("dau_gauss",),
        ),
        Backend(
            "numba-cuda",
            ".backends.cuda.numba_prims",
            ("cuda",),
            F32_64,
            requires=("numba",),
            packages=("numba", "numba-cuda"),
            summary="numba.cuda kernels: separable blur, bilinear shift, gather-form adjoints; deterministic; "
            "groups: a pass per group",
        ),
        Backend(
            "cupy",
            ".backends.cuda.cupy_prims",
            ("cuda",),
            F32_64,
            requires=("cupy",),
            packages=(("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy"),),  # named for its CUDA, or plain from source
            summary="CUDA C kernels via cupy.RawModule: shared-memory tiles, block reductions; cuBLAS mixing; "
            "groups: a pass per group",
            ftz_cuda=("float32",),  # CuPy appends -ftz=true to every NVRTC compile (cupy/cuda/compiler.py)
        ),
        # Peers: what users pick instead, run behind our signatures through exact mappings
        # (reference/README.md section 12); never in AUTO_ORDER.
        Backend(
            "dcls",
            ".backends.dcls",
            ("cpu", "cuda"),
            F32_64,
            layers=("dau", "dau_gauss"),
            requires=("DCLS",),
            packages=("dcls",),
            summary="peer: DCLS 0.1.1 kernel construction + conv2d (dau: version v1, blur_radius 0; dau_gauss: gauss)",
            origin="peer",
            library="dcls",
            coordinate_first=True,
        ),
        Backend(
            "deform-conv2d",
            ".backends.deform_conv2d",
            ("cpu", "cuda"),
            F32_64,
            layers=("acu",),
            requires=("torchvision",),
            packages=("torchvision",),
            summary="peer: torchvision.ops.deform_conv2d, 1 x K kernel, constant offsets (acu, shared positions)",
            origin="peer",
            library="torchvision",
            coordinate_first=True,
            torch_builds=("torchvision",),
        ),
    )
}

# Preference of backend="auto", fastest first.  CPU dau, acu, njet: by the forward+backward
# speed-up at 1 thread on the paper cases (rfbench bench --grid paper --cases paper --threads 1,
# float32, quiet machine: numba 8.9x / 2.5x / 2.1x over torch-naive, torch-fast 3.7x / 2.1x /
# 1.7x); dau_gauss: the paper case in reports/cpu (torch-fast 0.98x of torch-naive, numba 0.08x).
# CUDA: the hand-written kernels first (chosen before any GPU run; reports/h200, the first one, finds
# torch-fast ahead of cupy for dau_gauss, an order not yet revised).
AUTO_ORDER = {
    ("cpu", "dau"): ("numba", "torch-fast", "torch-naive", "reference"),
    ("cpu", "acu"): ("numba", "torch-fast", "torch-naive", "reference"),
    ("cpu", "njet"): ("numba", "torch-fast", "torch-naive", "reference"),
    ("cpu", "dau_gauss"): ("torch-naive", "torch-fast", "numba", "reference"),
}
AUTO_ORDER_CUDA = ("cupy", "numba-cuda", "torch-fast", "torch-naive")


def auto_order(layer, device):
    """Backends ``"auto"`` tries for ``layer`` on ``device`` (a torch device), in order."""
    if device.type == "cpu":
        return AUTO_ORDER[("cpu", layer)]
    return AUTO_ORDER_CUDA


def get(name):
    if name not in BACKENDS:
        raise ValueError(f"argument 'backend' expected 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def resolve(name, layer, device, dtype):
    """Name of the backend that runs ``layer`` on ``device`` (a torch device) in ``dtype``, without loading it:
    ``name`` itself, or for ``"auto"`` the first of ``auto_order`` that accepts. Raises ``BackendUnavailable``."""
    if name == "auto":
        reasons = []
        for cand in auto_order(layer, device):
            if cand in BACKENDS:
                why = BACKENDS[cand].refusal(layer, device, dtype)
                if why is None:
                    return cand
                reasons.append(f"{cand}: {why}")
        raise BackendUnavailable(f"no backend runs {layer} for {dtype} on {device}: " + "; ".join(reasons))
    why = get(name).refusal(layer, device, dtype)
    if why:
        raise BackendUnavailable(f"backend '{name}' refuses {layer} for {dtype} on {device}: {why}")
    return name


def select(name, layer, x):
    """The op that runs ``layer`` on ``x``'s device and dtype. -> ``(backend name, op)``"""
    name = resolve(name, layer, x.device, x.dtype)
    return name, BACKENDS[name].ops()[layer]


def packages():
    """Distributions whose versions a result records: ``CORE_PACKAGES``, then every backend's ``packages``,
    each once -> ``{key: (distribution, ...)}`` (the first one installed is recorded under the key)."""
    out = {name: (name,) for name in CORE_PACKAGES}
    for b in BACKENDS.values():
        for p in b.packages:
            key, *names = (p, p) if isinstance(p, str) else p
            out.setdefault(key, tuple(names))
    return out


def peers():
    """Names of the external implementations (``origin == "peer"``)."""
    return [n for n, b in BACKENDS.items() if b.origin == "peer"]


def twice_differentiable():
    """Backends whose gradients can be differentiated again (``"double_backward"`` in their passes)."""
    return [n for n, b in BACKENDS.items() if "double_backward" in b.passes]


def available_backends():
    """Names of the backends that can run on this machine (some layer, some dtype)."""
    return [n for n, b in BACKENDS.items() if b.unavailable() is None]


def table():
    """One dict per backend: capabilities and the reason it is unavailable (None if available)."""
    return [
        {
            "backend": b.name,
            "layers": list(b.layers),
            "devices": list(b.devices),
            "dtypes": list(b.dtypes),
            "cuda_dtypes": list(b.cuda_dtypes),  # accepted on CUDA only
            "passes": list(b.passes),
            "unavailable": b.unavailable(),
            "summary": b.summary,
            "origin": b.origin,
            "library": b.library,
        }
        for b in BACKENDS.values()
    ]
