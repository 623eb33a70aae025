"""One train step for all members, one phase runner, one plan executor.

State of a phase is a dict of stacked pytrees ``{'params', 'batch_stats', 'opt_state'}`` whose
leaves carry a leading member axis. Each method is only a plan (``methods.py``); everything here is
shared by all of them, pre-training included.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import PartitionSpec as P

from starsse_jax import (checkpoint, data as data_lib, inference, members, methods, models,
                         optimizers, rand_augment, regularizers, report, resume, running_mean,
                         schedules, sharding)
from starsse_jax.sources import disk

State = dict[str, Any]


class NonFiniteLossError(FloatingPointError):
  """Training produced NaN or inf; the message names the member, phase and step."""


def make_optimizer(weight_decay: float, momentum: float) -> optax.GradientTransformation:
  """SGD with momentum and L2 weight decay, as PyTorch's ``SGD(weight_decay=...)`` (see
  ``optimizers`` for AdamW and clipping)."""
  return optimizers.make(optimizers.OptimizerConfig("sgd", weight_decay, momentum))


def _with_learning_rate(opt_state, lr):
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


@dataclasses.dataclass(frozen=True)
class Trainer:
  """What the step needs that is fixed for a whole run."""
  model: Any
  tx: optax.GradientTransformation
  mean: np.ndarray
  std: np.ndarray
  crop_padding: int
  flip: bool
  strategy: str
  seed: int
  num_devices: int = 1  # devices to spread a phase over (0 = all visible)
  image_size: int = 0  # 0 = native resolution; else random-resized-crop to this size
  resize: str = "bilinear"  # how crops are resized to image_size: 'bilinear' or 'bicubic'
  placement: str = "auto"  # training images on the 'device', or each batch sent from the 'host'
  head: str = models.HEAD  # the classifier's name in ``params`` (replaced when fine-tuning)
  regularizers: regularizers.Regularizers = regularizers.Regularizers()

  def init_variables(self, seed: int, image_shape) -> dict[str, Any]:
    if self.image_size:
      image_shape = (self.image_size, self.image_size, image_shape[-1])
    return _init(self.model, seed, tuple(image_shape))

  @functools.cached_property
  def _steps(self) -> dict:
    return {}

  def step_for(self, num_members: int, batch_size: int):
    """(jitted step, mesh or None) for a phase of ``num_members`` members. On a mesh over several
    processes fed per process (``_Feed``), the step reads a batch split over the devices instead
    of indexing a training set every device holds."""
    mesh = sharding.choose_mesh(num_members, batch_size, self.num_devices)
    split_batch = _Feed.per_process(self.placement, mesh)
    key = None if mesh is None else (mesh.devices.shape, tuple(d.id for d in mesh.devices.flat),
                                     split_batch)
    if key not in self._steps:
      self._steps[key] = _make_step(self, mesh, split_batch)
    return self._steps[key], mesh


@functools.lru_cache(maxsize=None)
def _init_fn(model):
  return jax.jit(lambda key, x: models.init(model, key, x))


def _init(model, seed, image_shape):
  variables = _init_fn(model)(jax.random.key(seed), jnp.zeros((1,) + image_shape, jnp.float32))
  # A model without BatchNorm keeps an empty ``batch_stats``: one state layout for every model.
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _make_step(tr: Trainer, mesh, split_batch: bool = False):
  """The step over stacked members; with a mesh, members and batches are split over devices.

  On a mesh each device runs the same member function on its members and its slice of their
  batch; gradients, losses and BatchNorm statistics are averaged over the data axis, and the
  augmentation of the whole batch is drawn on every device and sliced, so the result matches the
  single-device step up to floating-point summation order. With ``split_batch`` the images and
  labels are the step's batch split over the devices, each device holding the rows of its
  members and data shard, and the indices point into that block.
  """
  base_key = jax.random.key(tr.seed)
  data_axis = None if mesh is None else sharding.DATA
  data_shards = 1 if mesh is None else mesh.shape[sharding.DATA]
  model = models.with_bn_axis(tr.model, data_axis)
  average = (lambda t: t) if mesh is None else (lambda t: jax.lax.pmean(t, data_axis))
  dropout = models.is_random_in_training(tr.model)

  def member_step(state, member_seed, idx, lr, images, labels, step, collect):
    rng = jax.random.fold_in(jax.random.fold_in(base_key, member_seed), step)

    def shard_stream(stream):
      """A stream of its own (augmentation draws from ``rng`` exactly as without it); on a mesh
      each data shard draws for its own slice of the batch."""
      key = jax.random.fold_in(rng, stream)
      return key if mesh is None else jax.random.fold_in(key, jax.lax.axis_index(data_axis))

    key = shard_stream(_DROPOUT_STREAM) if dropout else None
    local = idx.shape[0]
    aug = data_lib.augment_params(rng, local * data_shards, tr.crop_padding, tr.flip,
                                  images.shape[1:3], tr.image_size)
    if mesh is not None:
      start = jax.lax.axis_index(data_axis) * local
      aug = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, local), aug)
    x = data_lib.apply_augment(images[idx], aug, tr.crop_padding, tr.image_size, tr.resize)
    reg = tr.regularizers
    if reg.rand_augment is not None:  # per image, on pixel values
      x = rand_augment.rand_augment(shard_stream(_RANDAUG_STREAM), x, reg.rand_augment,
                                    np.asarray(tr.mean) * 255.0)
    x = data_lib.normalize(x, tr.mean, tr.std)
    y = labels[idx]
    if reg.erase_prob > 0:  # each image its own box
      x = regularizers.random_erase(shard_stream(_ERASE_STREAM), x, reg.erase_prob)
    lam = None
    if reg.mixing:  # one lam per member and step (the same on every shard; pairs within a shard)
      x, lam = regularizers.mix(jax.random.fold_in(rng, _MIX_STREAM), x, reg)

    def loss_fn(params):
      logits, updates = models.apply(model, {"params": params, "batch_stats": state["batch_stats"]},
                                     x, train=True, key=key, mutable=["batch_stats"])
      if reg.soft:
        targets = regularizers.smooth_targets(y, logits.shape[-1], reg.label_smoothing)
        if lam is not None:
          targets = regularizers.mix_targets(targets, lam)
        loss = regularizers.soft_cross_entropy(logits, targets)
      else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
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


# Folded into a step's key to give dropout, mixing and erasing streams of their own.
_DROPOUT_STREAM = 0x5EED
_MIX_STREAM = 0x313C
_ERASE_STREAM = 0xE2A5
_RANDAUG_STREAM = 0x2A6D


# ------------------------------------------------------------------------------- phases


@dataclasses.dataclass
class PhaseResult:
  name: str
  states: State
  lr_table: np.ndarray  # [steps, members]
  history: list[dict[str, Any]]
  member_ids: list[int]  # ensemble ids of the members that finished the phase
  seconds: float = 0.0  # wall time of the steps run here (0 for a phase finished before a resume)
  first_step_seconds: float = 0.0  # of which the first step (compilation, mostly)


def data_order(seed: int, num_examples: int, batch_size: int, epoch: int) -> np.ndarray:
  """One member's batches for one epoch, ``[steps_per_epoch, batch]`` (remainder dropped)."""
  steps = num_examples // batch_size
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return perm[:steps * batch_size].reshape(steps, batch_size)


