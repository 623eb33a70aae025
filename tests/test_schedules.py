import math

import numpy as np
import pytest

from starsse_jax import schedules


def test_cosine_cycle_matches_formula():
  peak, n = 0.1, 40
  lr = schedules.cosine_cycle(peak, n)
  for t in (0, 1, 10, 20, 30, 39, 40):
    assert float(lr(t)) == pytest.approx(peak * (1 + math.cos(math.pi * t / n)) / 2, rel=1e-5,
                                         abs=1e-8)
  assert float(lr(20)) == pytest.approx(0.05, rel=1e-6)


def test_triangular_cycle_matches_fge_formula():
  lr1, lr2, c = 0.05, 1e-4, 8
  lr = schedules.triangular_cycle(lr1, lr2, c)

  def fge(t):  # Garipov et al.'s cyclic_learning_rate, per step
    u = (t % c) / c
    return (1 - 2 * u) * lr1 + 2 * u * lr2 if u < 0.5 else (2 * u - 1) * lr1 + (2 - 2 * u) * lr2

  for t in range(3 * c):
    assert float(lr(t)) == pytest.approx(fge(t), rel=1e-4)
  assert float(lr(c // 2)) == pytest.approx(lr2, rel=1e-4)
  shifted = schedules.triangular_cycle(lr1, lr2, c, offset_steps=c // 2)
  assert float(shifted(0)) == pytest.approx(lr2, rel=1e-4)
  assert float(shifted(c // 2)) == pytest.approx(lr1, rel=1e-4)


def test_table_is_steps_by_members():
  t = schedules.table([schedules.cosine_cycle(1.0, 4), schedules.cosine_cycle(2.0, 4)], 4)
  assert t.shape == (4, 2) and t.dtype == np.float32
  np.testing.assert_allclose(t[:, 1], 2 * t[:, 0], rtol=1e-6)
  np.testing.assert_allclose(t[:, 0], [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                       (1 + math.cos(3 * math.pi / 4)) / 2], rtol=1e-6)


@pytest.mark.parametrize("peak,n", [(0.0, 10), (-1.0, 10), (0.1, 0)])
def test_cosine_cycle_rejects_bad_values(peak, n):
  with pytest.raises(ValueError, match="cosine cycle"):
    schedules.cosine_cycle(peak, n)
