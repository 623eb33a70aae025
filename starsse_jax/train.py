"""The phase runner and the plan executor: a plan's phases run in order, each a plain loop over
steps of ``step.make_step`` with periodic actions beside it (log and metric writer, save, the
processes' agreement to stop, dropping diverged members, the progress bar).

State of a phase is a dict of stacked pytrees ``{'params', 'batch_stats', 'opt_state'}`` whose
leaves carry a leading member axis. Each method is only a plan (``methods``); everything here is
shared by all of them, pre-training included.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import PartitionSpec as P

from starsse_jax import (checkpoint, data as data_lib, inference, members, memory, methods,
                         report, resume, schedules, sharding, step as step_lib)
from starsse_jax.sources import disk
from starsse_jax.step import Trainer

State = dict[str, Any]


class NonFiniteLossError(FloatingPointError):
  """Training produced NaN or inf; the message names the member, phase and step."""


@dataclasses.dataclass(frozen=True)
class Actions:
  """What a phase loop does beside stepping. Every ``log_every`` steps: a log line (or the
  progress bar's description), a row of the history and the metric ``writer``; the NaN check (a
  ``NonFiniteLossError``, or with ``drop_diverged`` the diverged members dropped) and, across
  processes, the agreement to ``stop``. Every ``save_every`` steps (and on a stop request): a
  progress checkpoint."""
  log_every: int = 50
  writer: Any = None
  save_every: int = 0
  stop: resume.StopRequest | None = None
  drop_diverged: bool = False


@dataclasses.dataclass(frozen=True)
class PhaseLoop:
  """Where a phase's loop starts, what it continues and what it does beside stepping: ensemble
  ids of its members (default 0..K-1), the step count of earlier phases (the history's step
  numbers), the step to resume at, the history so far, ``save(states, steps_done, history,
  member_ids)`` for progress checkpoints, ``collect[t]`` (1 adds the weights after step t to the
  members' running averages, for states with an ``average`` entry, see ``running_mean``), and
  the periodic ``actions``."""
  member_ids: Any = None
  step_offset: int = 0
  start_step: int = 0
  history: list | None = None
  save: Callable | None = None
  collect: np.ndarray | None = None
  actions: Actions = Actions()


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
    self.split_batch = step_lib.per_process_batches(placement, mesh)
    on_disk = isinstance(split.images, disk.DiskImages)
    if on_disk and placement == "device":
      raise ValueError(f"data.placement='device', but the {split.images.nbytes / 2**20:.0f} MB of "
                       "training images are read from disk (above data.host_memory_mb); use "
                       "placement 'auto' or 'host', or raise data.host_memory_mb.")
    self.on_device = not self.split_batch and not on_disk and (placement == "device" or (
        placement == "auto" and memory.fits_on_device(split.images.nbytes)))
    if self.on_device:
      self.images, self.labels = self._put(split.images), self._put(split.labels)

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
              lr_table: np.ndarray, batch_size: int, name: str,
              loop: PhaseLoop = PhaseLoop()) -> PhaseResult:
  """Trains the stacked members of one phase from ``loop.start_step`` to ``len(lr_table)`` steps.

  Member k (ensemble id ``loop.member_ids[k]``) reads its own data order (seeded by
  ``member_seeds[k]``) and its own column of ``lr_table``. A NaN or inf loss raises
  ``NonFiniteLossError`` naming the member, or, with ``actions.drop_diverged``, drops the
  diverged members and continues with the rest (all diverged still raises). ``loop.save`` is
  called every ``actions.save_every`` steps and when ``actions.stop.requested`` turns true, after
  which ``resume.Interrupted`` is raised; a state is saved only once its losses are finite.
  """
  act = loop.actions
  num_steps = len(lr_table)
  n = len(split)
  if batch_size > n:
    raise ValueError(f"Phase {name!r}: batch size {batch_size} is larger than the {n} training "
                     "images; lower the batch size.")
  live = _Live(trainer, split, batch_size, states, member_seeds, lr_table, loop)
  live.describe(name)
  history = list(loop.history or [])
  start = time.perf_counter()
  batch = live.batch(loop.start_step) if loop.start_step < num_steps else None
  first_step = 0.0
  # A bar with ETA on a terminal; the log lines below otherwise. An exception leaves the bar to
  # tqdm's own clean-up.
  progress = report.Progress(name, num_steps, loop.start_step)
  for t in range(loop.start_step, num_steps):
    metrics = live.running.step(*batch, live.lr_table[t], t, live.collect[t])
    if t == loop.start_step:  # one synchronisation, to time compilation apart from the steps
      jax.block_until_ready(metrics)
      first_step = time.perf_counter() - start
    # The step runs asynchronously: the next batch is gathered (and sent) meanwhile.
    batch = live.batch(t + 1) if t + 1 < num_steps else None
    done = t + 1
    logging_now = done % act.log_every == 0 or done == num_steps
    stopping = _stop_agreed(act, logging_now)
    saving = loop.save is not None and done < num_steps and (
        stopping or (act.save_every and done % act.save_every == 0))
    if logging_now or saving:
      metrics = sharding.to_host(metrics)
      keep = live.drop_diverged(metrics, name, done) if act.drop_diverged else None
      if keep is not None:
        metrics = {key: v[keep] for key, v in metrics.items()}
        batch = live.batch(t + 1) if t + 1 < num_steps else None
      _check_finite(metrics["loss"], name, t, live.ids)
    progress.update(done)
    if logging_now:
      row = _log(name, done, num_steps, metrics, live, progress,
                 (done - loop.start_step, time.perf_counter() - start), loop.step_offset)
      history.append(row)
      if act.writer is not None:
        act.writer.write_scalars(row["step"], {key: v for key, v in row.items()
                                               if key not in ("step", "phase")})
    if saving:
      if stopping and act.stop is not None:
        act.stop.announce()
      loop.save(live.running.states(), done, history, live.ids.tolist())
      if stopping:
        raise resume.Interrupted(f"Stopped in phase {name!r} after step {done}/{num_steps}; "
                                 "progress saved. Rerun the same command to resume.")
  progress.close()
  states = live.running.states()
  if live.running.mesh is not None:  # gather, so that phases on different meshes can be joined
    states = sharding.gather(states)
  jax.block_until_ready(states)
  return PhaseResult(name, states, live.lr_table, history, live.ids.tolist(),
                     time.perf_counter() - start, first_step)


def _stop_agreed(act: Actions, at_log_point: bool) -> bool:
  """Whether to stop after this step; all processes stop at the same step (agreed at log
  points)."""
  stopping = act.stop is not None and act.stop.requested
  if jax.process_count() > 1:
    stopping = at_log_point and sharding.any_process(stopping)
  return stopping


def _log(name, done, num_steps, metrics, live, progress, timing, step_offset) -> dict[str, Any]:
  """The progress line (or bar description) and the history row of step ``done``."""
  steps_run, elapsed = timing
  eta = elapsed / steps_run * (num_steps - done)
  progress.describe(loss=_fmt(metrics["loss"]), acc=_fmt(metrics["accuracy"]))
  logging.log(logging.DEBUG if progress.active else logging.INFO,
              "%s step %d/%d  loss %s  acc %s  lr %s  %.1f steps/s  ETA %s", name, done,
              num_steps, _fmt(metrics["loss"]), _fmt(metrics["accuracy"]),
              _fmt(live.lr_table[done - 1]), steps_run / elapsed, _fmt_time(eta))
  return {"step": step_offset + done, "phase": name,
          **{f"{key}/member_{live.ids[m]}": float(v[m])
             for key, v in metrics.items() for m in range(len(live.ids))}}


class _Live:
  """A phase's members as the loop advances them: the stepping groups, the feed, their ids,
  seeds, learning-rate columns and data orders; ``drop_diverged`` regroups the survivors."""

  def __init__(self, trainer, split, batch_size, states, member_seeds, lr_table, loop):
    self.trainer, self.split, self.batch_size = trainer, split, batch_size
    k = lr_table.shape[1]
    self.ids = np.arange(k) if loop.member_ids is None else np.asarray(loop.member_ids)
    self.member_seeds = np.asarray(member_seeds)
    self.lr_table = lr_table
    self.collect = (np.zeros(len(lr_table), np.float32) if loop.collect is None
                    else np.asarray(loop.collect, np.float32))
    self.running = _Running(trainer, states, self.member_seeds, batch_size)
    self.feed = _Feed(split, trainer.placement, self.running.mesh)
    self.orders = {}

  def describe(self, name: str) -> None:
    k = len(self.ids)
    if self.running.mesh is not None:
      logging.info("%s: %d member(s) on a %s mesh", name, k, dict(self.running.mesh.shape))
    elif len(self.running.groups) > 1:
      logging.info("%s: %d members in %d groups of %d, one compiled step for all", name, k,
                   len(self.running.groups), self.running.size)
    if not self.feed.on_device:
      logging.info("%s: %.2f GB of images stay on the host; each step's batch is sent.", name,
                   self.split.images.nbytes / 1e9)

  def batch(self, t: int):
    """What step ``t`` reads: each member's own seeded order of its epoch, as [K, B] indices
    (padded as the member groups are), fed as ``_Feed`` places them."""
    n = len(self.split)
    epoch, i = divmod(t, n // self.batch_size)
    if epoch not in self.orders:
      self.orders.clear()
      self.orders[epoch] = np.stack([data_order(int(s), n, self.batch_size, epoch)
                                     for s in self.member_seeds], axis=1)
    return self.feed(self.running.pad(self.orders[epoch][i]))

  def drop_diverged(self, metrics, name: str, done: int):
    """Drops the members whose loss is not finite when some (not all) diverged; keeps the group
    size, so nothing is recompiled. Returns the positions kept, or None when none was dropped."""
    finite = np.isfinite(np.asarray(metrics["loss"]))
    if not 0 < finite.sum() < len(finite):
      return None
    keep = np.flatnonzero(finite)
    logging.warning("Dropping diverged member(s) %s of phase %r at step %d (loss %s); "
                    "continuing with members %s.", self.ids[~finite].tolist(), name, done,
                    _fmt(metrics["loss"]), self.ids[keep].tolist())
    states = self.running.states()
    if self.running.mesh is not None:
      states = sharding.gather(states)
    states, self.ids, self.member_seeds = (members.take(states, keep), self.ids[keep],
                                           self.member_seeds[keep])
    self.lr_table = self.lr_table[:, keep]
    old_mesh = self.running.mesh
    self.running = _Running(self.trainer, states, self.member_seeds, self.batch_size,
                            size=self.running.size if old_mesh is None else None)
    if self.running.mesh != old_mesh:  # the data moves only if the mesh changed
      self.feed = _Feed(self.split, self.trainer.placement, self.running.mesh)
    self.orders.clear()
    return keep


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
  return step_lib.start_state(trainer, members.stack(variables), phase.average is not None)


def finish_average(trainer: Trainer, states: State, split: data_lib.Split,
                   batch_size: int) -> State:
  """Members of an averaging phase become their running averages, with BatchNorm statistics
  recomputed on the training images (the averaged weights' own statistics; SWA's ``bn_update``)."""
  params = states["average"]["params"]
  stats = inference.recompute_batch_stats(trainer.network, params, states["batch_stats"],
                                          split.images, batch_size)
  return {"params": params, "batch_stats": stats, "opt_state": states["opt_state"]}


def _continued_optimizers(plan: list[methods.Phase], after: int) -> set[int]:
  """Members whose optimizer state a phase after phase ``after`` continues (FGE's cycles)."""
  return {s.index for phase in plan[after + 1:] if not phase.reset_optimizer
          for s in phase.starts if s.kind == "member"}


def run_plan(trainer: Trainer, plan: list[methods.Phase], split: data_lib.Split,
             batch_size: int, pretrained: dict[str, Any] | None = None,
             actions: Actions = Actions(),
             checkpointer: resume.RunCheckpointer | None = None) -> tuple[State, list[PhaseResult]]:
  """Runs the phases in order; returns the ensemble (members in plan order) and each phase.

  With a ``checkpointer`` the progress is saved every ``actions.save_every`` steps, at every
  phase boundary and on a stop request (in the background, waited for before returning or
  raising), and a rerun continues from the latest saved point. The returned ensemble holds each
  member's ``params`` and ``batch_stats``.
  """
  # A pending save is finished (or its failure raised) before leaving.
  with checkpointer or contextlib.nullcontext():
    progress = checkpointer.restore() if checkpointer else None
    return _run_plan(trainer, plan, split, batch_size, pretrained, actions, checkpointer,
                     progress)


def _run_plan(trainer, plan, split, batch_size, pretrained, actions, checkpointer, progress):
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

      loop = PhaseLoop(member_ids=alive, step_offset=step_offset, start_step=start_step,
                       history=histories[phase_index], save=save if checkpointer else None,
                       collect=None if phase.average is None else
                       phase.average.table(phase.num_steps), actions=actions)
      result = run_phase(trainer, states, seeds[cols], split, lr_table[:, cols], batch_size,
                         phase.name, loop)
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
      stop = actions.stop
      if sharding.any_process(stop is not None and stop.requested):
        if stop is not None:
          stop.announce()
        raise resume.Interrupted(f"Stopped after phase {phase.name!r}; progress saved. Rerun the "
                                 "same command to resume.")
    step_offset += phase.num_steps
    first += phase.num_members
  return ensemble, results