def _place(mesh, states, seeds):
  """Puts a phase's member arrays on its mesh, split over the members axis."""
  if mesh is None:
    return states, seeds
  if jax.process_count() > 1:  # every process holds the same whole arrays: each places its part
    states, seeds = sharding.to_host((states, seeds))
  return jax.device_put((states, seeds), sharding.member_sharding(mesh))


class _Running:
  """A phase's members as the step advances them: one stack on a mesh, or, without one, equal
  groups of ``size`` members (``members.group_size``; the last padded with copies of its last
  member), each advanced by a call of the same compiled step. Dropping a member keeps ``size``:
  the survivors are regrouped and padded, so nothing is recompiled."""

  def __init__(self, trainer: Trainer, states: State, member_seeds, batch_size: int,
               size: int | None = None):
    self.k = members.num_members(states)
    self.step_fn, self.mesh = trainer.step_for(self.k, batch_size)
    seeds = jnp.asarray(member_seeds, jnp.int32)
    if self.mesh is not None:
      self.size = self.k
      states, seeds = _place(self.mesh, states, seeds)
      self.groups, self.seeds = [states], [seeds]
    else:  # without a mesh the step is one jitted function for every member count
      self.size = size or members.group_size(self.k, trainer.strategy)
      self.groups = members.split_groups(states, self.size)
      self.seeds = members.split_groups(seeds, self.size)

  @property
  def padded(self) -> bool:
    return len(self.groups) * self.size != self.k

  def pad(self, rows: np.ndarray) -> np.ndarray:
    """Per-member rows (batch indices, learning rates) padded as the groups are."""
    return members.pad_members(rows, len(self.groups) * self.size)

  def step(self, images, labels, idx, lrs, t, collect):
    """Advances every member one step; returns the metrics of the real members, ``[k]``."""
    if len(self.groups) == 1 and not self.padded:
      self.groups[0], out = self.step_fn(self.groups[0], self.seeds[0], images, labels, idx, lrs,
                                         t, collect)
      return out
    lrs, outs = self.pad(lrs), []
    for g in range(len(self.groups)):
      rows = slice(g * self.size, (g + 1) * self.size)
      self.groups[g], out = self.step_fn(self.groups[g], self.seeds[g], images, labels,
                                         idx[rows], lrs[rows], t, collect)
      outs.append(out)
    return jax.tree.map(lambda *m: jnp.concatenate(m)[:self.k], *outs)

  def states(self) -> State:
    return self.groups[0] if self.mesh is not None else members.join_groups(self.groups, self.k)


