"""Paired comparisons over seeds: is method A better than method B, and by how much?

Two methods run on the same seeds share the pre-trained checkpoint, the data and the first
model, so their per-seed differences d_s = a_s - b_s remove what the seeds share. The mean
difference gets a Student-t interval,

    mean(d) +- t_{n-1, (1 + c) / 2} * std(d, ddof=1) / sqrt(n),

which is exact for normally distributed differences and what a paper with 3-10 seeds can honestly
say. A claim is decided only when the interval excludes zero.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> dict[str, float]:
  """Mean of ``a - b`` (paired by position) with its two-sided t interval.

  Returns ``{'mean', 'low', 'high', 'n'}``; with one pair the interval is unbounded (nan)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or not len(a):
    raise ValueError(f"paired_difference needs two equally long 1-d sequences, got shapes "
                     f"{a.shape} and {b.shape}.")
  d = a - b
  n = len(d)
  mean = float(d.mean())
  if n < 2:
    return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
  half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
  return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def verdict(interval: dict[str, float], better: str = "higher") -> str:
  """'yes' when the interval says A is better than B (``better``: 'higher' or 'lower' values
  are better), 'no' when it says B is, 'unresolved' when it contains zero (or is unbounded)."""
  low, high = interval["low"], interval["high"]
  if better == "lower":
    low, high = -high, -low
  if math.isnan(low) or math.isnan(high) or low <= 0 <= high:
    return "unresolved"
  return "yes" if low > 0 else "no"


def describe(interval: dict[str, float], digits: int = 4) -> str:
  """``+0.0123 [+0.0050, +0.0196]``."""
  f = lambda v: f"{v:+.{digits}f}"
  return f"{f(interval['mean'])} [{f(interval['low'])}, {f(interval['high'])}]"
