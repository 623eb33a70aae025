"""Several processes, one program: JAX's multi-controller runtime for runs over several hosts.

Every process runs the same command; ``jax.distributed.initialize`` joins them, after which
``jax.devices()`` lists every process's devices and a phase's mesh spans them all (``sharding``).
Each process loads the same data and builds the same host arrays, so an array that spans
processes is made from identical process-local copies, and a result that spans them is gathered
back to every process (``sharding.to_host``) before anything is evaluated or saved. Evaluation
then runs in every process on its own first device; only process 0 writes files of record
(``is_writer``), while checkpoints are written by all processes together, as orbax requires.

On TPU VMs and under SLURM, JAX finds the coordinator, the number of processes and this process's
id by itself; elsewhere (several CPU or GPU machines, or several processes on one) they are given
in ``execution.coordinator_address``, ``num_processes`` and ``process_id``. On CPUs the
collectives between processes run over gloo.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

import jax


def settings(execution) -> dict:
  """Keyword arguments for ``jax.distributed.initialize`` (those left empty are auto-detected)."""
  kwargs = {}
  if execution.coordinator_address:
    kwargs["coordinator_address"] = execution.coordinator_address
  if execution.num_processes:
    kwargs["num_processes"] = int(execution.num_processes)
  if execution.process_id >= 0:
    kwargs["process_id"] = int(execution.process_id)
  return kwargs


def _failure_message(kwargs: dict, timeout_s: float) -> str:
  where = kwargs.get("coordinator_address", "the auto-detected coordinator")
  n = kwargs.get("num_processes", "the auto-detected number of")
  me = kwargs.get("process_id", "?")
  return (f"Process {me} could not join a run of {n} processes at {where} within {timeout_s:g} s "
          "(execution.initialization_timeout_s). Check that execution.coordinator_address is "
          "process 0's host and a free port that every process can reach, that all "
          "execution.num_processes processes were started with the same value, and that their "
          "execution.process_id values are 0, 1, ..., num_processes - 1, each used once.")


def initialize(execution) -> None:
  """With ``execution.distributed``, joins this process to the others, or stops with one message
  naming the likely cause after ``execution.initialization_timeout_s`` seconds; otherwise does
  nothing. Must precede any other JAX call that touches devices.

  JAX aborts the process from C++ when the coordinator cannot be reached or too few processes
  arrive; a watchdog a little before that deadline ends the process with the message instead.
  """
  if not execution.distributed or jax.distributed.is_initialized():
    return
  # The CPU backend's collectives between processes; other backends ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = settings(execution)
  timeout = float(execution.initialization_timeout_s)
  message = _failure_message(kwargs, timeout)

  def give_up():
    sys.stderr.write(f"\nError: {message}\n")
    sys.stderr.flush()
    os._exit(2)  # pylint: disable=protected-access

  watchdog = threading.Timer(max(timeout - 1.0, 0.5), give_up)
  watchdog.daemon = True
  logging.info("Joining the distributed run (%s; timeout %g s).",
               ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "auto-detected", timeout)
  watchdog.start()
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=int(timeout) + 1)
  except (RuntimeError, ValueError) as e:
    raise RuntimeError(f"{message} ({type(e).__name__}: {e})") from e
  finally:
    watchdog.cancel()
  logging.info("Process %d of %d: %d local and %d global device(s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def is_writer() -> bool:
  """Whether this process writes results, plots and logs of record (process 0)."""
  return jax.process_index() == 0
