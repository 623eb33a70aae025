"""What a run is given, read and checked before anything is trained: the workdir, the model (a
registered name or a Flax module of one's own), pre-trained weights (files, shipped networks or
variables from a notebook), the batch sizes, and whether the run fits in memory.

Each check raises one ``ValueError`` (or ``memory.DoesNotFitError``) naming the cause and the fix;
``api.run`` calls them in order before the first step compiles.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from typing import Any

import jax
import numpy as np

from starsse_jax import build, checkpoint, configlib, members, memory, methods, models, weights
from starsse_jax.build import make_trainer, model_input_shape
from starsse_jax.data import TransferData
from starsse_jax.sources import disk


def check_batch(batch_size: int, num_examples: int, field: str, what: str) -> None:
  if batch_size > num_examples:
    raise ValueError(f"{field}={batch_size} is larger than the {num_examples} {what}; lower it "
                     "or use more data.")


def import_checkpoints(config, data: TransferData) -> dict[str, Any]:
  """Stacked variables of the pre-trained files ``pretrain.checkpoint`` names (as many as the
  method needs, or ``pretrain.num_checkpoints`` if more: the sweep's Global DE), converted from
  torchvision layout and checked against ``config.model`` and the data's channels. Their classifiers are dropped: every member gets a fresh head."""
  needed = configlib.checkpoints_required(config)
  files = weights.checkpoint_files(config.pretrain.checkpoint)
  if len(files) < needed:
    raise ValueError(f"method={config.method!r} needs {needed} pre-trained checkpoints; "
                     f"pretrain.checkpoint names {len(files)}.")
  model = models.build_model(config.model, data.num_target_classes)
  loaded = []
  for path in files[:needed]:
    t = time.perf_counter()
    variables = weights.load(path, model, config.pretrain.checkpoint_prefix,
                             config.pretrain.checkpoint_key,
                             config.data.image_size or data.image_shape[0])
    variables["params"].pop(config.model.head, None)
    loaded.append(variables)
    logging.info("Imported %s (%.1f s).", path, time.perf_counter() - t)
  expected = make_trainer(config, model, data, config.pretrain).init_variables(0, data.image_shape)
  stacked = members.stack(loaded)
  checkpoint.check_matches(expected, stacked, f"pre-trained weights {files[:needed]} for "
                           f"images of shape {data.image_shape}",
                           skip_prefix=f"['params']['{config.model.head}']", leading_axes=1)
  return stacked


def use_model(config, model):
  """A copy of ``config`` whose ``model.name`` builds ``model``, a Flax module of the user's own.

  ``model`` is a module with a ``num_classes`` field (cloned with the task's number of classes)
  or a factory ``num_classes -> module``. The module is called ``apply(variables, images,
  train=...)`` on normalised NHWC images and returns logits; its classifier is the top-level
  parameter ``config.model.head`` (default ``'head'``), replaced by a fresh one for each member.
  """
  if callable(model) and not hasattr(model, "apply"):
    factory, name = (lambda mc, n, dtype: model(n)), getattr(model, "__name__", "model")
  elif hasattr(model, "num_classes"):
    factory, name = (lambda mc, n, dtype: model.clone(num_classes=n)), type(model).__name__
  else:
    raise ValueError(f"model={type(model).__name__}: give a Flax module with a num_classes field "
                     "or a function num_classes -> module.")
  name = f"user:{name}"
  models.register(name, factory)
  config = config.copy_and_resolve_references()
  config.model.name = name
  return config


def check_head(config, model, variables: dict[str, Any], what: str) -> None:
  head = config.model.head
  if head not in variables["params"]:
    raise ValueError(f"{what}: no classifier named {head!r} among the top-level parameters "
                     f"{sorted(variables['params'])}; set config.model.head to the classifier's "
                     "name.")


def check_model(config, data: TransferData) -> None:
  """Builds the model on the data's images before anything is trained: an image size the model
  cannot take, a classifier that cannot be found, MC-dropout without dropout stop here."""
  model = models.build_model(config.model, data.num_target_classes)
  shape = model_input_shape(config, data)
  try:
    variables = jax.eval_shape(lambda: models.init(model, jax.random.key(0),
                                                   np.zeros((1,) + shape, np.float32)))
  except ValueError as e:
    raise ValueError(f"model {config.model.name} cannot take images of shape {shape}: {e}") from e
  check_head(config, model, variables, f"model {config.model.name}")
  check_collections(config, model, variables, shape)
  for name in ("pretrain", "finetune"):
    section = config[name]
    classes = data.num_target_classes if name == "finetune" else data.num_source_classes
    if (section.mixup_alpha > 0 or section.cutmix_alpha > 0) and classes < 2:
      raise ValueError(f"{name}.mixup_alpha/cutmix_alpha mix images of different classes, but "
                       f"the {name} task has {classes} class: set them to 0.")
  if methods.get(config.method).needs_dropout and not models.has_dropout(model, shape):
    raise ValueError(f"method='mc_dropout' needs a model with dropout; {config.model.name} takes "
                     "no 'stochastic' argument and calls no nn.Dropout of rate above 0 (see "
                     "starsse_jax.models).")


def check_collections(config, model, variables, shape) -> None:
  """A module that reads a variable collection other than ``params`` and ``batch_stats`` is
  refused before training (the library carries those two); collections it only writes with
  ``sow`` are fine. Calls it once in each mode, abstractly."""
  extra = sorted(set(variables) - {"params", "batch_stats"})
  if not extra:
    return
  kept = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
  x = np.zeros((2,) + shape, np.float32)
  try:
    for train in (True, False):
      jax.eval_shape(lambda v: models.apply(model, v, x, train=train, mutable=["batch_stats"]),
                     kept)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"model {config.model.name} reads the variable collection(s) {extra}, but "
                     "the library carries only 'params' (trained) and 'batch_stats' (updated in "
                     "train mode): keep such state in 'batch_stats', or make it parameters. "
                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from e


def given_pretrained(config, data: TransferData, variables) -> dict[str, Any]:
  """Stacked pre-trained variables from a notebook: one ``{'params'[, 'batch_stats']}`` or a list
  of them (Global DE takes one per member), checked against the configured model on the data's
  images; their heads are dropped."""
  items = variables if isinstance(variables, (list, tuple)) else [variables]
  needed = configlib.checkpoints_required(config)
  if len(items) < needed:
    raise ValueError(f"method={config.method!r} needs {needed} pre-trained networks; "
                     f"variables= gives {len(items)}.")
  model = models.build_model(config.model, data.num_target_classes)
  expected = make_trainer(config, model, data, config.finetune).init_variables(0, data.image_shape)
  check_head(config, model, expected, f"model {config.model.name}")
  loaded = []
  for v in items[:needed]:
    v = {"params": dict(v["params"]), "batch_stats": v.get("batch_stats", {})}
    v["params"].pop(config.model.head, None)
    loaded.append(jax.tree.map(np.asarray, v))
  stacked = members.stack(loaded)
  checkpoint.check_matches(expected, stacked, f"the given variables for images of shape "
                           f"{data.image_shape}", skip_prefix=f"['params']['{config.model.head}']",
                           leading_axes=1)
  return stacked


def own_checkpoint_dir(config, workdir: str | None) -> str | None:
  """Where this library's own pre-training is cached; refuses a directory that holds something
  else, so that a mistyped path is never trained into."""
  directory = config.pretrain.checkpoint_dir
  if not directory:
    return os.path.join(workdir, "pretrained") if workdir else None
  if os.path.isfile(directory):
    raise ValueError(f"pretrain.checkpoint_dir={directory!r} is a file. To fine-tune from "
                     "pre-trained weights in a file, set pretrain.checkpoint to it instead.")
  if os.path.isdir(directory) and os.listdir(directory) and not checkpoint.exists(directory):
    raise ValueError(f"pretrain.checkpoint_dir={directory!r} is not empty but holds no checkpoint "
                     "of this library. Point it at a directory a previous run pre-trained into, "
                     "or at a new or empty one to pre-train there; for weight files (.pth, "
                     ".safetensors, .npz) use pretrain.checkpoint.")
  return directory


@dataclasses.dataclass(frozen=True)
class _PhaseLoad:
  """One phase whose memory is checked: its trainer, members stepped together, batch size,
  training split, members already finished (held beside it) and whether it averages weights."""
  what: str
  trainer: Any
  num_members: int
  batch_size: int
  split: Any
  finished: int = 0
  averaging: bool = False


def check_memory(config, data: TransferData, pretraining: bool) -> None:
  """Stops before anything is compiled when a phase's estimated memory (``memory``) is above what
  the device has (or ``execution.memory_limit_mb``); logs the estimate otherwise. The largest
  fine-tuning phase is checked, and with ``pretraining`` the pre-training phase."""
  limit = config.execution.get("memory_limit_mb", 0)
  loads = []
  if pretraining:
    model = models.without_dropout(models.build_model(config.model, data.num_source_classes))
    loads.append(_PhaseLoad("pre-training", make_trainer(config, model, data, config.pretrain),
                            config.pretrain.num_checkpoints, config.pretrain.batch_size,
                            data.source_train))
  plan = build.finetune_plan(config, data)
  largest = max(plan, key=lambda phase: phase.num_members)
  model = models.build_model(config.model, data.num_target_classes)
  finetuning = _PhaseLoad(
      f"fine-tuning phase {largest.name!r} (num_members={config.num_members})",
      make_trainer(config, model, data, config.finetune), largest.num_members,
      config.finetune.batch_size, data.target_train,
      sum(p.num_members for p in plan) - largest.num_members, largest.average is not None)
  loads.append(finetuning)
  members_total = sum(p.num_members for p in plan) * max(config.eval.mc_samples, 1)
  images = sum(len(s) for s in (data.target_test, data.target_val, data.ood) if s is not None)
  variables = jax.eval_shape(lambda: finetuning.trainer.init_variables(0, data.image_shape))
  host = memory.evaluation_bytes(members_total, images, data.num_target_classes,
                                 memory.tree_bytes(variables))
  evaluation = f"the evaluation of {members_total} model(s)"
  for load in loads:
    split, placement = load.split, load.trainer.placement
    on_device = placement == "device" or (
        placement == "auto" and not isinstance(split.images, disk.DiskImages)
        and memory.fits_on_device(split.images.nbytes))
    est = memory.estimate(load.trainer, load.num_members, load.batch_size,
                          split.images.shape[1:], load.finished,
                          split.images.nbytes + split.labels.nbytes if on_device else 0,
                          load.averaging)
    # The fine-tuned members are built on the host, where the evaluation runs.
    held = est.state + (0 if load.what == "pre-training" else host)
    logging.info(memory.check(est, load.what + (f" and {evaluation}" if held > est.state else ""),
                              limit, host_bytes=held))


def check_workdir(workdir: str) -> None:
  """Refuses, before anything is read or computed, a workdir that cannot hold the outputs."""
  if not workdir:
    raise ValueError("The workdir is empty; name a directory with --workdir.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"Workdir {workdir!r} is a file, not a directory; choose another "
                             "with --workdir.")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise PermissionError(f"Workdir {workdir!r} is not writable ({e.strerror}); choose another "
                          "with --workdir.") from e
