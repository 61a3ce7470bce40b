"""Test tolerances from float precision: `ops` roundings of the dtype's epsilon at the output's scale.

Two IEEE-correct float paths for the same maths (another instruction set: ``--xla_cpu_max_isa=AVX2``/``SSE4_2``,
FMA or not, another reduction order, device count or process count, PyTorch vs XLA) may differ by about one rounding
of the largest value in play per operation of the chain that produced an element, so comparisons allow
``|actual - expected| <= ops * eps(dtype) * scale`` with ``scale = max|expected|`` (the output's scale) unless the
caller names a larger scale its intermediates reach (e.g. sums that cancel). Each call site states its ``ops`` with
a one-line count: an elementwise operation is 1, a sum of n terms n (the worst case of a recursive sum), a layer of
a deep network ~40-80 (its blocked accumulations). A bug (a wrong frame, weight, sign or step) moves outputs by
orders of magnitude more. Equal programs on one machine are bitwise equal: compare those with ``array_equal``.
"""
import ml_dtypes
import numpy as np


def eps(dtype=np.float32) -> float:
    """Machine epsilon of ``dtype`` (float32, float16, bfloat16 …)."""
    return float(ml_dtypes.finfo(dtype).eps)


def fp_tol(expected, *, ops: float, dtype=np.float32, scale=None):
    """Absolute tolerance ``ops * eps(dtype) * scale``; ``scale`` defaults to ``max|expected|``. An array ``scale``
    (e.g. ``np.abs(expected)`` for chains of products, which round relative to each element) gives one per element."""
    if scale is None:
        scale = np.max(np.abs(np.asarray(expected, np.float64)), initial=0.0)
    return ops * eps(dtype) * np.asarray(scale, np.float64)


def assert_close(actual, expected, *, ops: float, dtype=np.float32, scale=None, err_msg: str = "") -> None:
    """Asserts ``|actual - expected| <= fp_tol(expected, ops=ops, dtype=dtype, scale=scale)`` elementwise (same
    shapes, or a scalar ``expected``)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if expected.ndim == 0:  # a scalar expectation for every element
        expected = np.broadcast_to(expected, actual.shape)
    prefix = f"{err_msg}: " if err_msg else ""
    assert actual.shape == expected.shape, f"{prefix}shapes {actual.shape} vs {expected.shape}"
    tol = np.broadcast_to(fp_tol(expected, ops=ops, dtype=dtype, scale=scale), expected.shape)
    err = np.abs(actual - expected)
    bad = ~(err <= tol)  # NaN fails too
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), expected.shape)
        raise AssertionError(f"{prefix}{int(bad.sum())} of {bad.size} elements differ by more than {ops} ops x "
                             f"eps({np.dtype(dtype).name}) x scale; worst at {tuple(map(int, i))}: {actual[i]:.9g} "
                             f"vs {expected[i]:.9g} (|diff| {err[i]:.3g} > {tol[i]:.3g})")
