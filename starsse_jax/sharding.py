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
