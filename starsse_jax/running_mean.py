"""The running mean of a member's weights (SWA's average), as a pytree carried in the train state.

``{'params': a, 'count': n}``; collecting ``w`` gives ``a + (w - a) / (n + 1)``: the mean of every
weight collected so far in O(1) memory, as SWA's ``moving_average``. The structure is defined here
once, for the train step and for restoring a checkpoint taken mid-average.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def start(params: Any) -> dict[str, Any]:
  """An empty running mean: nothing collected, the weights as placeholder (copied, because the
  train step donates its state and the two must not share buffers)."""
  return {"params": jax.tree.map(jnp.array, params), "count": jnp.zeros((), jnp.float32)}


def add(mean: dict[str, Any], params: Any, collect) -> dict[str, Any]:
  """``mean`` after collecting ``params`` when ``collect`` is 1 (unchanged when 0)."""
  count = mean["count"] + collect
  weight = jnp.where(collect > 0, 1.0 / jnp.maximum(count, 1.0), 0.0)
  return {"params": jax.tree.map(lambda a, w: a + weight * (w - a), mean["params"], params),
          "count": count}
