"""Checkpoints of stacked variables, validated against the model before use.

Orbax restores whatever structure is on disk; restoring into a different one can silently load
partial weights. Every restore here is therefore compared leaf by leaf (path, shape, dtype) with
what the configured model expects, and a mismatch names the first differing leaf.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from starsse_jax import models, sharding


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the configured model."""


class DiskFullError(OSError):
  """A save ran out of disk space; the earlier checkpoints are intact."""


def _describe(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): (tuple(np.shape(leaf)), str(jnp.result_type(leaf)))
          for path, leaf in flat}


def check_matches(expected: Any, actual: Any, what: str, skip_prefix: str | None = None,
                  leading_axes: int = 0) -> None:
  """Raises ``CheckpointMismatchError`` unless both pytrees have the same leaves, shapes, dtypes.

  ``leading_axes`` leading dimensions of ``actual`` (a member axis) are ignored; paths that
  start with ``skip_prefix`` are not compared.
  """
  exp, act = _describe(expected), _describe(actual)
  keep = lambda p: skip_prefix is None or not p.startswith(skip_prefix)
  hint = ("The checkpoint was made by a different model configuration: match config.model to "
          "the one that made it, or point the run at another workdir / checkpoint directory.")
  for path in sorted(set(exp) | set(act)):
    if not keep(path):
      continue
    if path not in act:
      raise CheckpointMismatchError(f"{what}: leaf {path} with shape {exp[path][0]} is missing "
                                    f"from the checkpoint. {hint}")
    if path not in exp:
      raise CheckpointMismatchError(f"{what}: the checkpoint has leaf {path} (shape "
                                    f"{act[path][0]}) that the model does not. {hint}")
    (eshape, edtype), (ashape, adtype) = exp[path], act[path]
    if ashape[leading_axes:] != eshape or adtype != edtype:
      raise CheckpointMismatchError(
          f"{what}: leaf {path} is {adtype}{list(ashape[leading_axes:])} in the checkpoint but the "
          f"model expects {edtype}{list(eshape)}. {hint}")


def with_new_head(pretrained: dict[str, Any], fresh: dict[str, Any],
                  head: str = models.HEAD) -> dict[str, Any]:
  """Pre-trained body + ``fresh``'s classifier ``head`` (the transfer protocol)."""
  check_matches(fresh, pretrained, "pre-trained checkpoint", skip_prefix=f"['params']['{head}']")
  params = dict(pretrained["params"])
  params[head] = fresh["params"][head]
  return {"params": params, "batch_stats": pretrained.get("batch_stats", {})}


def save(directory: str, step: int, variables: Any, metadata: dict[str, Any]) -> None:
  """Saves ``variables`` (a stacked pytree) and JSON ``metadata`` as step ``step``.

  Orbax writes into a temporary directory and renames it when complete, so a crash mid-save
  never leaves a checkpoint that ``latest_step`` would pick.
  """
  with manager(directory) as mngr:
    save_step(mngr, step, variables, metadata)


def exists(directory: str) -> bool:
  if not os.path.isdir(directory):
    return False
  with manager(directory) as mngr:
    return mngr.latest_step() is not None


def remove_partial_saves(directory: str) -> None:
  """Removes the temporary directories of saves cut short (killed, disk full): orbax renames a
  save into place only when it is complete, so they never hold a usable checkpoint."""
  for partial in glob.glob(os.path.join(directory, "*.orbax-checkpoint-tmp*")):
    shutil.rmtree(partial, ignore_errors=True)


def manager(directory: str, keep: int | None = None) -> ocp.CheckpointManager:
  """An orbax manager of checkpoints with a ``state`` pytree and JSON ``metadata``; with ``keep``
  only the latest ``keep`` checkpoints are preserved (older ones are deleted after a save)."""
  policy = None if keep is None else preservation_policy.LatestN(keep)
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(preservation_policy=policy),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "metadata": ocp.JsonCheckpointHandler()})


def save_step(mngr: ocp.CheckpointManager, step: int, state: Any,
              metadata: dict[str, Any], block: bool = True) -> None:
  """Saves ``state`` and ``metadata`` as step ``step``; with ``block`` waits until they are
  written, otherwise the write continues in the background (``wait``). With several processes
  every process calls it with whole numpy arrays, which orbax writes once."""
  if jax.process_count() > 1:
    state = sharding.to_host(state)
  with _disk_full_reported(mngr, step):
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            metadata=ocp.args.JsonSave(metadata)))
  if block:
    wait(mngr, step)


def wait(mngr: ocp.CheckpointManager, step: int | None = None) -> None:
  """Waits for ``mngr``'s background save (of ``step``, for the message) to finish."""
  with _disk_full_reported(mngr, step):
    mngr.wait_until_finished()


@contextlib.contextmanager
def _disk_full_reported(mngr: ocp.CheckpointManager, step: int | None):
  """Turns running out of disk space during a save into ``DiskFullError``, the partial save
  removed and the earlier checkpoints named intact."""
  try:
    yield
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    try:  # let the manager's threads finish with the partial save, then remove it
      mngr.close()
    except OSError:
      pass
    remove_partial_saves(str(mngr.directory))
    kept = [s for s in mngr.all_steps() if s != step]
    which = "" if step is None else f" {step}"
    raise DiskFullError(
        errno.ENOSPC, f"No space left on the device while saving checkpoint{which} in "
        f"{mngr.directory}; the partial save is discarded and "
        f"{f'checkpoint {max(kept)} is intact' if kept else 'no earlier checkpoint exists'}. "
        "Free some space (or choose another --workdir) and rerun the same command to resume"
    ) from e


def restore_step(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """Step ``step``'s ``state`` and ``metadata``, every array whole on this process's first
  device: whatever devices saved it (one, a mesh, several processes), this process reads it all.
  (Restoring onto the saved devices fails where they are not this process's.)"""
  saved = mngr.item_metadata(step)["state"]
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        saved.tree)
  return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                    metadata=ocp.args.JsonRestore()))


def restore(directory: str) -> tuple[Any, dict[str, Any]]:
  """The latest (variables, metadata) in ``directory``, as saved (unvalidated)."""
  with manager(directory) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {directory!r}.")
    restored = restore_step(mngr, step)
  return restored["state"], restored["metadata"]
