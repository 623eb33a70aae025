"""Model soups (Wortsman et al. 2022): averages of members' weights.

- Uniform soup: the mean of all members' parameters.
- Greedy soup: sort members by held-out accuracy; start from the best; add the next member only
  if the held-out accuracy of the running average is *strictly* higher with it.

Both are pure functions over stacked parameters; the caller supplies how a candidate soup is
scored, which for BatchNorm nets includes recomputing its statistics on training data.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from starsse_jax import members


def uniform_soup(stacked_params: Any) -> Any:
  """Mean over the member axis."""
  return members.mean(stacked_params)


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
  order = sorted(range(len(member_scores)), key=lambda k: -member_scores[k])
  chosen = [order[0]]
  best = score(members.take(stacked_params, order[0]))
  for k in order[1:]:
    candidate = members.mean(members.take(stacked_params, chosen + [k]))
    value = score(candidate)
    if value > best:
      chosen, best = chosen + [k], value
  return members.mean(members.take(stacked_params, chosen)), chosen, best