class _Feed:
  """What the step reads each step, in one of three ways (the step computes the same function):

  - the whole training set on the device(s) and the step's indices into it;
  - for data that does not fit there, the step's images gathered on the host and sent, the
    indices then being positions in that batch;
  - on a mesh spanning several processes (unless ``data.placement='device'``), each process
    gathers only the rows its own devices train on: the block of device (m, d) holds the batches
    of mesh row m's members, data shard d's part of each, and the global batch is assembled from
    the processes' blocks (``jax.make_array_from_single_device_arrays``: a process's blocks need
    not be contiguous in the batch). Processes whose devices hold the same data shard read the
    same rows; the order itself is a pure function of the seeds, the same in every process.
  """

  def __init__(self, split: data_lib.Split, placement: str, mesh):
    self.split, self.mesh = split, mesh
    self.split_batch = self.per_process(placement, mesh)
    on_disk = isinstance(split.images, disk.DiskImages)
    if on_disk and placement == "device":
      raise ValueError(f"data.placement='device', but the {split.images.nbytes / 2**20:.0f} MB of "
                       "training images are read from disk (above data.host_memory_mb); use "
                       "placement 'auto' or 'host', or raise data.host_memory_mb.")
    self.on_device = not self.split_batch and not on_disk and (placement == "device" or (
        placement == "auto" and data_lib.fits_on_device(split.images.nbytes)))
    if self.on_device:
      self.images, self.labels = self._put(split.images), self._put(split.labels)

  @staticmethod
  def per_process(placement: str, mesh) -> bool:
    return mesh is not None and jax.process_count() > 1 and placement != "device"

  def _put(self, x):
    return jnp.asarray(x) if self.mesh is None else jax.device_put(
        x, sharding.replicated(self.mesh))

  def __call__(self, idx: np.ndarray):
    """(images, labels, batch indices) for indices ``idx`` [K, B] into the split."""
    if self.on_device:
      return self.images, self.labels, jnp.asarray(idx)
    if self.split_batch:
      return self._blocks(idx)
    flat = idx.reshape(-1)
    local = np.arange(flat.size, dtype=np.int32).reshape(idx.shape)
    return self._put(self.split.images[flat]), self._put(self.split.labels[flat]), local

  def _blocks(self, idx: np.ndarray):
    k, b = idx.shape
    rows_m, cols_d = self.mesh.devices.shape
    km, bd = k // rows_m, b // cols_d
    spec = jax.sharding.NamedSharding(self.mesh, P((sharding.MEMBERS, sharding.DATA)))
    images, labels = [], []
    where = spec.addressable_devices_indices_map((k * b,))
    for device in self.mesh.local_devices:
      (m,), (d,) = np.nonzero(self.mesh.devices == device)
      assert where[device][0].start == (m * cols_d + d) * km * bd  # the block order assumed
      rows = idx[m * km:(m + 1) * km, d * bd:(d + 1) * bd].reshape(-1)
      images.append(jax.device_put(self.split.images[rows], device))
      labels.append(jax.device_put(self.split.labels[rows], device))
    shape = (k * b,) + self.split.images.shape[1:]
    local = np.tile(np.arange(km * bd, dtype=np.int32).reshape(km, bd), (rows_m, cols_d))
    return (jax.make_array_from_single_device_arrays(shape, spec, images),
            jax.make_array_from_single_device_arrays((k * b,), spec, labels), local)


