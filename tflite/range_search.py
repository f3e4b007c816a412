"""int8 activation ranges that minimise quantization error, chosen from a histogram.

An activation's int8 range trades two errors: values outside it are clipped to its
ends, and every value inside is rounded to one of 256 steps whose width grows with the
range. The plain min/max range never clips, but one outlier in the calibration images
can widen every step of a tensor many times over. This module picks the range from a
histogram of the observed values, per tensor:

- "minmax": the observed min and max (no clipping; the converter's own choice);
- "percentile": the `percentile`-th and (100 - `percentile`)-th percentiles;
- "mse": the range whose expected squared error (rounding inside, clipping outside)
  over the histogram is smallest, searched over shrunken ends of the min/max range.

Every range holds 0 (int8 represents 0 exactly, so padding and ReLU zeros stay exact).
Symmetric ranges are `[-m * 128/127, m]`: zero point exactly 0, as
`tflite.qat.FakeQuant(symmetric=True)` uses them.

Example:
    >>> hist = Histogram(lo=-3.0, hi=40.0)        # the min/max of a first pass
    >>> hist.add(activations)                     # any number of batches
    >>> choose_range(hist, "mse")                 # -> (lo, hi), e.g. (-2.9, 7.4)
"""

import numpy as np

METHODS = ("minmax", "percentile", "mse")
DEFAULT_BINS = 2048
# Candidate ends of the "mse" search, as fractions of the observed min / max.
SEARCH_STEPS = 128
SEARCH_FLOOR = 0.02
LEVELS = 255  # steps of an 8-bit range (256 values)


