"""Predictions of stacked members and BatchNorm statistics recomputed on data.

In a run of several processes both are split across them: each process computes a contiguous
share of the batches (the same number in every process, the last shares padded with a batch
whose result is dropped), and the results are gathered from all processes in batch order, so
every process ends with what one process computing everything would have: the same
probabilities, and the per-batch statistics summed in the same order.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax import augment, members, models


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
  """A model as every prediction, statistics recompute and training step calls it: the Flax
  module, the input normalisation (per-channel ``mean``/``std`` of pixel values in [0, 1]), the
  resolution it sees (``image_size`` 0 = the images' own; else centre-crop-and-resize with
  ``resize``) and how the member axis is mapped (``members.member_map``'s ``strategy``)."""
  model: Any
  mean: Any
  std: Any
  image_size: int = 0
  resize: str = "bilinear"
  strategy: str = "auto"

  def view(self, images):
    """The normalised evaluation view of uint8 images (on the device)."""
    return augment.normalize(augment.eval_view(images, self.image_size, self.resize), self.mean,
                             self.std)


@functools.lru_cache(maxsize=None)
def _predict_fn(model, strategy: str, image_size: int, stochastic: bool, resize: str):

  @jax.jit
  def predict(variables, images, mean, std, keys):
    x = augment.normalize(augment.eval_view(images, image_size, resize), mean, std)

    def one(v, key):
      logits = models.apply(model, v, x, train=False, stochastic=stochastic or None,
                            key=key if stochastic else None)
      return jax.nn.softmax(logits.astype(jnp.float32))

    return members.member_map(one, strategy)(variables, keys)

  return predict


def _batch(images: np.ndarray, index: int, batch_size: int) -> np.ndarray:
  """Batch ``index`` of fixed size (the last one padded by repeating its first image)."""
  batch = images[index * batch_size:(index + 1) * batch_size]
  if len(batch) < batch_size:
    batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - len(batch), axis=0)])
  return batch


def share(num_batches: int) -> list[int]:
  """This process's batches of ``num_batches``: a contiguous range, as long in every process;
  -1 marks a padding step (run on batch 0, its result dropped)."""
  count, rank = jax.process_count(), jax.process_index()
  per = -(-num_batches // count)
  return [b if b < num_batches else -1 for b in range(rank * per, (rank + 1) * per)]


def _gather_batches(local: np.ndarray, axis: int) -> np.ndarray:
  """Joins the processes' shares (``local``'s ``axis`` holds this process's batches) in batch
  order; a collective in a run of several processes."""
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  every = np.asarray(multihost_utils.process_allgather(local, tiled=False))  # [P, ...]
  return np.concatenate(list(every), axis=axis)


def predict(net: Network, variables: dict[str, Any], images: np.ndarray, batch_size: int = 500,
            passes: int = 0, seed: int = 0) -> np.ndarray:
  """Softmax probabilities ``[K, N, C]`` of stacked ``{'params', 'batch_stats'}`` in eval mode.

  ``passes`` = S > 0: MC-dropout, S stochastic passes per member with dropout on (BatchNorm still
  uses running statistics), ``[K * S, N, C]`` member-major (pass s of member k at ``k * S + s``);
  the masks are seeded by ``seed``, pass, batch and member.
  """
  stochastic = passes > 0
  fn = _predict_fn(net.model, net.strategy, net.image_size, stochastic, net.resize)
  mean, std = net.mean, net.std
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  k = members.num_members(variables)
  n = len(images)
  batch_size = min(batch_size, n)
  mine = share(-(-n // batch_size))
  root = jax.random.key(seed)
  out = []
  for s in range(max(passes, 1)):
    pass_out = []
    for b in mine:
      index = max(b, 0)  # a padding step repeats batch 0
      keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(root, s), index), k)
      images_b = jnp.asarray(_batch(images, index, batch_size))
      pass_out.append(np.asarray(fn(variables, images_b, mean, std, keys)))
    out.append(np.concatenate(pass_out, axis=1))
  probs = _gather_batches(np.stack(out, axis=1), axis=2)[:, :, :n]  # [K, S, N, C]
  return probs.reshape((-1,) + probs.shape[2:])


@functools.lru_cache(maxsize=None)
def _batch_stats_fn(model, strategy: str, image_size: int, resize: str):
  # BatchNorm in train mode, dropout off: the statistics of the network as it is evaluated
  # (see ``models.calling``).
  stochastic = False
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
    x = augment.normalize(augment.eval_view(images, image_size, resize), mean, std)

    def one(p, bs):
      return batch_statistics(p, bs, x)

    return members.member_map(one, strategy)(params, batch_stats)

  return stats


def recompute_batch_stats(net: Network, params: Any, template_stats: Any, images: np.ndarray,
                          batch_size: int = 256) -> Any:
  """BatchNorm statistics of stacked ``params`` over ``images`` (no augmentation).

  As SWA's ``bn_update``: the running mean and variance are reset and replaced by the cumulative
  average of per-batch statistics in train mode over one pass of the data. Needed for every weight
  average (soups, SWA): the average of members' running statistics does not describe the
  averaged network. ``template_stats`` gives the structure (values are ignored). A model
  without BatchNorm (empty ``template_stats``) has nothing to recompute: returned as is.
  """
  if not jax.tree.leaves(template_stats):
    return template_stats
  fn = _batch_stats_fn(net.model, net.strategy, net.image_size, net.resize)
  mean, std = net.mean, net.std
  batch_size = min(batch_size, len(images))
  num_batches = len(images) // batch_size  # full batches only: equal weights
  batch = lambda b: jnp.asarray(_batch(images, max(b, 0), batch_size))
  if jax.process_count() == 1:
    total = None
    for b in range(num_batches):
      stats = fn(params, template_stats, batch(b), mean, std)
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    return jax.tree.map(lambda s: s / num_batches, total)
  # Several processes: each one's per-batch statistics go to the host, are gathered from all, and
  # are summed in batch order, one add at a time, as the single process sums them.
  local = [fn(params, template_stats, batch(b), mean, std) for b in share(num_batches)]
  stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *local)

  def in_order(per_batch):
    every = _gather_batches(per_batch, 0)[:num_batches]
    acc = every[0]
    for x in every[1:]:
      acc = acc + x
    return jnp.asarray(acc / num_batches)

  return jax.tree.map(in_order, stacked)
