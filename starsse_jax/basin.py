"""Loss-landscape analysis: does a member stay in the pre-train basin?

Pure functions over parameter pytrees, plus one function that evaluates a straight line between
two networks with BatchNorm statistics recomputed at every point.

- Linear interpolation: ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``.
- Barrier height (Frankle et al. 2020; the StarSSE paper's Fig. 2): the largest excess of the
  loss along the line over the straight line between its end values,
  ``max_alpha L(theta(alpha)) - ((1 - alpha) L(theta_a) + alpha L(theta_b))``; 0 when the path is
  convex or flat.
- "Left the basin": barrier height above ``threshold`` nats of test NLL. The default 0.1 is about
  half the NLL of the default run's fine-tuned model (0.19): a bump that large means the two
  networks are separated by a region that is clearly worse than either.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax import inference, members, metrics

DEFAULT_THRESHOLD = 0.1


def interpolate(a: Any, b: Any, alpha: float) -> Any:
  """``(1 - alpha) a + alpha b`` leaf by leaf."""
  return jax.tree.map(lambda x, y: (1.0 - alpha) * x + alpha * y, a, b)


def l2_distance(a: Any, b: Any) -> float:
  """Euclidean distance between two pytrees of equal structure (all leaves as one vector)."""
  squares = jax.tree.map(lambda x, y: jnp.sum((jnp.asarray(x, jnp.float32) - y) ** 2), a, b)
  return float(jnp.sqrt(sum(jax.tree.leaves(squares))))


def barrier_height(alphas, losses) -> float:
  """Largest excess of ``losses`` over the chord between the first and last point (>= 0)."""
  alphas, losses = np.asarray(alphas, np.float64), np.asarray(losses, np.float64)
  chord = (1 - alphas) * losses[0] + alphas * losses[-1]
  return float(max(0.0, np.max(losses - chord)))


def left_basin(barrier: float, threshold: float = DEFAULT_THRESHOLD) -> bool:
  return barrier > threshold


@dataclasses.dataclass(frozen=True)
class CurveSettings:
  """How a straight line is evaluated: ``num_points`` evenly spaced points, BatchNorm statistics
  recomputed in batches of ``bn_batch_size``, predictions in batches of ``eval_batch_size``, and
  the barrier ``threshold`` (nats of test NLL) of "left the basin"."""
  num_points: int = 11
  bn_batch_size: int = 100
  eval_batch_size: int = 500
  threshold: float = DEFAULT_THRESHOLD


def interpolation_curve(net: inference.Network, a_params: Any, b_params: Any,
                        batch_stats_template: Any, train_images: np.ndarray, test,
                        settings: CurveSettings = CurveSettings()) -> dict[str, Any]:
  """Test NLL and accuracy at ``settings.num_points`` evenly spaced points from ``a`` to ``b``
  (``test`` = (images, labels)).

  Every point gets its own BatchNorm statistics, recomputed on ``train_images``; all points are
  evaluated together as the members of one stacked pytree.
  """
  num_points = settings.num_points
  if num_points < 2:
    raise ValueError(f"An interpolation curve needs at least 2 points, got {num_points}.")
  test_images, test_labels = test
  alphas = np.linspace(0.0, 1.0, num_points)
  stacked = members.stack([interpolate(a_params, b_params, float(x)) for x in alphas])
  template = members.broadcast(batch_stats_template, num_points)
  stats = inference.recompute_batch_stats(net, stacked, template, train_images,
                                          settings.bn_batch_size)
  probs = inference.predict(net, {"params": stacked, "batch_stats": stats}, test_images,
                            settings.eval_batch_size)
  nll = [metrics.nll(p, test_labels) for p in probs]
  acc = [metrics.accuracy(p, test_labels) for p in probs]
  barrier = barrier_height(alphas, nll)
  return {"alpha": alphas.tolist(), "nll": nll, "accuracy": acc, "barrier": barrier,
          "accuracy_drop": float(max(0.0, min(acc[0], acc[-1]) - min(acc))),
          "left_basin": left_basin(barrier, settings.threshold),
          "l2_distance": l2_distance(a_params, b_params)}
