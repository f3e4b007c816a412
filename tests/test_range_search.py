"""tflite.range_search: activation ranges chosen from a histogram (numpy only, fast)."""

import numpy as np
import pytest

from tflite import range_search as rs


def fake_quant(v, lo, hi):
    """TensorFlow's fake-quant of `v` on the nudged 8-bit grid of [lo, hi]."""
    step, nlo, nhi = rs._nudged(np.float64(lo), np.float64(hi))
    return np.round((np.clip(v, nlo, nhi) - nlo) / step) * step + nlo


def mse(v, lo, hi):
    return float(np.mean((fake_quant(v, lo, hi) - v) ** 2))


def samples(kind, n=50_000, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "laplace":  # heavy tails: the min/max range wastes most of its steps
        return rng.laplace(0.0, 1.0, n)
    if kind == "relu":
        return np.maximum(rng.normal(0.0, 1.0, n), 0.0)
    if kind == "outliers":  # a few far outliers on both sides of a normal bulk
        return np.concatenate([rng.normal(0.5, 1.0, n), [-30.0, 45.0]])
    return rng.uniform(-1.0, 3.0, n)


@pytest.mark.parametrize("kind", ["laplace", "relu", "outliers", "uniform"])
def test_expected_error_matches_the_real_quantization_error(kind):
    v = samples(kind)
    hist = rs.Histogram(v.min(), v.max()).add(v)
    for lo, hi in [(v.min(), v.max()), (v.min() / 3, v.max() / 2), (v.min() / 10, v.max() / 8)]:
        lo, hi = min(lo, 0.0), max(hi, 0.0) + 1e-9
        assert rs.expected_error(hist, lo, hi) == pytest.approx(mse(v, lo, hi), rel=0.05)


@pytest.mark.parametrize("kind, gain", [("laplace", 0.92), ("relu", 0.98), ("outliers", 0.92)])
def test_mse_range_quantizes_better_than_min_max(kind, gain):
    v = samples(kind)
    lo, hi = rs.search_range(v, "mse")
    assert lo <= 0.0 <= hi
    assert hi - lo < v.max() - v.min()  # the tails are clipped...
    assert mse(v, lo, hi) < gain * mse(v, v.min(), max(v.max(), 0.0))  # ...and it pays


def test_mse_range_is_never_worse_than_any_searched_shrink():
    v = samples("laplace", seed=3)
    lo, hi = rs.search_range(v, "mse")
    best = mse(v, lo, hi)
    for f_lo, f_hi in [(1.0, 1.0), (0.5, 0.5), (0.8, 0.6), (0.3, 0.9)]:
        assert best <= mse(v, v.min() * f_lo, v.max() * f_hi) * 1.02


def test_minmax_keeps_the_observed_range_and_zero():
    v = np.array([0.5, 1.0, 7.0])
    assert rs.search_range(v, "minmax") == pytest.approx((0.0, 7.0))
    assert rs.search_range(-v, "minmax") == pytest.approx((-7.0, 0.0))


def test_percentile_range_clips_the_requested_share():
    v = samples("laplace")
    lo, hi = rs.search_range(v, "percentile", percentile=99.0)
    assert np.mean(v < lo) == pytest.approx(0.01, abs=0.002)
    assert np.mean(v > hi) == pytest.approx(0.01, abs=0.002)


@pytest.mark.parametrize("method", rs.METHODS)
def test_symmetric_ranges_have_zero_point_zero(method):
    lo, hi = rs.search_range(samples("outliers"), method, symmetric=True)
    assert lo == pytest.approx(-hi * 128.0 / 127.0)
    step, nlo, _ = rs._nudged(np.float64(lo), np.float64(hi))
    assert -nlo / step == pytest.approx(128.0)  # int8 zero point 0 (uint8 128)


def test_exact_zeros_cost_nothing_and_all_zero_tensors_get_a_scale():
    hist = rs.Histogram(0.0, 4.0).add(np.zeros(1000))
    assert rs.expected_error(hist, 0.0, 4.0) == 0.0
    lo, hi = rs.search_range(np.zeros(10), "mse")
    assert (lo, hi) == (0.0, pytest.approx(1e-4))


@pytest.mark.parametrize("method", rs.METHODS)
def test_a_tensor_of_exact_zeros_in_a_wider_min_max_gets_a_range(method):
    """The second calibration pass can see only zeros (a ReLU dead on these images)
    where the first saw more: percentile indexed past the last edge (IndexError,
    mobilevitv2_050 at 64x64 on noise)."""
    hist = rs.Histogram(-2.0, 3.0).add(np.zeros(500))
    lo, hi = rs.choose_range(hist, method)
    assert lo <= 0.0 <= hi and hi - lo >= 1e-4
    # a tail a rounding error short of the requested share still ends on an edge
    hist = rs.Histogram(0.0, 1.0).add(np.linspace(0.0, 1.0, 10**5))
    assert rs.choose_range(hist, "percentile", percentile=100.0 - 1e-12)[1] == pytest.approx(1.0)


def test_histograms_add_batches():
    v = samples("laplace")
    one = rs.Histogram(v.min(), v.max()).add(v)
    two = rs.Histogram(v.min(), v.max()).add(v[:1000]).add(v[1000:].reshape(-1, 7))
    np.testing.assert_array_equal(one.counts, two.counts)
    assert rs.choose_range(one) == rs.choose_range(two)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown range method 'kl'"):
        rs.search_range(np.ones(3), "kl")
    with pytest.raises(ValueError, match="NaN or inf"):
        rs.Histogram(0.0, 1.0).add(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        rs.choose_range(rs.Histogram(0.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        rs.search_range(np.ones(3), "percentile", percentile=20)
    with pytest.raises(ValueError, match="no values"):
        rs.search_range(np.array([]))


@pytest.mark.parametrize("method", rs.METHODS)
def test_narrow_tensors_get_the_floor_width_inside_their_min_max_range(method):
    """A near-constant tensor (spread under the 1e-4 floor): its min/max range is the
    floor wide already, and every method's range stays inside it."""
    values = np.random.default_rng(0).normal(-4.5e-5, 1e-5, 10_000)
    lo0, hi0 = values.min(), values.min() + 1e-4  # what the min/max pass keeps
    hist = rs.Histogram(lo0, hi0).add(values)
    lo, hi = rs.choose_range(hist, method)
    assert hi - lo >= 1e-4 * (1 - 1e-9)
    assert lo0 <= lo <= 0.0 <= hi <= hi0
