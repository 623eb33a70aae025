"""Predictions of stacked members and BatchNorm statistics recomputed on data."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax import data as data_lib, members, models


@functools.lru_cache(maxsize=None)
def _predict_fn(model, strategy: str, image_size: int, stochastic: bool, resize: str):

  @jax.jit
  def predict(variables, images, mean, std, keys):
    x = data_lib.normalize(data_lib.eval_view(images, image_size, resize), mean, std)

    def one(v, key):
      logits = models.apply(model, v, x, train=False, stochastic=stochastic or None,
                            key=key if stochastic else None)
      return jax.nn.softmax(logits.astype(jnp.float32))

    return members.member_map(one, strategy)(variables, keys)

  return predict


def _batches(images: np.ndarray, batch_size: int):
  """Fixed-size batches (the last one padded by repeating its first image) and their lengths."""
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - n, axis=0)])
    yield batch, n


def predict(model, variables: dict[str, Any], images: np.ndarray, mean, std,
            batch_size: int = 500, strategy: str = "auto", image_size: int = 0,
            passes: int = 0, seed: int = 0, resize: str = "bilinear") -> np.ndarray:
  """Softmax probabilities ``[K, N, C]`` of stacked ``{'params', 'batch_stats'}`` in eval mode.

  ``passes`` = S > 0: MC-dropout, S stochastic passes per member with dropout on (BatchNorm still
  uses running statistics), ``[K * S, N, C]`` member-major (pass s of member k at ``k * S + s``);
  the masks are seeded by ``seed``, pass, batch and member.
  """
  stochastic = passes > 0
  fn = _predict_fn(model, strategy, image_size, stochastic, resize)
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  k = members.num_members(variables)
  batch_size = min(batch_size, len(images))
  root = jax.random.key(seed)
  out = []
  for s in range(max(passes, 1)):
    pass_out = []
    for start, (b, n) in enumerate(_batches(images, batch_size)):
      keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(root, s), start), k)
      pass_out.append(np.asarray(fn(variables, jnp.asarray(b), mean, std, keys))[:, :n])
    out.append(np.concatenate(pass_out, axis=1))
  probs = np.stack(out, axis=1)  # [K, S, N, C]
  return probs.reshape((-1,) + probs.shape[2:])


@functools.lru_cache(maxsize=None)
def _batch_stats_fn(model, strategy: str, image_size: int, resize: str):
  stochastic = False if models.accepts_stochastic(model) else None
  if hasattr(model, "bn_momentum"):
    # Momentum 0 makes the module's "running" statistics exactly this batch's statistics.
    fresh = model.clone(bn_momentum=0.0)

    def batch_statistics(p, bs, x):
      _, upd = models.apply(fresh, {"params": p, "batch_stats": bs}, x, train=True,
                            stochastic=stochastic, mutable=["batch_stats"])
      return upd["batch_stats"]
  else:
    # Any module whose BatchNorm updates ``new = m * old + (1 - m) * batch`` with an unknown m:
    # two passes from old = 0 and old = 1 give m and (1 - m) * batch, hence the batch's own.
    def batch_statistics(p, bs, x):
      run = lambda fill: models.apply(
          model, {"params": p, "batch_stats": jax.tree.map(fill, bs)}, x, train=True,
          stochastic=stochastic, mutable=["batch_stats"])[1]["batch_stats"]
      zero, one = run(jnp.zeros_like), run(jnp.ones_like)
      return jax.tree.map(lambda a, b: a / (1.0 - (b - a)), zero, one)

  @jax.jit
  def stats(params, batch_stats, images, mean, std):
    x = data_lib.normalize(data_lib.eval_view(images, image_size, resize), mean, std)

    def one(p, bs):
      return batch_statistics(p, bs, x)

    return members.member_map(one, strategy)(params, batch_stats)

  return stats


def recompute_batch_stats(model, params: Any, template_stats: Any, images: np.ndarray, mean, std,
                          batch_size: int = 256, strategy: str = "auto",
                          image_size: int = 0, resize: str = "bilinear") -> Any:
  """BatchNorm statistics of stacked ``params`` over ``images`` (no augmentation).

  As SWA's ``bn_update``: the running mean and variance are reset and replaced by the cumulative
  average of per-batch statistics in train mode over one pass of the data. Needed for every weight
  average (soups, SWA): the average of members' running statistics does not describe the
  averaged network. ``template_stats`` gives the structure (values are ignored). A model
  without BatchNorm (empty ``template_stats``) has nothing to recompute: returned as is.
  """
  if not jax.tree.leaves(template_stats):
    return template_stats
  fn = _batch_stats_fn(model, strategy, image_size, resize)
  batch_size = min(batch_size, len(images))
  num_batches = len(images) // batch_size  # full batches only: equal weights
  total = None
  for b in range(num_batches):
    batch = jnp.asarray(images[b * batch_size:(b + 1) * batch_size])
    stats = fn(params, template_stats, batch, mean, std)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  return jax.tree.map(lambda s: s / num_batches, total)
