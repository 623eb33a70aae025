import jax.numpy as jnp
import numpy as np
import pytest

from starsse_jax import members, soups


def _stacked(values):
  return {"w": jnp.asarray(values, jnp.float32)[:, None] * jnp.ones((1, 3))}


def test_uniform_soup_is_the_mean():
  params = members.stack([{"w": jnp.full((2,), v), "b": jnp.array(v * 2)} for v in (1.0, 2.0, 6.0)])
  soup = soups.uniform_soup(params)
  np.testing.assert_allclose(soup["w"], [3.0, 3.0])
  np.testing.assert_allclose(soup["b"], 6.0)


def test_greedy_soup_starts_with_best_and_adds_only_strict_improvements():
  # Members are scalars; a soup's score is -(mean - 2)^2: the ideal soup averages to 2.
  values = [0.0, 2.5, 1.0, 3.5, 1.5]
  own = [-(v - 2) ** 2 for v in values]
  score = lambda p: float(-(p["w"][0] - 2.0) ** 2)
  soup, chosen, best = soups.greedy_soup(_stacked(values), own, score)
  assert chosen[0] == 1  # best own score (2.5)
  # Order by own score: 2.5, 1.5 (soup mean 2.0, better), 1.0 (mean 1.667, worse), 3.5
  # (mean 2.5, worse), 0.0 (worse).
  assert chosen == [1, 4]
  assert best == pytest.approx(0.0)
  np.testing.assert_allclose(soup["w"], 2.0)


def test_greedy_soup_never_lowers_the_score():
  rng = np.random.default_rng(0)
  for _ in range(20):
    values = rng.normal(size=6)
    score = lambda p: float(-abs(p["w"][0] - 0.3))
    own = [score({"w": [v]}) for v in values]
    _, chosen, best = soups.greedy_soup(_stacked(values), own, score)
    # Replaying the additions, each step must strictly improve on the one before.
    history = [score({"w": [np.mean(values[chosen[:i + 1]])]}) for i in range(len(chosen))]
    assert all(b > a for a, b in zip(history, history[1:]))
    assert best == pytest.approx(history[-1], abs=1e-6) and best >= max(own) - 1e-7


def test_greedy_soup_rejects_ties():
  values = [1.0, 1.0]
  _, chosen, _ = soups.greedy_soup(_stacked(values), [0.0, 0.0], lambda p: 0.0)
  assert chosen == [0]


def test_greedy_ensemble_selects_by_the_mean_prediction():
  labels = np.array([0, 1, 0, 1])
  one_hot = lambda preds: np.eye(2)[np.asarray(preds)] * 0.8 + 0.1
  # Each member is wrong at one place (accuracy 0.75). Ties of the mean go to class 0.
  probs = np.stack([one_hot([1, 1, 0, 1]), one_hot([0, 0, 0, 1]), one_hot([0, 1, 1, 1])])
  chosen, accuracy = soups.greedy_ensemble(probs, labels)
  # 0 + 1 stays at 0.75 (not strictly higher: rejected); 0 + 2 is right everywhere.
  assert chosen == [0, 2] and accuracy == 1.0
  worse = np.stack([one_hot([0, 1, 0, 0]), one_hot([1, 0, 1, 0])])
  assert soups.greedy_ensemble(worse, labels) == ([0], 0.75)


def test_ame_with_sgd_one_over_i_is_the_uniform_soup_and_adam_moves_elsewhere():
  import optax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  stacked = {"w": jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32),
             "b": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)}
  ame = soups.ame_soup(stacked)
  uniform = soups.uniform_soup(stacked)
  for key in stacked:
    np.testing.assert_allclose(ame[key], uniform[key], rtol=1e-6, atol=1e-6)
  twice = soups.ame_soup(stacked, passes=2)  # every member seen equally often: still the mean
  np.testing.assert_allclose(twice["w"], uniform["w"], rtol=1e-5, atol=1e-6)
  adam = soups.ame_soup(stacked, optax.adam(0.1), passes=3)
  assert np.all(np.isfinite(adam["w"])) and not np.allclose(adam["w"], uniform["w"], atol=1e-3)
