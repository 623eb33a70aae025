"""Exact resume: periodic and on-signal checkpoints of a plan's progress.

A run's progress is the phase it is in, the steps done in that phase, the members of the finished
phases, the current phase's stacked state (params, BatchNorm statistics, optimizer state) and the
logged history. Data order, augmentation and learning rate are pure functions of (seed, phase,
member, step), so restoring this much continues the run exactly where it stopped: on CPU a resumed
run ends with the same bits as an uninterrupted one.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a kill
mid-save never leaves a checkpoint that looks finished. A finished but unreadable latest checkpoint
(truncated files) is reported and the previous one is used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import threading
from typing import Any

import jax

from starsse_jax import checkpoint, running_mean


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

def _flatten(tree) -> dict[str, Any]:
  return {} if tree is None else {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


class RunCheckpointer:
  """Saves and restores ``Progress`` in ``directory``, checked against a one-member template."""

  def __init__(self, directory: str, template: Any, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.template = template  # one member's state: gives the tree structure, shapes and dtypes
    self._keep = keep

  def _manager(self):
    return checkpoint.manager(self.directory, max_to_keep=self._keep)

  def save(self, progress: Progress) -> None:
    state = {"ensemble": _flatten(progress.ensemble), "states": _flatten(progress.states)}
    meta = {"phase": progress.phase, "step": progress.step, "histories": progress.histories,
            "ensemble_ids": list(progress.ensemble_ids), "alive": progress.alive,
            "averaging": progress.states is not None and "average" in progress.states}
    step_id = progress.phase * 10 ** 9 + progress.step  # orders checkpoints across phases
    with self._manager() as mngr:
      if step_id in mngr.all_steps():  # re-saving the same point (e.g. signal at a boundary)
        return
      checkpoint.save_step(mngr, step_id, state, meta)

  def _unflatten(self, leaves: dict[str, Any], what: str, averaging: bool = False):
    if not leaves:
      return None
    template = self.template
    if averaging:  # a weight-averaging phase also carries its running average
      template = {**template, "average": running_mean.start(template["params"])}
    tree = jax.tree.unflatten(jax.tree.structure(template), [leaves[k] for k in sorted(leaves)])
    checkpoint.check_matches(template, tree, what, leading_axes=1)
    return tree

  def restore(self) -> Progress | None:
    """The latest readable progress, or None when the directory holds none."""
    if not os.path.isdir(self.directory):
      return None
    checkpoint.remove_partial_saves(self.directory)
    with self._manager() as mngr:
      steps = sorted(mngr.all_steps(), reverse=True)
      for i, step_id in enumerate(steps):
        try:
          restored = checkpoint.restore_step(mngr, step_id)
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
          more = "the previous one" if i + 1 < len(steps) else "none (starting over)"
          logging.error("Checkpoint %s/%d is unreadable (%s: %s); using %s.", self.directory,
                        step_id, type(e).__name__, str(e)[:200], more)
          continue
        meta, state = restored["metadata"], restored["state"]
        where = f"checkpoint {self.directory}/{step_id}"
        progress = Progress(meta["phase"], meta["step"],
                            self._unflatten(state["ensemble"], where + " (ensemble)"),
                            self._unflatten(state["states"], where + " (phase state)",
                                            meta.get("averaging", False)),
                            meta["histories"], meta.get("ensemble_ids", []), meta.get("alive"))
        logging.info("Resuming from %s: phase %d, step %d.", where, progress.phase, progress.step)
        return progress
    return None