class Histogram:
    """Counts of observed values in `bins` equal bins over [lo, hi] (lo <= 0 <= hi).

    Values outside [lo, hi] count in the end bins. Exact zeros are counted apart:
    they are quantized without error whatever the range.
    """

    def __init__(self, lo, hi, bins=DEFAULT_BINS):
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"histogram bounds must be finite, got [{lo}, {hi}]")
        if hi - lo <= 0:
            hi = lo + 1e-4  # an all-zero tensor: any tiny range holds it
        self.lo, self.hi, self.bins = lo, hi, int(bins)
        self.counts = np.zeros(self.bins, np.float64)
        self.zeros = 0.0

    @property
    def centres(self):
        width = (self.hi - self.lo) / self.bins
        return self.lo + width * (np.arange(self.bins) + 0.5)

    @property
    def total(self):
        return float(self.counts.sum() + self.zeros)

    def add(self, values):
        """Count `values` (any shape). Raises ValueError on NaN or inf."""
        v = np.asarray(values, np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise ValueError("observed activations contain NaN or inf: the float model "
                             "overflows on the calibration images")
        zero = v == 0.0
        self.zeros += float(zero.sum())
        idx = np.floor((v[~zero] - self.lo) / (self.hi - self.lo) * self.bins)
        self.counts += np.bincount(np.clip(idx, 0, self.bins - 1).astype(np.int64),
                                   minlength=self.bins)
        return self


def _nudged(lo, hi):
    """The grid TensorFlow's fake-quant uses for [lo, hi]: step and ends moved so that
    0 is a grid point (arrays of candidates in, arrays out)."""
    step = (hi - lo) / LEVELS
    zero_point = np.clip(np.round(-lo / step), 0, LEVELS)
    return step, -zero_point * step, (LEVELS - zero_point) * step


def expected_error(hist, lo, hi):
    """Mean squared int8 error of the histogram's values under ranges [lo, hi]
    (scalars or equal-shape arrays of candidates).

    Inside the range a value is off by a uniform rounding error (step² / 12); outside
    it is clipped to the range's end. Exact zeros cost nothing.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    step, nlo, nhi = _nudged(lo, hi)
    x, c = hist.centres, hist.counts
    # Prefix sums of c, c*x, c*x² over the bins: the clipped error of any end is
    # sum c (x - end)² = sum c x² - 2 end sum c x + end² sum c over the bins past it.
    cum = [np.concatenate([[0.0], np.cumsum(m)]) for m in (c, c * x, c * x * x)]
    below = np.searchsorted(x, nlo, side="left")   # bins [0, below): centre under the range
    above = np.searchsorted(x, nhi, side="right")  # bins [above, bins): centre over it
    n_lo, s_lo, q_lo = (m[below] for m in cum)
    n_hi, s_hi, q_hi = (m[-1] - m[above] for m in cum)
    clip_lo = q_lo - 2 * nlo * s_lo + nlo * nlo * n_lo
    clip_hi = q_hi - 2 * nhi * s_hi + nhi * nhi * n_hi
    inside = c.sum() - n_lo - n_hi
    return (np.maximum(clip_lo, 0) + np.maximum(clip_hi, 0) + inside * step * step / 12) / max(
        hist.total, 1.0)


def _percentile_range(hist, percentile):
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    if hist.counts.sum() == 0:  # only exact zeros were seen (a dead ReLU): any range holds them
        return hist.lo, hist.hi
    tail = 1.0 - percentile / 100.0
    if tail <= 0:
        return hist.lo, hist.hi
    cdf = np.cumsum(hist.counts) / hist.counts.sum()
    edges = hist.lo + (hist.hi - hist.lo) / hist.bins * np.arange(hist.bins + 1)
    # cdf may end a rounding error under 1 - tail: the last edge at most
    last = min(int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1, hist.bins)
    return edges[int(np.searchsorted(cdf, tail, side="left"))], edges[last]


def _mse_range(hist, symmetric):
    fractions = np.linspace(SEARCH_FLOOR, 1.0, SEARCH_STEPS)
    if symmetric:
        m = max(-hist.lo * 127.0 / 128.0, hist.hi) * fractions
        his, los = m, -m * 128.0 / 127.0
    else:  # every pair of shrunken ends: [SEARCH_STEPS, SEARCH_STEPS] candidates
        los, his = np.meshgrid(hist.lo * fractions, hist.hi * fractions, indexing="ij")
        los, his = los.ravel(), his.ravel()
        # A one-sided tensor (e.g. after ReLU) has lo = 0: every candidate is the same.
    err = expected_error(hist, los, np.maximum(his, los + 1e-12))
    best = int(np.argmin(err))  # first minimum: the widest of equal candidates on ties
    return float(los[best]), float(his[best])


def choose_range(hist, method="mse", *, symmetric=False, percentile=99.99, min_width=1e-4):
    """The (lo, hi) int8 range for the values counted in `hist`.

    Args:
        hist: a `Histogram` of one tensor's calibration activations.
        method: one of `METHODS` (see the module docstring).
        symmetric: return `[-m * 128/127, m]` (zero point 0).
        percentile: for "percentile": the share of values kept inside, per side.
        min_width: the narrowest range returned (an all-zero tensor needs a scale).
    """
    if method not in METHODS:
        raise ValueError(f"unknown range method {method!r}: one of {', '.join(METHODS)}")
    if hist.total == 0:
        raise ValueError("the histogram is empty: no activations were observed")
    if method == "minmax":
        lo, hi = hist.lo, hist.hi
    elif method == "percentile":
        lo, hi = _percentile_range(hist, percentile)
    else:
        lo, hi = _mse_range(hist, symmetric)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        hi = max(-lo * 127.0 / 128.0, hi, min_width)
        return -hi * 128.0 / 127.0, hi
    if hi - lo < min_width:  # widened to the floor inside the observed range where it fits
        # (a near-constant tensor: its min/max range is already min_width wide)
        hi = min(lo + min_width, max(hist.hi, hi))
        lo = min(lo, hi - min_width)
    return lo, hi


def search_range(values, method="mse", *, symmetric=False, bins=DEFAULT_BINS, **kwargs):
    """`choose_range` over a histogram of `values` (one array of activations)."""
    v = np.asarray(values)
    if v.size == 0:
        raise ValueError("no values to choose a range from")
    hist = Histogram(np.min(v), np.max(v), bins).add(v)
    return choose_range(hist, method, symmetric=symmetric, **kwargs)
