"""Will a phase fit? The memory a phase of stacked members needs, estimated before compiling.

The estimate counts, per device, in bytes:

- **state**: every member's parameters, BatchNorm statistics and optimizer state (and an
  averaging phase's running mean, one more copy of the parameters) of the members on the device;
- **step**: the gradients (one copy of the parameters) and the activations autodiff keeps for the
  backward pass (the residuals of ``jax.vjp`` of the loss, traced abstractly) of the members
  that one call of the compiled step advances at once (``members.group_size``; one with
  ``execution.member_strategy='map'``, a chunk with ``'chunked'``), on their share of the batch;
- **ensemble**: the finished members' variables, kept beside the phase;
- **data**: the training images and labels when they are placed on the device.

The host holds meanwhile the phase's members as they are built (one more copy of their state)
and, for the evaluation, every model's probabilities on the test, validation and OOD images and
the models' variables (``evaluation_bytes``); on a CPU that memory is the device's, and the two
are checked together. Not counted: Python's own bookkeeping and XLA's memory while compiling.

Nothing is compiled or allocated: shapes come from ``jax.eval_shape``. XLA may fuse or rematerialise
activations (less) and needs workspace (more), so the estimate is a guide, not a bound; the run
stops only when the estimate is above the limit, and logs it otherwise. The limit is what the
device has: ``memory_stats()``'s ``bytes_limit`` less what is in use on an accelerator, the
available RAM on a CPU (``MemAvailable``), or ``execution.memory_limit_mb`` when set.
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax import members, models, running_mean, sharding


class DoesNotFitError(ValueError):
  """A phase's estimated memory is above what the device has."""


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Bytes per device of a phase (see the module's docstring for each part)."""
  state: int
  step: int
  ensemble: int
  data: int
  members_on_device: int

  @property
  def total(self) -> int:
    return self.state + self.step + self.ensemble + self.data

  def describe(self) -> str:
    mb = size
    return (f"{mb(self.total)} per device ({self.members_on_device} member(s) there: state "
            f"{mb(self.state)}, one step's gradients and activations {mb(self.step)}, finished "
            f"members {mb(self.ensemble)}, training data {mb(self.data)})")


def fits_on_device(nbytes: int, fraction: float = 0.25) -> bool:
  """Whether ``nbytes`` of images may live on the default device: at most ``fraction`` of its
  memory, where the backend reports it (accelerators); always on a CPU (host memory anyway)."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  limit = (stats or {}).get("bytes_limit")
  return limit is None or nbytes <= fraction * limit


def size(nbytes: float) -> str:
  """``nbytes`` in KB, MB or GB (powers of 1024)."""
  for unit, scale in (("GB", 2**30), ("MB", 2**20)):
    if nbytes >= scale:
      return f"{nbytes / scale:,.1f} {unit}" if unit == "GB" else f"{nbytes / scale:,.0f} {unit}"
  return f"{nbytes / 2**10:,.0f} KB"


def tree_bytes(tree) -> int:
  """Bytes of the arrays (or shapes) of ``tree``."""
  return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def per_member(trainer, image_shape, batch_size: int, averaging: bool = False) -> tuple[int, int]:
  """(state bytes, step bytes) of one member training on ``batch_size`` images of
  ``image_shape`` (stored size; ``trainer.image_size`` is what the model sees)."""
  if trainer.image_size:
    image_shape = (trainer.image_size, trainer.image_size, image_shape[-1])
  variables = jax.eval_shape(lambda: trainer.init_variables(0, tuple(image_shape)))
  opt_state = jax.eval_shape(trainer.tx.init, variables["params"])
  state = tree_bytes(variables) + tree_bytes(opt_state)
  if averaging:
    state += tree_bytes(jax.eval_shape(running_mean.start, variables["params"]))
  x = jax.ShapeDtypeStruct((batch_size,) + tuple(image_shape), jnp.float32)

  def residuals(v, x):
    def forward(params):
      return models.apply(trainer.model, {"params": params, "batch_stats": v["batch_stats"]}, x,
                          train=True, key=jax.random.key(0), mutable=["batch_stats"])[0]
    return jax.vjp(forward, v["params"])[1]

  saved = jax.eval_shape(residuals, variables, x)
  step = tree_bytes(variables["params"]) + tree_bytes(saved)
  return state, step


def estimate(trainer, num_members: int, batch_size: int, image_shape, finished_members: int = 0,
             data_bytes: int = 0, averaging: bool = False) -> Estimate:
  """The ``Estimate`` of a phase of ``num_members`` members (see the module's docstring)."""
  devices = len(sharding.available_devices(trainer.num_devices))
  if devices > 1:
    on_device = -(-num_members // math.gcd(num_members, devices))
    data_shards = devices // math.gcd(num_members, devices)
    stepping = on_device
  else:
    on_device, data_shards = num_members, 1
    stepping = members.group_size(num_members, trainer.strategy)
  resolved = members.resolve_strategy(trainer.strategy, stepping)
  if resolved == "map":  # lax.map: one member's step at a time
    stepping = 1
  elif resolved == "chunked":  # lax.map over unrolled chunks
    stepping = members.chunking(stepping)[1]
  state, step = per_member(trainer, image_shape, max(batch_size // data_shards, 1), averaging)
  variables = tree_bytes(jax.eval_shape(lambda: trainer.init_variables(0, tuple(image_shape))))
  return Estimate(state=on_device * state, step=stepping * step,
                  ensemble=finished_members * variables, data=data_bytes,
                  members_on_device=on_device)


def evaluation_bytes(num_models: int, num_images: int, num_classes: int,
                     variables_bytes: int) -> int:
  """Host memory of an evaluation: every model's float32 probabilities on every evaluated image
  (test, validation and OOD sets together), and the models' variables brought to the host."""
  return num_models * (num_images * num_classes * 4 + variables_bytes)


def available_bytes(limit_mb: float = 0, host: bool = False) -> tuple[int, str]:
  """(bytes a phase may use on one device, or with ``host`` the host's RAM; where that number
  comes from)."""
  if limit_mb:
    return int(limit_mb * 2**20), "execution.memory_limit_mb"
  if host:
    return _available_ram(), "available RAM"
  device = jax.local_devices()[0]
  stats = None
  if device.platform != "cpu":
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
  if stats and stats.get("bytes_limit"):
    return (int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)),
            f"{device.device_kind}'s free memory")
  return _available_ram(), "available RAM"


def _available_ram() -> int:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check(est: Estimate, what: str, limit_mb: float = 0, host_bytes: int = 0) -> str:
  """Raises ``DoesNotFitError`` when ``est`` is above the device's limit, or ``host_bytes`` (what
  the host holds meanwhile: the phase's members as they are built, the evaluation's
  probabilities) above the host's; on a CPU, whose memory is the host's, the two are added.
  Returns a log line otherwise."""
  cpu = jax.local_devices()[0].platform == "cpu"
  mb = size
  limit, source = available_bytes(limit_mb)
  needed = est.total + (host_bytes if cpu else 0)
  described = est.describe() + (f", and {mb(host_bytes)} on the host" if cpu else "")
  fix = ("Lower num_members (or the batch size, the image size or the number of evaluated "
         "images), spread the members over more devices, or step one member at a time "
         "(execution.member_strategy='map').")
  if needed > limit:
    raise DoesNotFitError(f"{what} needs an estimated {described}, above the {mb(limit)} of "
                          f"{source}. {fix}")
  line = f"Memory of {what}: an estimated {described}; {mb(limit)} of {source}"
  if not cpu:
    host_limit, host_source = available_bytes(limit_mb, host=True)
    if host_bytes > host_limit:
      raise DoesNotFitError(f"{what} needs an estimated {mb(host_bytes)} on the host, above the "
                            f"{mb(host_limit)} of {host_source}. {fix}")
    line += f"; {mb(host_bytes)} on the host, {mb(host_limit)} of {host_source}"
  return line + "."
