"""The train step: every member of a phase advanced by one jitted call.

A phase's state is a dict of stacked pytrees ``{'params', 'batch_stats', 'opt_state'}`` (and
``'average'`` for SWA's running mean) whose leaves carry a leading member axis. One member's step
reads top to bottom: its key, the augmented batch (``augment``), the loss and its gradient
(``losses``), the optimizer update at the member's learning rate, the metrics. The member axis is
mapped by ``members.member_map``; on a mesh, ``shard_map`` splits members and batches over
devices. Each method is only a plan (``methods``); this step serves them all, pre-training
included.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from starsse_jax import augment, inference, losses, members, models, running_mean, sharding

# Folded into a step's key to give dropout a stream of its own (augment's streams are its own).
DROPOUT_STREAM = 0x5EED


@dataclasses.dataclass(frozen=True)
class Trainer:
  """What the step needs that is fixed for a whole run."""
  network: inference.Network  # the module, its input normalisation, resolution, member strategy
  tx: optax.GradientTransformation
  augment: augment.Augment = augment.Augment()
  label_smoothing: float = 0.0
  seed: int = 0
  num_devices: int = 1  # devices to spread a phase over (0 = all visible)
  placement: str = "auto"  # training images on the 'device', or each batch sent from the 'host'
  head: str = models.HEAD  # the classifier's name in ``params`` (replaced when fine-tuning)

  @property
  def model(self):
    return self.network.model

  @property
  def strategy(self) -> str:
    return self.network.strategy

  @property
  def image_size(self) -> int:
    return self.network.image_size

  def init_variables(self, seed: int, image_shape) -> dict[str, Any]:
    if self.image_size:
      image_shape = (self.image_size, self.image_size, image_shape[-1])
    variables = _init_fn(self.model)(jax.random.key(seed),
                                     jnp.zeros((1,) + tuple(image_shape), jnp.float32))
    # A model without BatchNorm keeps an empty ``batch_stats``: one state layout for every model.
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  @functools.cached_property
  def _steps(self) -> dict:
    return {}

  def step_for(self, num_members: int, batch_size: int):
    """(jitted step, mesh or None) for a phase of ``num_members`` members. On a mesh over several
    processes fed per process (``per_process_batches``), the step reads a batch split over the
    devices instead of indexing a training set every device holds."""
    mesh = sharding.choose_mesh(num_members, batch_size, self.num_devices)
    split_batch = per_process_batches(self.placement, mesh)
    key = None if mesh is None else (mesh.devices.shape, tuple(d.id for d in mesh.devices.flat),
                                     split_batch)
    if key not in self._steps:
      self._steps[key] = make_step(self, mesh, split_batch)
    return self._steps[key], mesh


def per_process_batches(placement: str, mesh) -> bool:
  """Whether each process gathers only its own devices' rows of a batch: on a mesh spanning
  several processes, unless the training images are placed on every device."""
  return mesh is not None and jax.process_count() > 1 and placement != "device"


@functools.lru_cache(maxsize=None)
def _init_fn(model):
  return jax.jit(lambda key, x: models.init(model, key, x))


def _with_learning_rate(opt_state, lr):
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def make_step(tr: Trainer, mesh=None, split_batch: bool = False):
  """The step over stacked members; with a mesh, members and batches are split over devices.

  On a mesh each device runs the same member function on its members and its slice of their
  batch; gradients, losses and BatchNorm statistics are averaged over the data axis, and the
  crops and flips of the whole batch are drawn on every device and sliced, so the result matches
  the single-device step up to floating-point summation order. With ``split_batch`` the images
  and labels are the step's batch split over the devices, each device holding the rows of its
  members and data shard, and the indices point into that block.
  """
  base_key = jax.random.key(tr.seed)
  data_axis = None if mesh is None else sharding.DATA
  data_shards = 1 if mesh is None else mesh.shape[sharding.DATA]
  model = models.with_bn_axis(tr.model, data_axis)
  average = (lambda t: t) if mesh is None else (lambda t: jax.lax.pmean(t, data_axis))
  dropout = models.is_random_in_training(tr.model)
  net = tr.network

  def member_step(state, member_seed, idx, lr, images, labels, step, collect):
    rng = jax.random.fold_in(jax.random.fold_in(base_key, member_seed), step)
    x, lam = augment.train_batch(tr.augment, rng, images[idx], net.mean, net.std, data_axis,
                                 data_shards)
    y = labels[idx]
    key = None
    if dropout:  # a stream of its own; on a mesh, each data shard draws for its slice
      key = jax.random.fold_in(rng, DROPOUT_STREAM)
      key = key if mesh is None else jax.random.fold_in(key, jax.lax.axis_index(data_axis))

    def loss_fn(params):
      logits, updates = models.apply(model, {"params": params, "batch_stats": state["batch_stats"]},
                                     x, train=True, key=key, mutable=["batch_stats"])
      loss = losses.cross_entropy(logits, y, tr.label_smoothing, lam)
      return loss, (updates.get("batch_stats", {}), logits)

    (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    # Parameters are replicated over the data axis, so shard_map's autodiff already sums their
    # gradients over it (the transpose of the implicit broadcast): divide to get the mean.
    grads = jax.tree.map(lambda g: g / data_shards, grads)
    opt_state = _with_learning_rate(state["opt_state"], lr)
    updates, opt_state = tr.tx.update(grads, opt_state, state["params"])
    new_state = {"params": optax.apply_updates(state["params"], updates),
                 "batch_stats": batch_stats, "opt_state": opt_state}
    if "average" in state:
      new_state["average"] = running_mean.add(state["average"], new_state["params"], collect)
    metrics = average({"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)})
    return new_state, metrics

  def step(states, member_seeds, images, labels, batch_idx, lrs, step_index, collect):
    """Advances every member by one step. ``batch_idx`` is ``[K, B]`` indices into the data;
    ``collect`` (0 or 1) adds the new weights to the running averages of averaging phases."""

    def one(state, member_seed, idx, lr):
      return member_step(state, member_seed, idx, lr, images, labels, step_index, collect)

    return members.member_map(one, tr.strategy)(states, member_seeds, batch_idx, lrs)

  if mesh is not None:
    m, d = sharding.MEMBERS, sharding.DATA
    pool = P((m, d)) if split_batch else P()
    step = jax.shard_map(step, mesh=mesh,
                         in_specs=(P(m), P(m), pool, pool, P(m, d), P(m), P(), P()),
                         out_specs=(P(m), P(m)))
  return jax.jit(step, donate_argnums=0)


def start_state(tr: Trainer, variables: dict[str, Any], averaging: bool = False) -> dict[str, Any]:
  """Stacked variables made a phase's state: a fresh optimizer state where none is carried, and
  SWA's running mean starting at the weights when ``averaging``."""
  state = dict(variables)
  if "opt_state" not in state:
    state["opt_state"] = jax.vmap(tr.tx.init)(state["params"])
  if averaging:
    state["average"] = jax.vmap(running_mean.start)(state["params"])
  return state