def run_phase(trainer: Trainer, states: State, member_seeds: np.ndarray, split: data_lib.Split,
              lr_table: np.ndarray, batch_size: int, name: str, member_ids=None,
              log_every: int = 50, writer=None, step_offset: int = 0, start_step: int = 0,
              history: list | None = None, save=None, save_every: int = 0,
              stop=None, drop_diverged: bool = False,
              collect: np.ndarray | None = None) -> PhaseResult:
  """Trains the stacked members of one phase from ``start_step`` to ``len(lr_table)`` steps.

  Member k (ensemble id ``member_ids[k]``) reads its own data order (seeded by
  ``member_seeds[k]``) and its own column of ``lr_table``. Logs loss, accuracy and an ETA every
  ``log_every`` steps. A NaN or inf loss raises ``NonFiniteLossError`` naming the member, or, with
  ``drop_diverged``, drops the diverged members and continues with the rest (all diverged still
  raises). ``save(states, steps_done, history, member_ids)`` is called every ``save_every`` steps
  and when ``stop.requested`` turns true, after which ``resume.Interrupted`` is raised; a state is
  saved only once its losses are finite. ``collect[t]`` true adds the weights after step t to
  the members' running averages (states with an ``average`` entry, see ``running_mean``).
  """
  num_steps, k = lr_table.shape
  collect = np.zeros(num_steps, np.float32) if collect is None else np.asarray(collect, np.float32)
  ids = np.arange(k) if member_ids is None else np.asarray(member_ids)
  member_seeds = np.asarray(member_seeds)
  n = len(split)
  if batch_size > n:
    raise ValueError(f"Phase {name!r}: batch size {batch_size} is larger than the {n} training "
                     "images; lower the batch size.")
  steps_per_epoch = n // batch_size
  running = _Running(trainer, states, member_seeds, batch_size)
  feed = _Feed(split, trainer.placement, running.mesh)
  if running.mesh is not None:
    logging.info("%s: %d member(s) on a %s mesh", name, k, dict(running.mesh.shape))
  elif len(running.groups) > 1:
    logging.info("%s: %d members in %d groups of %d, one compiled step for all", name, k,
                 len(running.groups), running.size)
  if not feed.on_device:
    logging.info("%s: %.2f GB of images stay on the host; each step's batch is sent.", name,
                 split.images.nbytes / 1e9)
  history = list(history or [])
  orders = {}

  def batch_indices(t):
    """[K, B] indices of step ``t``: each member's own seeded order of its epoch (padded as the
    member groups are)."""
    epoch, i = divmod(t, steps_per_epoch)
    if epoch not in orders:
      orders.clear()
      orders[epoch] = np.stack([data_order(int(s), n, batch_size, epoch) for s in member_seeds],
                               axis=1)
    return running.pad(orders[epoch][i])

  start = time.perf_counter()
  batch = feed(batch_indices(start_step)) if start_step < num_steps else None
  first_step = 0.0
  # A bar with ETA on a terminal; the log lines below otherwise. An exception leaves the bar to
  # tqdm's own clean-up.
  progress = report.Progress(name, num_steps, start_step)
  for t in range(start_step, num_steps):
    metrics = running.step(*batch, lr_table[t], t, collect[t])
    if t == start_step:  # one synchronisation, to time compilation apart from the steps
      jax.block_until_ready(metrics)
      first_step = time.perf_counter() - start
    # The step runs asynchronously: the next batch is gathered (and sent) meanwhile.
    batch = feed(batch_indices(t + 1)) if t + 1 < num_steps else None
    done = t + 1
    stopping = stop is not None and stop.requested
    if jax.process_count() > 1:  # all processes stop at the same step: checked at log points
      stopping = (done % log_every == 0 or done == num_steps) and sharding.any_process(stopping)
    saving = save is not None and done < num_steps and (
        stopping or (save_every and done % save_every == 0))
    if done % log_every == 0 or done == num_steps or saving:
      metrics = sharding.to_host(metrics)
      finite = np.isfinite(np.asarray(metrics["loss"]))
      if drop_diverged and 0 < finite.sum() < len(finite):
        keep = np.flatnonzero(finite)
        logging.warning("Dropping diverged member(s) %s of phase %r at step %d (loss %s); "
                        "continuing with members %s.", ids[~finite].tolist(), name, done,
                        _fmt(metrics["loss"]), ids[keep].tolist())
        states = running.states()
        if running.mesh is not None:
          states = sharding.gather(states)
        states, ids, member_seeds = members.take(states, keep), ids[keep], member_seeds[keep]
        lr_table = lr_table[:, keep]
        metrics = {key: v[keep] for key, v in metrics.items()}
        k = len(keep)
        old_mesh = running.mesh
        running = _Running(trainer, states, member_seeds, batch_size,
                           size=running.size if old_mesh is None else None)
        if running.mesh != old_mesh:  # the data moves only if the mesh changed
          feed = _Feed(split, trainer.placement, running.mesh)
        orders.clear()
        batch = feed(batch_indices(t + 1)) if t + 1 < num_steps else None
      _check_finite(metrics["loss"], name, t, ids)
    progress.update(done)
    if done % log_every == 0 or done == num_steps:
      elapsed = time.perf_counter() - start
      eta = elapsed / (done - start_step) * (num_steps - done)
      progress.describe(loss=_fmt(metrics["loss"]), acc=_fmt(metrics["accuracy"]))
      logging.log(logging.DEBUG if progress.active else logging.INFO,
                  "%s step %d/%d  loss %s  acc %s  lr %s  %.1f steps/s  ETA %s", name, done,
                  num_steps, _fmt(metrics["loss"]), _fmt(metrics["accuracy"]),
                  _fmt(lr_table[t]), (done - start_step) / elapsed, _fmt_time(eta))
      row = {"step": step_offset + done, "phase": name,
             **{f"{key}/member_{ids[m]}": float(v[m])
                for key, v in metrics.items() for m in range(k)}}
      history.append(row)
      if writer is not None:
        writer.write_scalars(row["step"], {key: v for key, v in row.items()
                                           if key not in ("step", "phase")})
    if saving:
      if stopping and stop is not None:
        stop.announce()
      save(running.states(), done, history, ids.tolist())
      if stopping:
        raise resume.Interrupted(f"Stopped in phase {name!r} after step {done}/{num_steps}; "
                                 "progress saved. Rerun the same command to resume.")
  progress.close()
  states = running.states()
  if running.mesh is not None:  # gather, so that phases on different meshes can be joined
    states = sharding.gather(states)
  jax.block_until_ready(states)
  return PhaseResult(name, states, lr_table, history, ids.tolist(), time.perf_counter() - start,
                     first_step)


