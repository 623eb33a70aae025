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
- Learned soup (Wortsman et al.'s ``learned_bylayer``): per parameter tensor l a softmax over
  members ``w_l = softmax(a_l)`` (``a_l`` initialised equal, so the start is the uniform soup) mixes
  ``sum_k w_lk theta_lk``, and a logit scale ``beta`` multiplies the output; ``a`` and ``beta`` are
  trained by AdamW (no weight decay) on held-out data to minimise cross-entropy.

All are pure functions over stacked parameters or predictions; the caller supplies how a candidate
soup is scored, which for BatchNorm nets includes recomputing its statistics on training data.
"""
from __future__ import annotations

import dataclasses

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
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


def mix(stacked_params: Any, mixing_logits: Any) -> Any:
  """``sum_k softmax(a_l)_k theta_lk`` per tensor l; ``mixing_logits`` has one ``[K]`` vector per
  leaf of ``stacked_params`` (equal logits give the uniform soup)."""
  return jax.tree.map(lambda p, a: jnp.tensordot(jax.nn.softmax(a), p, axes=1),
                      stacked_params, mixing_logits)


@dataclasses.dataclass(frozen=True)
class LearnedSoup:
  """How the learned soup is fitted: ``epochs`` shuffled passes in batches of ``batch_size``
  (the last one partial), AdamW at ``lr`` without weight decay, mixing weights per tensor
  (``by_layer``) or one per member, the shuffle seeded by ``seed``."""
  epochs: int = 5
  batch_size: int = 256
  lr: float = 0.05
  by_layer: bool = True
  seed: int = 0


def learned_soup(stacked_params: Any, logits_fn: Callable[[Any, Any], Any], images, labels,
                 fit: LearnedSoup = LearnedSoup()) -> tuple[Any, dict[str, Any]]:
  """Learned soup: mixing weights (per tensor with ``fit.by_layer``, else one per member) and a
  logit scale trained on ``(images, labels)`` (the model-soups recipe; see ``LearnedSoup``).

  ``logits_fn(params, images)`` gives a soup's logits; for BatchNorm nets the caller decides how it
  normalises (``evaluation.make_soups`` uses each batch's own statistics). Returns the mixed
  parameters and ``{'weights': [K] mean mixing weight per member, 'scale': beta}``.
  """
  epochs, batch_size, lr, by_layer, seed = fit.epochs, fit.batch_size, fit.lr, fit.by_layer, fit.seed
  k = members.num_members(stacked_params)
  if by_layer:
    logits0 = jax.tree.map(lambda _: jnp.zeros(k), stacked_params)
  else:
    logits0 = jnp.zeros(k)
  expand = (lambda a: a) if by_layer else (
      lambda a: jax.tree.map(lambda _: a, stacked_params))
  state = {"mixing": logits0, "scale": jnp.ones(())}
  tx = optax.adamw(lr, weight_decay=0.0)
  opt_state = tx.init(state)

  def loss_fn(st, x, y):
    logits = st["scale"] * logits_fn(mix(stacked_params, expand(st["mixing"])), x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(st, opt, x, y):
    grads = jax.grad(loss_fn)(st, x, y)
    updates, opt = tx.update(grads, opt, st)
    return optax.apply_updates(st, updates), opt

  images, labels = np.asarray(images), np.asarray(labels)
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(images))
    for start in range(0, len(images), batch_size):
      idx = order[start:start + batch_size]
      state, opt_state = step(state, opt_state, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
  mixing = expand(state["mixing"])
  weights = np.mean([np.asarray(jax.nn.softmax(a)) for a in jax.tree.leaves(mixing)], axis=0)
  return mix(stacked_params, mixing), {"weights": weights.tolist(),
                                       "scale": float(state["scale"])}
