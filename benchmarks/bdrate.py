"""Bjøntegaard delta rate (BD-rate) between two rate-distortion curves.

One job: say by what percentage a test codec changes the bit rate needed for
the same quality as an anchor codec, averaged over the quality range both
curves cover.  Negative means the test codec needs fewer bits.

Method (the piecewise-cubic variant used by current video-coding test
conditions and by CompressAI): for each curve, log(rate) is interpolated as a
function of quality (PSNR or MS-SSIM in dB) with a monotone piecewise cubic
Hermite interpolant (PCHIP, Fritsch-Carlson slopes); both interpolants are
integrated exactly over the overlapping quality interval; the mean log-rate
difference d gives BD-rate = (exp(d) - 1) * 100 %.

PCHIP is implemented here with numpy alone because scipy is not a dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Pchip", "BDResult", "bd_rate", "bd_rate_result"]


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives at the knots that keep the interpolant monotone between
    knots wherever the data are monotone (Fritsch & Carlson 1980, with the
    Fritsch & Butland weighted harmonic mean inside and a shape-preserving
    one-sided three-point formula at the two ends)."""
    n = x.size
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    # Interior: weighted harmonic mean of neighbouring secants when they have
    # the same sign, else zero (a local extremum stays flat).
    for k in range(1, n - 1):
        a, b = delta[k - 1], delta[k]
        if a * b <= 0:
            d[k] = 0.0
        else:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / a + w2 / b)

    def end(h0: float, h1: float, m0: float, m1: float) -> float:
        s = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(m0) != np.sign(m1) and abs(s) > abs(3 * m0):
            return 3 * m0
        if np.sign(s) != np.sign(m0):
            return 0.0
        return s

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


class Pchip:
    """Monotone piecewise cubic Hermite interpolant through (x, y).

    ``x`` must be strictly increasing with at least two points.  Evaluation
    outside [x[0], x[-1]] extrapolates the end cubic (only used by callers
    that know what they are doing; ``integrate`` refuses it).
    """

    def __init__(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2:
            raise ValueError("Pchip needs two 1-D arrays of equal length >= 2")
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
            raise ValueError("Pchip needs finite values")
        if np.any(np.diff(x) <= 0):
            raise ValueError("Pchip needs strictly increasing x")
        self.x, self.y = x, y
        self.d = _pchip_slopes(x, y)

    def _segment(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.x, t, side="right") - 1, 0, self.x.size - 2)

    def __call__(self, t):
        t = np.asarray(t, dtype=np.float64)
        k = self._segment(t)
        h = self.x[k + 1] - self.x[k]
        s = (t - self.x[k]) / h
        s2, s3 = s * s, s * s * s
        return ((2 * s3 - 3 * s2 + 1) * self.y[k] + (s3 - 2 * s2 + s) * h * self.d[k]
                + (-2 * s3 + 3 * s2) * self.y[k + 1] + (s3 - s2) * h * self.d[k + 1])

    def _antiderivative_in_segment(self, k: int, t: float) -> float:
        """Integral of the cubic of segment k from x[k] to t (exact)."""
        h = self.x[k + 1] - self.x[k]
        s = (t - self.x[k]) / h
        s2, s3, s4 = s * s, s ** 3, s ** 4
        return h * ((s - s3 + s4 / 2) * self.y[k]
                    + (s2 / 2 - 2 * s3 / 3 + s4 / 4) * h * self.d[k]
                    + (s3 - s4 / 2) * self.y[k + 1]
                    + (s4 / 4 - s3 / 3) * h * self.d[k + 1])

    def integrate(self, a: float, b: float) -> float:
        """Exact integral from a to b, both inside [x[0], x[-1]]."""
        if a > b:
            return -self.integrate(b, a)
        lo, hi = self.x[0], self.x[-1]
        eps = 1e-12 * max(1.0, abs(lo), abs(hi))
        if a < lo - eps or b > hi + eps:
            raise ValueError(f"integration bounds [{a}, {b}] leave [{lo}, {hi}]")
        a, b = min(max(a, lo), hi), min(max(b, lo), hi)
        ka, kb = int(self._segment(a)), int(self._segment(b))
        total = -self._antiderivative_in_segment(ka, a)
        for k in range(ka, kb):
            total += self._antiderivative_in_segment(k, self.x[k + 1])
        return total + self._antiderivative_in_segment(kb, b)


@dataclass
class BDResult:
    """BD-rate in percent plus the quality interval it was averaged over."""

    bd_rate: float | None          # percent; None when it cannot be computed
    lo: float | None = None        # overlap of the two quality ranges (dB)
    hi: float | None = None
    note: str = ""                 # why it is None, or a caveat

    def as_dict(self) -> dict:
        return {"bd_rate": self.bd_rate, "overlap": [self.lo, self.hi], "note": self.note}


def _clean_curve(rate, quality) -> tuple[np.ndarray, np.ndarray]:
    """Drop non-finite or non-positive points, sort by quality and merge
    points of equal quality (mean log-rate) so quality is strictly increasing."""
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError("rate and quality lists differ in length")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.argsort(q, kind="stable")
    logr, q = np.log(r[order]), q[order]
    uq, inverse = np.unique(q, return_inverse=True)
    merged = np.array([logr[inverse == i].mean() for i in range(uq.size)])
    return uq, merged


def bd_rate_result(rate_anchor, quality_anchor, rate_test, quality_test) -> BDResult:
    """BD-rate of the test curve against the anchor curve, with its overlap.

    Rates (bpp, or any positive rate) and qualities (PSNR dB, MS-SSIM dB...)
    are per operating point, in any order.  Returns ``bd_rate=None`` with a
    note when either curve has fewer than two usable points or the quality
    ranges do not overlap.
    """
    qa, la = _clean_curve(rate_anchor, quality_anchor)
    qt, lt = _clean_curve(rate_test, quality_test)
    if qa.size < 2 or qt.size < 2:
        return BDResult(None, note="fewer than two usable points on a curve")
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return BDResult(None, note="quality ranges do not overlap")
    fa, ft = Pchip(qa, la), Pchip(qt, lt)
    mean_diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    note = ""
    span = min(qa[-1] - qa[0], qt[-1] - qt[0])
    if (hi - lo) < 0.5 * span:
        note = "overlap covers less than half of the shorter curve's quality range"
    return BDResult(float((math.exp(mean_diff) - 1.0) * 100.0), float(lo), float(hi), note)


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> float | None:
    """BD-rate in percent of test against anchor (negative: test needs fewer
    bits for equal quality); None when the curves do not overlap."""
    return bd_rate_result(rate_anchor, quality_anchor, rate_test, quality_test).bd_rate
