"""Calibration: from observed activation values to a quantization range [lo, hi].

Three methods, written here rather than borrowed from onnxruntime so edgec can be
compared with it: MinMax (the observed extremes), percentile (clip the tails of the
value histogram) and entropy (TensorRT's KL-divergence threshold search over the
histogram of |x|). Histograms are symmetric around 0 so one histogram serves both the
two-sided percentile and the |x| histogram KL needs.
"""

from __future__ import annotations

import math

import numpy as np

HISTOGRAM_BINS = 4096  # over [-A, A]: 2048 bins for |x|, as TensorRT and onnxruntime use
# Values one `Histogram.add` counts at most: a larger tensor (a 736x736 detector's maps
# are 8.7M values a batch) is counted at a stride (`_sampling_stride`). A million values
# place the 99.99th percentile within a hundred values of the tail, and make the histogram
# pass of a detector-sized model seconds instead of tens of seconds.
HISTOGRAM_MAX_VALUES = 1 << 20


def _sampling_stride(size: int) -> int:
    """The stride that counts at most HISTOGRAM_MAX_VALUES of ``size`` values, made
    coprime with ``size``: every trailing block of axes (channels last, say) has a size
    that divides ``size``, so a stride sharing a factor with it visits some channels only
    (a stride of 2 over 512 channels: the even ones). Coprime, the stride walks every
    residue of each such block."""
    stride = -(-size // HISTOGRAM_MAX_VALUES)
    while math.gcd(stride, size) != 1:
        stride += 1
    return stride


def minmax_range(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float32)
    if v.size == 0:
        return 0.0, 0.0
    return float(v.min()), float(v.max())


class Histogram:
    """A histogram of one tensor's values over the fixed symmetric range [-A, A]."""

    def __init__(self, absmax: float, bins: int = HISTOGRAM_BINS):
        self.absmax = float(absmax) if absmax > 0 else 1e-8
        self.counts = np.zeros(bins, dtype=np.int64)
        self.edges = np.linspace(-self.absmax, self.absmax, bins + 1)
        self.zeros = 0  # exact zeros among the counted values (in the bin that holds 0)
        self._zero_bin = int(np.histogram([0.0], bins=bins, range=(-self.absmax, self.absmax))[0].argmax())

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        if v.size > HISTOGRAM_MAX_VALUES:
            v = v[::_sampling_stride(v.size)]
        v = v[np.isfinite(v)]
        counts, _ = np.histogram(v, bins=len(self.counts), range=(-self.absmax, self.absmax))
        self.counts += counts
        self.zeros += int(np.count_nonzero(v == 0))

    def magnitude(self, *, exact_zeros: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of |x|: the two halves folded onto [0, A]; without
        ``exact_zeros`` the values that are exactly 0 are not counted."""
        counts = self.counts.copy()
        if not exact_zeros:
            counts[self._zero_bin] -= self.zeros
        half = len(counts) // 2
        return counts[half:] + counts[:half][::-1], self.edges[half:]


def percentile_range(hist: Histogram, percentile: float, observed: tuple[float, float]) -> tuple[float, float]:
    """[lo, hi] keeping ``percentile`` % of the values at each tail: lo is the
    (100 - p)-th percentile and hi the p-th, both inside the observed extremes."""
    total = hist.counts.sum()
    if total == 0:
        return observed
    cdf = np.cumsum(hist.counts) / total
    q = percentile / 100.0
    hi_index = int(np.searchsorted(cdf, q, side="left"))
    lo_index = int(np.searchsorted(cdf, 1.0 - q, side="left"))
    hi = float(hist.edges[min(hi_index + 1, len(hist.edges) - 1)])
    lo = float(hist.edges[lo_index])
    lo, hi = max(lo, observed[0]), min(hi, observed[1])
    return (lo, hi) if lo <= hi else observed


def entropy_threshold(counts: np.ndarray, edges: np.ndarray, num_quantized_bins: int = 128,
                      stride: int = 1) -> float:
    """The |x| threshold whose int8 rendering loses the least information (TensorRT):
    for each candidate i, P = counts[:i] with the clipped tail added to its last bin,
    Q = counts[:i] merged into ``num_quantized_bins`` bins and spread back over each
    merged range's non-empty bins; pick the i minimising KL(P || Q)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = len(counts)
    if counts.sum() == 0 or n <= num_quantized_bins:
        return float(edges[-1])
    best_kl, best_i = np.inf, n
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = sum(counts[i:])
    for i in range(num_quantized_bins, n + 1, stride):
        p = counts[:i].copy()
        p[-1] += tail[i]
        nonzero = counts[:i] != 0
        # Merge counts[:i] into num_quantized_bins groups (as even as integer bins allow).
        group = (np.arange(i) * num_quantized_bins) // i
        merged = np.bincount(group, weights=counts[:i], minlength=num_quantized_bins)
        support = np.bincount(group, weights=nonzero.astype(np.float64), minlength=num_quantized_bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_bin = np.where(support > 0, merged / np.maximum(support, 1), 0.0)
        q = np.where(nonzero, per_bin[group], 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        p, q = p / p_sum, q / q_sum
        mask = p > 0
        # P has mass where Q is 0 only through the clipped tail's bin; smooth it.
        q_masked = np.maximum(q[mask], 1e-12)
        kl = float(np.sum(p[mask] * np.log(p[mask] / q_masked)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[min(best_i, n)])


def entropy_range(hist: Histogram, observed: tuple[float, float]) -> tuple[float, float]:
    counts, edges = hist.magnitude(exact_zeros=False)
    stride = max(1, (len(counts) - 128) // 480)  # ~480 candidates: fast, and bins are fine
    t = entropy_threshold(counts, edges, stride=stride)
    return max(observed[0], -t), min(observed[1], t)
