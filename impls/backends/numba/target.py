"""Wide vectors for the ``numba`` backend: the settings numba's CPU target reads when it starts.

By default numba compiles with LLVM's SLP vectorizer off (``NUMBA_SLP_VECTORIZE=0``), and on the
CPUs whose LLVM model prefers 256-bit vectors (Intel's with AVX-512) it uses ymm registers only.
The register-blocked DAU kernels (``kernels``) need both: their accumulators are small
fixed-size arrays that LLVM unrolls into scalars and the SLP vectorizer packs into vectors (without
SLP the same source compiles to scalar code), and on an AVX-512 Xeon the paper-case forward ran
3.83x faster than conv2d-std with 512-bit vectors, 3.41x with numba's 256-bit ones (one thread,
interleaved, process CPU time, on a loaded machine).

``configure()`` runs once, before the backend imports numba:

- ``NUMBA_SLP_VECTORIZE=1`` unless the user set the variable (then theirs stands).  Numba
  re-reads it at every compilation (``numba.core.config.reload_config``), so it applies to the
  backend's kernels even when numba was imported first.
- ``NUMBA_CPU_FEATURES`` = the host's features plus ``-prefer-256-bit``, only where the host has
  AVX-512F and only if the user did not set the variable.  Numba reads it once, when its CPU
  target starts (the first ``@njit`` of the process, compiled or not).  If that already happened,
  the target keeps what it started with: the backend then runs the same kernels at the width numba
  chose, and ``STATE["fallback"]`` says so (the speed rows and the report carry ``STATE``).

Both are set in ``os.environ``, like a user setting them: they also reach numba functions of other
libraries compiled later in this process (SLP on, and the full vector width on AVX-512), and child
processes.  The CPU features are part of numba's cache key, so a cache written under other
features is recompiled once, not reused.  Numba's cache does not key on the SLP setting.
"""

import os
import sys

STATE = {}


def _host_features():
    """LLVM's feature string of this CPU (``+avx512f,...``), or "" if llvmlite cannot say."""
    try:
        import llvmlite.binding as ll

        return ll.get_host_cpu_features().flatten()
    except Exception:  # noqa: BLE001 (an llvmlite without the call: keep numba's defaults)
        return ""


def _has(features, name):
    return f"+{name}" in features.split(",")


def _target_started():
    """Whether numba's CPU target exists already (its features are then fixed)."""
    if "numba" not in sys.modules:
        return False
    try:
        from numba.core.registry import cpu_target
    except ImportError:
        return False
    return "_toplevel_target_context" in vars(cpu_target)


def isa(features):
    """The widest x86 vector ISA in an LLVM feature string -> "avx512", "avx2", "avx", "sse" or "other"."""
    for name, tag in (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse2", "sse")):
        if _has(features, name):
            return tag
    return "other"


def vector_bits(features):
    """Vector width LLVM uses for loops under ``features``: 512 with AVX-512F and ``-prefer-256-bit``
    (or a CPU model without that preference, which LLVM does not say here: taken as 256), 256 with
    AVX/AVX2, 128 otherwise."""
    tag = isa(features)
    if tag == "avx512":
        return 512 if "-prefer-256-bit" in features.split(",") else 256
    return 256 if tag in ("avx2", "avx") else 128


def configure():
    """Set the NUMBA_* variables above (once) -> ``STATE``: ``cpu_isa``, ``numba_cpu_features``
    (``rfbench`` / ``user`` / ``numba default``), ``numba_vector_bits``, ``numba_slp`` (bool),
    ``slp_source``, ``fallback`` (None, or why the wide vectors could not be set)."""
    if STATE:
        return STATE
    host = _host_features()
    started = _target_started()
    fallback = None
    if "NUMBA_SLP_VECTORIZE" in os.environ:
        slp_source = "user"
    else:
        os.environ["NUMBA_SLP_VECTORIZE"] = "1"
        slp_source = "rfbench"
    if "NUMBA_CPU_FEATURES" in os.environ and not started:
        # an empty string leaves LLVM the CPU model's defaults: the host's features, 256-bit preference
        feat_source, features = "user", os.environ["NUMBA_CPU_FEATURES"].strip() or host
    elif started:
        features = _started_features(host)
        feat_source = "numba default" if "NUMBA_CPU_FEATURES" not in os.environ else "user"
        if isa(host) == "avx512" and vector_bits(features) < 512:
            fallback = (
                "numba's CPU target was started before the numba backend was imported (an @njit "
                "elsewhere first): its kernels run at 256-bit vectors; import rfbench.impls.backends.numba.kernels "
                "first, or set NUMBA_CPU_FEATURES to the host's features plus -prefer-256-bit"
            )
    elif isa(host) == "avx512":
        features = host + ",-prefer-256-bit"
        os.environ["NUMBA_CPU_FEATURES"] = features
        feat_source = "rfbench"
    else:
        features, feat_source = host, "numba default"
    if "numba" in sys.modules and not started:
        # imported but not started (harness.timing imports it to set its thread count): numba read
        # the environment at import; its target would start with that reading
        from numba.core import config

        config.reload_config()
    STATE.update(
        cpu_isa=isa(host),
        numba_cpu_features=feat_source,
        numba_vector_bits=vector_bits(features),
        numba_slp=os.environ.get("NUMBA_SLP_VECTORIZE", "0").strip() not in ("", "0"),
        slp_source=slp_source,
        fallback=fallback,
    )
    return STATE


def verify():
    """After the backend's first ``@njit`` (numba's CPU target now exists): the vector width the
    target really has -> ``STATE``, with a fallback note if it is not the one ``configure`` set."""
    st = configure()
    real = vector_bits(_started_features(_host_features()))
    if real != st["numba_vector_bits"]:
        st["fallback"] = st["fallback"] or (
            f"numba's CPU target started with {real}-bit vectors, not the {st['numba_vector_bits']} "
            "set for it (its settings were read before rfbench set them)"
        )
        st["numba_vector_bits"] = real
    return st


def _started_features(host):
    """The features numba's running CPU target was built with (host's if it cannot say)."""
    try:
        from numba.core.registry import cpu_target

        return cpu_target.target_context.codegen()._tm_features or host
    except Exception:  # noqa: BLE001 (numba internals moved: report the host's)
        return host
