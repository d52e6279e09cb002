"""The speed baselines of reference/README.md section 8, named once (no torch, no pandas here).

``torch-naive`` is the exact dense kernel of each layer.  ``conv2d-std`` is what the DAU paper
compares against: a plain conv2d with a dense ``Ks x Ks`` kernel (timing only, it computes another
function), in FP32 with TF32 off.  On CUDA it is also timed as it runs by default and as users run
it: with TF32 on, and in float16 and bfloat16 (tensor cores), each as a baseline of its own.
"""

NAIVE = "torch-naive"
STD = "conv2d-std"
STD_TF32 = "conv2d-std-tf32"
STD_FP16 = "conv2d-std-fp16"
STD_BF16 = "conv2d-std-bf16"

# conv2d-std variants -> (dtype it computes in, TF32 on).  All but STD are timed on CUDA only and
# only in float32 groups: they answer "faster than what a user would run instead?".
STD_VARIANTS = {
    STD: ("float32", False),
    STD_TF32: ("float32", True),
    STD_FP16: ("float16", False),
    STD_BF16: ("bfloat16", False),
}
ALL = (NAIVE,) + tuple(STD_VARIANTS)


def std_variants(device_type, dtype):
    """The conv2d-std baselines a DAU group on ``device_type`` ("cpu"/"cuda") in ``dtype`` (a name) times."""
    if device_type == "cuda" and dtype == "float32":
        return tuple(STD_VARIANTS)
    return (STD,)


def precision_of(name, dtype):
    """The arithmetic a row ran in: "tf32", or a dtype name (``dtype``: the group's dtype)."""
    if name in STD_VARIANTS and name != STD:
        run_dtype, tf32 = STD_VARIANTS[name]
        return "tf32" if tf32 else run_dtype
    return dtype
