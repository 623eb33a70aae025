"""Model soups (Wortsman et al. 2022): averages of members' weights.

- Uniform soup: the mean of all members' parameters.
- Greedy soup: sort members by held-out accuracy; start from the best; add the next member only
  if the held-out accuracy of the running average is *strictly* higher with it.
- AME (Lee & Ngo, "On Defining Neural Averaging"): data-free averaging as optimisation. The
  pseudo-gradient ``w - theta_i`` (current average minus member i) is fed to an optax optimiser
  over passes through the members; plain SGD with step ``1 / i`` in one pass is the running mean,
  i.e. the uniform soup; Adam or Adagrad give other averages.
- Greedy ensemble (the output-space counterpart of the greedy soup): the same greedy selection,
  scoring the *mean of predictions* of the chosen members.

All are pure functions over stacked parameters or predictions; the caller supplies how a candidate
soup is scored, which for BatchNorm nets includes recomputing its statistics on training data.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax

from starsse_jax import members


def uniform_soup(stacked_params: Any) -> Any:
  """Mean over the member axis."""
  return members.mean(stacked_params)


def greedy_selection(member_scores: Sequence[float],
                     score: Callable[[list[int]], float]) -> tuple[list[int], float]:
  """Members in order of ``member_scores`` (best first); each is kept only if ``score`` of the
  chosen set with it is strictly higher. Returns the chosen indices (in the order added) and
  their score."""
  order = sorted(range(len(member_scores)), key=lambda k: -member_scores[k])
  chosen = [order[0]]
  best = score(chosen)
  for k in order[1:]:
    value = score(chosen + [k])
    if value > best:
      chosen, best = chosen + [k], value
  return chosen, best


def greedy_soup(stacked_params: Any, member_scores: Sequence[float],
                score: Callable[[Any], float]) -> tuple[Any, list[int], float]:
  """Greedy soup.

  Args:
    stacked_params: members' parameters with a leading member axis.
    member_scores: each member's own held-out score (higher is better); sets the order.
    score: held-out score of an (unstacked) parameter pytree.

  Returns:
    The soup's parameters, the member indices it averages (in the order added), and its score.
  """
  average = lambda ids: members.mean(members.take(stacked_params, ids))
  chosen, best = greedy_selection(member_scores, lambda ids: score(average(ids)))
  return average(chosen), chosen, best


def greedy_ensemble(member_probs, labels) -> tuple[list[int], float]:
  """Greedy selection of ensemble members by held-out accuracy of their mean prediction.

  ``member_probs`` ``[K, N, C]`` on held-out data; returns the chosen members and their accuracy.
  """
  probs = np.asarray(member_probs, np.float64)
  labels = np.asarray(labels)
  accuracy = lambda ids: float(np.mean(np.argmax(probs[ids].mean(0), -1) == labels))
  return greedy_selection([accuracy([k]) for k in range(len(probs))], accuracy)


def ame_soup(stacked_params: Any, optimizer: optax.GradientTransformation | None = None,
             passes: int = 1) -> Any:
  """AME: ``passes`` passes over the members, each step feeding ``w - theta_i`` to ``optimizer``
  (default: SGD with step ``1 / t`` at the t-th step, whose result is the uniform soup up to
  floating-point rounding). Starts from member 0."""
  k = members.num_members(stacked_params)
  if optimizer is None:
    optimizer = optax.sgd(lambda count: 1.0 / (count + 1))
  w = members.take(stacked_params, 0)
  state = optimizer.init(w)
  for _ in range(passes):
    for i in range(k):
      grad = jax.tree.map(lambda a, b: a - b, w, members.take(stacked_params, i))
      updates, state = optimizer.update(grad, state, w)
      w = optax.apply_updates(w, updates)
  return w
