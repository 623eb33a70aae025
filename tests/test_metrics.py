import math

import numpy as np
import pytest

from starsse_jax import metrics

P = np.array([[0.7, 0.2, 0.1],
              [0.1, 0.3, 0.6],
              [0.25, 0.5, 0.25],
              [0.9, 0.05, 0.05]])
Y = np.array([0, 1, 1, 2])


def test_accuracy_and_nll_by_hand():
  assert metrics.accuracy(P, Y) == pytest.approx(0.5)  # rows 0 and 2 right
  expected = -(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.05)) / 4
  assert metrics.nll(P, Y) == pytest.approx(expected)


def test_brier_by_hand():
  rows = [(0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2), (0.1 ** 2 + 0.7 ** 2 + 0.6 ** 2),
          (0.25 ** 2 + 0.5 ** 2 + 0.25 ** 2), (0.9 ** 2 + 0.05 ** 2 + 0.95 ** 2)]
  assert metrics.brier(P, Y) == pytest.approx(np.mean(rows))


def test_ece_by_hand():
  # Confidences 0.7, 0.6, 0.5, 0.9 fall in four different bins of width 1/15 (or 1/2 for 2 bins).
  # 15 bins: |1-0.7| + |0-0.6| + |1-0.5| + |0-0.9| over 4.
  assert metrics.ece(P, Y, 15) == pytest.approx((0.3 + 0.6 + 0.5 + 0.9) / 4)
  # 2 bins: (0, .5] holds 0.5 (right): |1 - .5|; (.5, 1] holds .7 .6 .9 with accuracy 1/3.
  expected = 0.25 * 0.5 + 0.75 * abs(1 / 3 - (0.7 + 0.6 + 0.9) / 3)
  assert metrics.ece(P, Y, 2) == pytest.approx(expected)


def test_ensemble_is_mean_and_identical_members_equal_the_member():
  stacked = np.stack([P, P, P])
  np.testing.assert_allclose(metrics.ensemble(stacked), P)
  report = metrics.ensemble_report(stacked, Y)
  for key, value in metrics.summary(P, Y).items():
    assert report["ensemble"][key] == pytest.approx(value)
    assert all(c[key] == pytest.approx(value) for c in report["size_curve"])
  assert report["diversity"]["disagreement"] == 0.0
  assert report["diversity"]["kl_to_ensemble"] == pytest.approx(0.0, abs=1e-12)


def test_diversity_by_hand():
  a = np.array([[0.9, 0.1], [0.2, 0.8]])
  b = np.array([[0.4, 0.6], [0.3, 0.7]])
  stacked = np.stack([a, b])
  assert metrics.disagreement(stacked) == pytest.approx(0.5)  # differ on the first input only
  m = (a + b) / 2
  kl = lambda p, q: np.sum(p * np.log(p / q), -1)
  assert metrics.kl_to_ensemble(stacked) == pytest.approx(np.mean([kl(a, m), kl(b, m)]))
  # KL to the ensemble = H(mean) - mean H(member).
  h = lambda p: -np.sum(p * np.log(p), -1)
  assert metrics.kl_to_ensemble(stacked) == pytest.approx(np.mean(h(m) - (h(a) + h(b)) / 2))


def test_size_curve_uses_first_k_members():
  a = np.array([[0.9, 0.1], [0.9, 0.1]])
  b = np.array([[0.1, 0.9], [0.1, 0.9]])
  labels = np.array([1, 1])
  curve = metrics.ensemble_report(np.stack([a, b, b]), labels)["size_curve"]
  assert [c["accuracy"] for c in curve] == [0.0, 0.0, 1.0]  # (a+b)/2 ties -> argmax class 0
