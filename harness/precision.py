"""TF32 and cuDNN settings: set for a block, restored after, and recorded with every result.

torch's float32 convolutions through cuDNN default to TF32 on Ampere and newer GPUs (10 bits of
mantissa in the products), matrix products to full FP32.  A float32 result carrying TF32 errors
fails the float32 rounding bounds of reference/README.md section 9 for reasons that have nothing
to do with the backend under test, and a speed comparison of a TF32 baseline against FP32
kernels is not like for like.  So the correctness matrix and the FP32 speed baselines run with
TF32 off (``exact_fp32``), and the TF32 baseline is timed as its own row (``tf32``).

torch has two interfaces for these flags: the legacy booleans (``torch.backends.cudnn.allow_tf32``,
``torch.backends.cuda.matmul.allow_tf32``) and, from 2.9, ``fp32_precision`` strings ("ieee",
"tf32", "none" = inherit).  Mixing them in one process makes torch raise when a legacy flag is
read, so this module uses the new interface wherever it exists and the legacy one elsewhere.
Setting either is a host-side flag: nothing here touches the device.
"""

import contextlib

import torch


def _new_api():
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv is not None and hasattr(conv, "fp32_precision")


def _effective(value, parent):
    """A ``fp32_precision`` string with "none" resolved through its parent -> "tf32" or "ieee"."""
    if value == "none":
        value = parent
    return "tf32" if value == "tf32" else "ieee"


def state():
    """-> ``{"tf32_matmul": bool, "tf32_conv": bool, "cudnn_benchmark": bool}``: what float32
    matrix products and cuDNN convolutions use now (``"none"`` resolved through the parent setting;
    a matmul left at "none" follows ``torch.get_float32_matmul_precision()``)."""
    bench = bool(torch.backends.cudnn.benchmark)
    if _new_api():
        root = torch.backends.fp32_precision
        mm = torch.backends.cuda.matmul.fp32_precision
        if mm == "none" and root == "none":
            mm = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
        conv = torch.backends.cudnn.conv.fp32_precision
        return {
            "tf32_matmul": _effective(mm, root) == "tf32",
            "tf32_conv": _effective(conv, root) == "tf32",
            "cudnn_benchmark": bench,
        }
    return {
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bench,
    }


DEFAULTS = state()  # as found when this module was first imported (torch's defaults unless the user set them)


def _save():
    if _new_api():
        return ("new", torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    return ("legacy", torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def _restore(saved):
    kind, mm, conv = saved
    if kind == "new":
        torch.backends.cuda.matmul.fp32_precision = mm
        torch.backends.cudnn.conv.fp32_precision = conv
    else:
        torch.backends.cuda.matmul.allow_tf32 = mm
        torch.backends.cudnn.allow_tf32 = conv


def _set(tf32):
    if _new_api():
        v = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = v
        torch.backends.cudnn.conv.fp32_precision = v
    else:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


@contextlib.contextmanager
def fp32(tf32):
    """Float32 matrix products and cuDNN convolutions in TF32 (``tf32=True``) or full FP32 inside
    the block; the settings found on entry are restored on exit, also after an exception."""
    saved = _save()
    _set(bool(tf32))
    try:
        yield
    finally:
        _restore(saved)


def exact_fp32():
    """``fp32(False)``: what the correctness matrix and the FP32 speed baselines run under."""
    return fp32(False)


@contextlib.contextmanager
def cudnn_benchmark(on=True):
    """cuDNN's autotuner on (``torch.backends.cudnn.benchmark``) inside the block, restored after."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(on)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