def _check_finite(losses, phase: str, step: int, member_ids) -> None:
  bad = np.flatnonzero(~np.isfinite(np.asarray(losses)))
  if bad.size:
    raise NonFiniteLossError(
        f"Loss is {losses[bad[0]]} for member {int(member_ids[bad[0]])} in phase {phase!r} at "
        f"step {step + 1}. The learning rate is likely too high: lower lr (or lr_ratio) and "
        "rerun, or set drop_diverged_members=True to continue without diverged members.")


def _fmt(values) -> str:
  return "[" + " ".join(f"{float(v):.4g}" for v in np.atleast_1d(values)) + "]"


def _fmt_time(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s"


# ------------------------------------------------------------------------------- plans


def start_states(trainer: Trainer, phase: methods.Phase, ensemble: State | None,
                 pretrained: dict[str, Any] | None, image_shape, member_ids,
                 ensemble_ids=None, carried: dict[int, Any] | None = None) -> State:
  """The stacked starting state of each member of ``phase`` (see ``methods.Start``).

  ``ensemble_ids[p]`` is the member id at position p of ``ensemble`` (default: p); they differ
  once diverged members have been dropped. A phase that keeps the optimizer state of the member
  it starts from reads it from ``carried[id]`` (finished members keep only their variables), or
  from ``ensemble`` itself where that still has an ``opt_state``.
  """
  if ensemble is not None and ensemble_ids is None:
    ensemble_ids = list(range(members.num_members(ensemble)))
  variables = []
  for start, member_id in zip(phase.starts, member_ids):
    if start.kind == "init":
      variables.append(trainer.init_variables(trainer.seed * 1000 + start.index, image_shape))
    elif start.kind == "pretrained":
      fresh = trainer.init_variables(trainer.seed * 1000 + 500 + member_id, image_shape)
      variables.append(checkpoint.with_new_head(members.take(pretrained, start.index), fresh,
                                                trainer.head))
    elif start.kind == "member":
      if ensemble_ids is None or start.index not in ensemble_ids:
        raise ValueError(f"Phase {phase.name!r} starts from member {start.index}, which diverged "
                         "and was dropped; lower the learning rate.")
      source = members.take(ensemble, ensemble_ids.index(start.index))
      variables.append(resume.member_variables(source))
      if not phase.reset_optimizer:
        opt_state = (carried or {}).get(start.index, source.get("opt_state"))
        if opt_state is None:
          raise ValueError(f"Phase {phase.name!r} continues member {start.index}'s optimizer "
                           "state, which was not kept.")
        variables[-1]["opt_state"] = opt_state
    else:
      raise ValueError(f"Unknown start kind {start.kind!r}.")
  stacked = members.stack(variables)
  if "opt_state" not in stacked:
    stacked["opt_state"] = jax.vmap(trainer.tx.init)(stacked["params"])
  if phase.average is not None:
    stacked["average"] = jax.vmap(running_mean.start)(stacked["params"])
  return stacked


def finish_average(trainer: Trainer, states: State, split: data_lib.Split,
                   batch_size: int) -> State:
  """Members of an averaging phase become their running averages, with BatchNorm statistics
  recomputed on the training images (the averaged weights' own statistics; SWA's ``bn_update``)."""
  params = states["average"]["params"]
  stats = inference.recompute_batch_stats(trainer.model, params, states["batch_stats"],
                                          split.images, trainer.mean, trainer.std, batch_size,
                                          trainer.strategy, trainer.image_size, trainer.resize)
  return {"params": params, "batch_stats": stats, "opt_state": states["opt_state"]}


def _continued_optimizers(plan: list[methods.Phase], after: int) -> set[int]:
  """Members whose optimizer state a phase after phase ``after`` continues (FGE's cycles)."""
  return {s.index for phase in plan[after + 1:] if not phase.reset_optimizer
          for s in phase.starts if s.kind == "member"}


def run_plan(trainer: Trainer, plan: list[methods.Phase], split: data_lib.Split,
             batch_size: int, pretrained: dict[str, Any] | None = None, log_every: int = 50,
             writer=None, checkpointer: resume.RunCheckpointer | None = None, save_every: int = 0,
             stop: resume.StopRequest | None = None,
             drop_diverged: bool = False) -> tuple[State, list[PhaseResult]]:
  """Runs the phases in order; returns the ensemble (members in plan order) and each phase.

  With a ``checkpointer`` the progress is saved every ``save_every`` steps, at every phase
  boundary and on a stop request (in the background, waited for before returning or raising),
  and a rerun continues from the latest saved point. The returned ensemble holds each member's
  ``params`` and ``batch_stats``.
  """
  # A pending save is finished (or its failure raised) before leaving.
  with checkpointer or contextlib.nullcontext():
    return _run_plan(trainer, plan, split, batch_size, pretrained, log_every, writer,
                     checkpointer, save_every, stop, drop_diverged)


def _run_plan(trainer, plan, split, batch_size, pretrained, log_every, writer, checkpointer,
              save_every, stop, drop_diverged):
  progress = checkpointer.restore() if checkpointer else None
  if progress is None:
    progress = resume.Progress(0, 0, None, None, [])
  ensemble, results, step_offset, first = progress.ensemble, [], 0, 0
  histories, ensemble_ids = progress.histories, list(progress.ensemble_ids)
  carried = dict(progress.carried)
  for phase_index, phase in enumerate(plan):
    ids = list(range(first, first + phase.num_members))
    lr_table = schedules.table(phase.schedules, phase.num_steps)
    # Data order and augmentation are seeded by (run seed, phase, member) only: a member's
    # batches do not depend on how many other members share its step.
    seeds = np.asarray([trainer.seed * 1_000_003 + phase_index * 1009 + i for i in ids])
    if phase_index < progress.phase:  # finished before the restart
      alive = [i for i in ids if i in ensemble_ids]
      results.append(PhaseResult(phase.name, None, lr_table[:, [ids.index(i) for i in alive]],
                                 histories[phase_index], alive))
    else:
      if any(s.kind == "pretrained" for s in phase.starts) and pretrained is None:
        raise ValueError(f"Phase {phase.name!r} starts from a pre-trained checkpoint; none given.")
      resuming = phase_index == progress.phase and progress.states is not None
      alive = progress.alive if resuming else ids
      cols = [ids.index(i) for i in alive]
      states = progress.states if resuming else start_states(
          trainer, phase, ensemble, pretrained, split.images.shape[1:], ids, ensemble_ids,
          carried)
      start_step = progress.step if resuming else 0
      if len(histories) <= phase_index:
        histories.append([])
      logging.info("Phase %d/%d %r: members %s, %d steps%s", phase_index + 1, len(plan),
                   phase.name, alive, phase.num_steps,
                   f" (resuming at step {start_step})" if start_step else "")

      def save(states, done, history, alive, phase_index=phase_index):
        histories[phase_index] = history
        checkpointer.save(resume.Progress(phase_index, done, ensemble, states, histories,
                                          ensemble_ids, alive, carried), block=False)

      result = run_phase(trainer, states, seeds[cols], split, lr_table[:, cols], batch_size,
                         phase.name, member_ids=alive, log_every=log_every, writer=writer,
                         step_offset=step_offset, start_step=start_step,
                         history=histories[phase_index], save=save if checkpointer else None,
                         save_every=save_every, stop=stop, drop_diverged=drop_diverged,
                         collect=None if phase.average is None else
                         phase.average.table(phase.num_steps))
      if phase.average is not None:
        result.states = finish_average(trainer, result.states, split, batch_size)
      histories[phase_index] = result.history
      results.append(result)
      ensemble = members.concat([ensemble, resume.member_variables(result.states)])
      ensemble_ids += result.member_ids
      continued = _continued_optimizers(plan, phase_index)
      carried = {i: s for i, s in carried.items() if i in continued}
      carried.update({i: members.take(result.states["opt_state"], p)
                      for p, i in enumerate(result.member_ids) if i in continued})
      if checkpointer:
        checkpointer.save(resume.Progress(phase_index + 1, 0, ensemble, None, histories,
                                          ensemble_ids, None, carried), block=False)
      if sharding.any_process(stop is not None and stop.requested):
        if stop is not None:
          stop.announce()
        raise resume.Interrupted(f"Stopped after phase {phase.name!r}; progress saved. Rerun the "
                                 "same command to resume.")
    step_offset += phase.num_steps
    first += phase.num_members
  return ensemble, results
