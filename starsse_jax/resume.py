"""Exact resume: periodic and on-signal checkpoints of a plan's progress.

A run's progress is the phase it is in, the steps done in that phase, the members of the finished
phases, the current phase's stacked state (params, BatchNorm statistics, optimizer state) and the
logged history. Data order, augmentation and learning rate are pure functions of (seed, phase,
member, step), so restoring this much continues the run exactly where it stopped: on CPU a resumed
run ends with the same bits as an uninterrupted one.

What is written is bounded by what still changes. A finished member is written once, weights and
BatchNorm statistics only, in ``DIRECTORY/members/ID``; a progress checkpoint (``DIRECTORY/STEP``)
holds the members still training with their optimizer state, the optimizer states of finished
members that a later phase continues from (FGE carries momentum across cycles), the step and the
history. The bytes of a progress save therefore do not grow with the number of finished members
(``experiments/bench_checkpoints.py``). Progress saves run asynchronously: the arrays are copied
to the host, then written by orbax's background thread while training goes on.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a kill
mid-save never leaves a checkpoint that looks finished. A finished but unreadable latest checkpoint
(truncated files, or a member file it needs) is reported and the previous one is used.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
from typing import Any

import jax

from starsse_jax import checkpoint, members, running_mean


class Interrupted(Exception):
  """A stop was requested (SIGTERM/SIGINT); the progress was saved first."""


class StopRequest:
  """Turns SIGTERM and SIGINT into a flag that the training loop checks after every step.

  The current step finishes, the loop saves and raises ``Interrupted``. A second signal while a
  save is pending is ignored rather than killing the save. Inside ``immediate(...)`` (work that
  saves nothing and is redone by a rerun, such as evaluation) a signal raises ``Interrupted`` at
  once instead of waiting for a training step that may be minutes away.

  The handler only sets flags (or raises): it never writes a log line, since a signal that lands
  while the main thread is writing to the same stream would make that write fail.
  """

  def __init__(self):
    self.requested = False
    self.signal_name = ""
    self._previous = {}
    self._immediate = None

  def _handler(self, signum, _frame):
    first = not self.requested
    self.requested, self.signal_name = True, signal.Signals(signum).name
    if self._immediate is not None and first:
      raise Interrupted(f"Received {self.signal_name} while {self._immediate}; the training "
                        "progress was saved before. Rerun the same command to resume.")

  def announce(self) -> None:
    """Logs the request (from the loop that acts on it, not from the signal handler)."""
    logging.warning("Received %s: saving the progress, then exiting.",
                    self.signal_name or "a stop request")

  @contextlib.contextmanager
  def immediate(self, what: str):
    """Within it, a stop (or one already requested) raises ``Interrupted`` at once."""
    if self.requested:
      raise Interrupted(f"Stopped before {what}; the training progress was saved. Rerun the "
                        "same command to resume.")
    self._immediate = what
    try:
      yield self
    finally:
      self._immediate = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def fingerprint(config_dict: dict[str, Any], ignore=("log_every_steps", "checkpoint_every_steps",
                                                     "eval", "execution",
                                                     "drop_diverged_members")) -> str:
  """A short hash of the settings that determine training (not logging, evaluation or layout)."""
  relevant = {k: v for k, v in config_dict.items() if k not in ignore}
  text = json.dumps(relevant, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass
class Progress:
  phase: int  # index of the phase in progress (== len(plan) when all are done)
  step: int  # steps done in that phase
  ensemble: Any  # stacked states of the finished phases' members, or None
  states: Any  # stacked states of the phase in progress, or None at a phase boundary
  histories: list[list[dict[str, Any]]]  # one list per phase started
  ensemble_ids: list[int] = dataclasses.field(default_factory=list)  # ids of ``ensemble``'s members
  alive: list[int] | None = None  # ids of ``states``' members
  # Optimizer states of finished members that a later phase continues from, by member id.
  carried: dict[int, Any] = dataclasses.field(default_factory=dict)


def _flatten(tree) -> dict[str, Any]:
  return {} if tree is None else {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def member_variables(state) -> dict[str, Any]:
  """What a finished member keeps: its weights and BatchNorm statistics."""
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


class RunCheckpointer:
  """Saves and restores ``Progress`` in ``directory``, checked against a one-member template.

  Use it as a context manager, or call ``wait()`` before relying on the last save: progress saves
  with ``block=False`` return once the arrays are on the host, and a failure of the write (a full
  disk) is raised by the next ``save``, ``wait`` or ``close``.
  """

  def __init__(self, directory: str, template: Any, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.template = template  # one member's state: gives the tree structure, shapes and dtypes
    self._keep = keep
    self._mngr = None
    self._written: set[int] = set()  # finished members on disk, as this run knows them
    self._pool = None  # one thread: background saves, written in the order they were made
    self._pending = None

  def _manager(self):
    if self._mngr is None:
      self._mngr = checkpoint.manager(self.directory, keep=self._keep)
    return self._mngr

  def member_directory(self, member_id: int) -> str:
    return os.path.join(self.directory, "members", f"{member_id:05d}")

  def _write_members(self, host_members, ids: list[int]) -> None:
    """Writes finished members (host arrays, stacked in the order of ``ids``), each once: weights
    and statistics only, in a directory of its own."""
    for j, member_id in enumerate(ids):
      path = self.member_directory(member_id)
      # A member left by an attempt that stopped before its phase's progress save is replaced.
      shutil.rmtree(path, ignore_errors=True)
      one = jax.tree.map(lambda x, j=j: x[j], host_members)
      checkpoint.save(path, 0, one, {"member": member_id})
      self._written.add(member_id)

  def save(self, progress: Progress, block: bool = True) -> None:
    """Writes the finished members new since the last save, then the progress. With ``block``
    False both are written in the background, in that order (one process; with several, the
    collective save runs in the foreground and the progress is written asynchronously by orbax):
    the caller waits only for the arrays to reach the host (see the class docstring)."""
    self.wait()  # a failed background save is reported before anything new is written
    ids = list(progress.ensemble_ids) or list(range(_num_members(progress.ensemble)))
    new = [p for p, i in enumerate(ids) if i not in self._written]
    ensemble = progress.ensemble
    # The state comes to the host here: the training step donates (reuses) its buffers. The
    # finished members are no step's input, so they are selected and copied by the writer (only
    # the new ones: the others may be many, and large); selecting them compiles a gather per
    # leaf shape, which took most of a phase end's 1.2 s on a 2-core CPU when done here.
    carried = {str(i): _flatten(s) for i, s in progress.carried.items()}
    state = jax.device_get({"states": _flatten(progress.states), "carried": carried})
    # A snapshot: the loop goes on appending to the history lists while the writer runs (a
    # resumed run then logged rows twice, and its results differed from an uninterrupted one's).
    meta = json.loads(json.dumps({
        "phase": progress.phase, "step": progress.step, "histories": progress.histories,
        "ensemble_ids": ids, "alive": progress.alive, "carried": sorted(progress.carried),
        "averaging": progress.states is not None and "average" in progress.states}))
    step_id = progress.phase * 10 ** 9 + progress.step  # orders checkpoints across phases

    def write(background: bool) -> None:
      if new:
        host_members = jax.device_get(members.take(member_variables(ensemble), new))
        self._write_members(host_members, [ids[p] for p in new])
      mngr = self._manager()
      if step_id in mngr.all_steps():  # re-saving the same point (e.g. signal at a boundary)
        return
      checkpoint.save_step(mngr, step_id, state, meta, block=not background)

    if block or jax.process_count() > 1:
      with self._forget_manager_on_failure():
        write(background=not block)
    else:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
      self._pending = self._pool.submit(write, False)

  def wait(self) -> None:
    """Waits for a background save; raises ``checkpoint.DiskFullError`` if it ran out of space."""
    pending, self._pending = self._pending, None
    with self._forget_manager_on_failure():
      if pending is not None:
        pending.result()
      if self._mngr is not None:
        checkpoint.wait(self._mngr)

  @contextlib.contextmanager
  def _forget_manager_on_failure(self):
    try:
      yield
    except checkpoint.DiskFullError:
      self._mngr = None  # closed by the failure; the next use opens a new one
      raise

  def close(self) -> None:
    try:
      self.wait()
    finally:
      if self._pool is not None:
        self._pool.shutdown()
        self._pool = None
      if self._mngr is not None:
        self._mngr.close()
        self._mngr = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  @staticmethod
  def _unflatten(leaves: dict[str, Any], what: str, template, leading_axes: int = 1):
    if not leaves:
      return None
    tree = jax.tree.unflatten(jax.tree.structure(template), [leaves[k] for k in sorted(leaves)])
    checkpoint.check_matches(template, tree, what, leading_axes=leading_axes)
    return tree

  def _restore_members(self, ids: list[int]):
    """The stacked finished members ``ids`` from their files, or None for none."""
    if not ids:
      return None
    template = member_variables(self.template)
    loaded = []
    for i in ids:
      path = self.member_directory(i)
      variables, _ = checkpoint.restore(path)
      checkpoint.check_matches(template, variables, f"member {i} in {path}")
      loaded.append(variables)
    self._written.update(ids)
    return members.stack(loaded)

  def restore(self) -> Progress | None:
    """The latest readable progress, or None when the directory holds none."""
    if not os.path.isdir(self.directory):
      return None
    checkpoint.remove_partial_saves(self.directory)
    checkpoint.remove_partial_saves(os.path.join(self.directory, "members", "*"))
    mngr = self._manager()
    steps = sorted(mngr.all_steps(), reverse=True)
    for i, step_id in enumerate(steps):
      where = f"checkpoint {self.directory}/{step_id}"
      try:
        restored = checkpoint.restore_step(mngr, step_id)
        meta, state = restored["metadata"], restored["state"]
        ensemble = self._restore_members(meta.get("ensemble_ids", []))
      except checkpoint.CheckpointMismatchError:
        raise
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        more = "the previous one" if i + 1 < len(steps) else "none (starting over)"
        logging.error("%s is unreadable (%s: %s); using %s.", where.capitalize(),
                      type(e).__name__, str(e)[:200], more)
        continue
      averaging = meta.get("averaging", False)
      phase_template = self.template
      if averaging:  # a weight-averaging phase also carries its running average
        phase_template = {**self.template, "average": running_mean.start(self.template["params"])}
      carried = {int(k): self._unflatten(v, f"{where} (optimizer state of member {k})",
                                         self.template["opt_state"], leading_axes=0)
                 for k, v in state.get("carried", {}).items()}
      progress = Progress(meta["phase"], meta["step"], ensemble,
                          self._unflatten(state["states"], where + " (phase state)",
                                          phase_template),
                          meta["histories"], meta.get("ensemble_ids", []), meta.get("alive"),
                          carried)
      logging.info("Resuming from %s: phase %d, step %d.", where, progress.phase, progress.step)
      return progress
    return None


def _num_members(ensemble) -> int:
  return 0 if ensemble is None else members.num_members(ensemble)
