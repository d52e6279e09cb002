"""Backend ``numba``: CPU kernels (``kernels``) and the layers over them (``layers``)."""
