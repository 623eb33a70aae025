"""Spreading a phase's members over devices: a ``Mesh`` with a member axis and a data axis.

Members are split over the ``members`` axis; each member's batch is split over the ``data`` axis,
with gradients and BatchNorm statistics averaged across it, so a step computes the same function
as on one device. For a phase of K members on D devices the member axis takes ``gcd(K, D)``
devices and the data axis the rest, so any K runs on any D: K=8 on 8 devices is pure member
parallelism, K=1 (the first fine-tuning of SSE/StarSSE) pure data parallelism, K=4 on 8 devices
4 members x 2 data shards. The per-member batch must divide by the data axis.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MEMBERS, DATA = "members", "data"


def available_devices(num_devices: int) -> list:
  """The first ``num_devices`` devices (0 = all of them)."""
  devices = jax.devices()
  if num_devices == 0:
    return devices
  if num_devices > len(devices):
    raise ValueError(f"execution.num_devices={num_devices} but only {len(devices)} "
                     f"{jax.default_backend()} device(s) are visible; lower it (0 = all).")
  return devices[:num_devices]


def choose_mesh(num_members: int, batch_size: int, num_devices: int) -> Mesh | None:
  """The mesh for a phase of ``num_members`` members, or ``None`` for one device."""
  devices = available_devices(num_devices)
  if len(devices) == 1:
    return None
  m = math.gcd(num_members, len(devices))
  d = len(devices) // m
  if batch_size % d:
    raise ValueError(
        f"A phase of {num_members} member(s) on {len(devices)} devices splits each member's batch "
        f"over {d} devices, but the batch size {batch_size} is not divisible by {d}. Use a batch "
        f"size divisible by {d}, or a number of members that divides {len(devices)}.")
  return Mesh(np.asarray(devices).reshape(m, d), (MEMBERS, DATA))


def member_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(MEMBERS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _spans_processes(x) -> bool:
  return isinstance(x, jax.Array) and not x.is_fully_addressable


def to_host(tree):
  """A tree of numpy arrays, whole in every process: arrays that span several processes' devices
  are gathered from them (a collective: every process must call it at the same point)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(tree)
  spanning = [i for i, x in enumerate(leaves) if _spans_processes(x)]
  if spanning:
    gathered = multihost_utils.process_allgather([leaves[i] for i in spanning], tiled=True)
    for i, x in zip(spanning, gathered):
      leaves[i] = x
  return jax.tree.unflatten(treedef, [np.asarray(jax.device_get(x)) for x in leaves])


def gather(tree):
  """A phase's states, whole, on this process's first device, wherever they were: one device, a
  mesh of local devices, or a mesh over several processes (gathered through the host)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, jax.devices()[0])
  return jax.device_put(to_host(tree), jax.local_devices()[0])


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true in any process (a collective in a run of several processes): a stop
  requested by a signal to one process must stop all of them at the same step."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))
