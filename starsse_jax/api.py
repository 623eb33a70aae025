"""The functional API: pre-train, fine-tune an ensemble with a method, evaluate it and its soups.

A notebook uses these directly::

    config = configlib.base_config(); config.method = "starsse"
    data = load_transfer_data(config)
    pretrained = pretrain(config, data, workdir)
    ens = finetune(config, data, pretrained)
    results = evaluate(config, data, ens)

``run`` does all of it and writes the outputs; ``python -m starsse_jax.main`` is a thin layer over it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from typing import Any

import jax
import numpy as np
import optax

from starsse_jax import (basin, checkpoint, configlib, distributed, inference, low_precision,
                         members, memory, methods, metrics, models, optimizers, regularizers, report,
                         resume, soups, train, uncertainty, weights)
from starsse_jax import data as data_lib
from starsse_jax.data import TransferData, from_arrays, load_transfer_data
from starsse_jax.sources import disk

__all__ = ["Ensemble", "load_transfer_data", "from_arrays", "import_checkpoints", "pretrain", "finetune", "evaluate", "make_soups",
           "basin_report", "run"]


@dataclasses.dataclass
class Ensemble:
  """A fine-tuned ensemble: stacked variables (members in plan order) and how they were made."""
  model: Any
  variables: dict[str, Any]  # {'params', 'batch_stats'}, leading member axis
  member_names: list[str]
  phases: list[dict[str, Any]]  # name, members, lr_table, history
  # eval.baseline='local_de': the Local DE trained in the same run (its member 0 is this
  # ensemble's member 0), evaluated beside it.
  baseline: "Ensemble | None" = None

  @property
  def num_members(self) -> int:
    return len(self.member_names)


def make_trainer(config, model, data: TransferData, opt_config) -> train.Trainer:
  if hasattr(model, "kernel_grad"):
    model = model.clone(kernel_grad=config.execution.kernel_grad)
  return train.Trainer(
      model=model, tx=optimizers.make(optimizers.OptimizerConfig.from_config(opt_config)),
      regularizers=regularizers.Regularizers.from_config(opt_config),
      mean=data.mean, std=data.std, crop_padding=config.data.crop_padding,
      flip=config.data.flip, strategy=config.execution.member_strategy, seed=config.seed,
      num_devices=config.execution.num_devices, image_size=config.data.image_size,
      resize=config.data.resize,
      placement=config.data.placement, head=config.model.head)


def make_checkpointer(config, trainer: train.Trainer, data: TransferData, workdir: str | None,
                  kind: str, fields=None) -> resume.RunCheckpointer | None:
  """Progress checkpoints in ``WORKDIR/checkpoints/KIND-HASH``; HASH names the settings that
  determine the run, so reruns of the same config resume and other configs start their own."""
  if not workdir:
    return None
  settings = config.to_dict()
  fp = resume.fingerprint(settings if fields is None else
                          {k: v for k, v in settings.items() if k in fields})
  variables = trainer.init_variables(0, data.image_shape)
  template = {**variables, "opt_state": trainer.tx.init(variables["params"])}
  return resume.RunCheckpointer(os.path.join(workdir, "checkpoints", f"{kind}-{fp}"), template)


def _check_batch(batch_size: int, num_examples: int, field: str, what: str) -> None:
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


def _check_head(config, model, variables: dict[str, Any], what: str) -> None:
  head = config.model.head
  if head not in variables["params"]:
    raise ValueError(f"{what}: no classifier named {head!r} among the top-level parameters "
                     f"{sorted(variables['params'])}; set config.model.head to the classifier's "
                     "name.")


def _check_model(config, data: TransferData) -> None:
  """Builds the model on the data's images before anything is trained: an image size the model
  cannot take, a classifier that cannot be found, MC-dropout without dropout stop here."""
  model = models.build_model(config.model, data.num_target_classes)
  shape = model_input_shape(config, data)
  try:
    variables = jax.eval_shape(lambda: models.init(model, jax.random.key(0),
                                                   np.zeros((1,) + shape, np.float32)))
  except ValueError as e:
    raise ValueError(f"model {config.model.name} cannot take images of shape {shape}: {e}") from e
  _check_head(config, model, variables, f"model {config.model.name}")
  _check_collections(config, model, variables, shape)
  for name in ("pretrain", "finetune"):
    section = config[name]
    classes = data.num_target_classes if name == "finetune" else data.num_source_classes
    if (section.mixup_alpha > 0 or section.cutmix_alpha > 0) and classes < 2:
      raise ValueError(f"{name}.mixup_alpha/cutmix_alpha mix images of different classes, but "
                       f"the {name} task has {classes} class: set them to 0.")
  if config.method == "mc_dropout" and not models.has_dropout(model, shape):
    raise ValueError(f"method='mc_dropout' needs a model with dropout; {config.model.name} takes "
                     "no 'stochastic' argument and calls no nn.Dropout of rate above 0 (see "
                     "starsse_jax.models).")


def model_input_shape(config, data: TransferData) -> tuple[int, ...]:
  """The shape of one image as the model sees it (after ``data.image_size`` resizing)."""
  shape = tuple(data.image_shape)
  if config.data.image_size:
    shape = (config.data.image_size, config.data.image_size, shape[-1])
  return shape


def _check_collections(config, model, variables, shape) -> None:
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
  _check_head(config, model, expected, f"model {config.model.name}")
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


def _own_checkpoint_dir(config, workdir: str | None) -> str | None:
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


def pretrain(config, data: TransferData, workdir: str | None = None, writer=None,
             stop: resume.StopRequest | None = None) -> dict[str, Any]:
  """Stacked pre-trained variables (``pretrain.num_checkpoints`` members) for the source task.

  With ``pretrain.checkpoint`` set, imports those files (``import_checkpoints``) and trains
  nothing. Otherwise reuses this library's checkpoint in ``pretrain.checkpoint_dir`` (default
  ``WORKDIR/pretrained``) after checking that its architecture matches ``config.model``, or trains
  and saves one. The checkpoints of Global DE are independent runs from different seeds, trained
  as one stacked run.
  """
  if config.pretrain.checkpoint:
    return import_checkpoints(config, data)
  if data.source_train is None:
    raise ValueError("This data has no source task to pre-train on (a whole-dataset target): set "
                     "pretrain.checkpoint to the pre-trained weights to fine-tune from.")
  directory = _own_checkpoint_dir(config, workdir)
  # Dropout is a fine-tuning choice (MC-dropout): pre-training is the same for every method.
  model = models.without_dropout(models.build_model(config.model, data.num_source_classes))
  trainer = make_trainer(config, model, data, config.pretrain)
  expected = trainer.init_variables(0, data.image_shape)  # at the training resolution
  needed = config.pretrain.num_checkpoints
  if directory and checkpoint.exists(directory):
    variables, meta = checkpoint.restore(directory)
    checkpoint.check_matches(expected, variables, f"pre-trained checkpoint in {directory}",
                             skip_prefix=f"['params']['{config.model.head}']", leading_axes=1)
    have = members.num_members(variables)
    if have < needed:
      raise ValueError(f"{directory} holds {have} pre-trained checkpoint(s) but the config needs "
                       f"{needed}; delete it (or choose another workdir) to pre-train again.")
    logging.info("Reusing %d pre-trained checkpoint(s) from %s (made %s).", have, directory,
                 meta.get("created", "?"))
    return members.take(variables, list(range(needed)))
  _check_batch(config.pretrain.batch_size, len(data.source_train), "pretrain.batch_size",
               "source training images")
  pt = config.pretrain
  plan = methods.pretrain_plan(needed, len(data.source_train) // pt.batch_size, pt.epochs, pt.lr,
                               pt.warmup_epochs, pt.warmup_lr, pt.schedule_unit == "epoch")
  logging.info("Pre-training %d model(s) on %d source images.", needed, len(data.source_train))
  variables, _ = train.run_plan(
      trainer, plan, data.source_train, config.pretrain.batch_size,
      log_every=config.log_every_steps, writer=writer,
      checkpointer=make_checkpointer(config, trainer, data, workdir, "pretrain",
                                 ("seed", "data", "model", "pretrain")),
      save_every=config.checkpoint_every_steps, stop=stop,
      drop_diverged=config.drop_diverged_members)
  if directory:
    checkpoint.save(directory, 0, variables, {
        "model": config.model.to_dict(), "num_checkpoints": needed,
        "num_classes": data.num_source_classes, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    logging.info("Saved pre-trained checkpoint(s) to %s.", directory)
  return variables


def finetune_plan(config, data: TransferData) -> list[methods.Phase]:
  """The phases ``finetune`` runs for ``config.method`` on ``data`` (with the Local DE baseline's
  phase when ``eval.baseline='local_de'``)."""
  ft = config.finetune
  budget = methods.Budget(
      num_members=config.num_members, steps_per_epoch=len(data.target_train) // ft.batch_size,
      epochs=ft.epochs, lr=ft.lr, lr_ratio=ft.lr_ratio, cycle_ratio=ft.cycle_ratio,
      fge_cycle_epochs=ft.fge_cycle_epochs, fge_lr_1=ft.fge_lr_1, fge_lr_2=ft.fge_lr_2,
      swa_epochs=ft.swa_epochs, swa_lr=ft.swa_lr, swa_lr_min=ft.swa_lr_min,
      swa_schedule=ft.swa_schedule, swa_start=ft.swa_start,
      swa_collect_every=ft.swa_collect_every, warmup_epochs=ft.warmup_epochs,
      warmup_lr=ft.warmup_lr, per_epoch=ft.schedule_unit == "epoch")
  plan = methods.build_plan(config.method, budget)
  if config.eval.baseline == "local_de":
    plan = methods.with_local_de_baseline(plan)
  return plan


def check_memory(config, data: TransferData, pretraining: bool) -> None:
  """Stops before anything is compiled when a phase's estimated memory (``memory``) is above what
  the device has (or ``execution.memory_limit_mb``); logs the estimate otherwise. The largest
  fine-tuning phase is checked, and with ``pretraining`` the pre-training phase."""
  limit = config.execution.get("memory_limit_mb", 0)
  checks = []
  if pretraining:
    model = models.without_dropout(models.build_model(config.model, data.num_source_classes))
    checks.append(("pre-training", make_trainer(config, model, data, config.pretrain),
                   config.pretrain.num_checkpoints, config.pretrain.batch_size, data.source_train,
                   0, False))
  plan = finetune_plan(config, data)
  largest = max(plan, key=lambda phase: phase.num_members)
  model = models.build_model(config.model, data.num_target_classes)
  checks.append((f"fine-tuning phase {largest.name!r} (num_members={config.num_members})",
                 make_trainer(config, model, data, config.finetune), largest.num_members,
                 config.finetune.batch_size, data.target_train,
                 sum(p.num_members for p in plan) - largest.num_members,
                 largest.average is not None))
  members_total = sum(p.num_members for p in plan) * max(config.eval.mc_samples, 1)
  images = sum(len(s) for s in (data.target_test, data.target_val, data.ood) if s is not None)
  variables = jax.eval_shape(lambda: checks[-1][1].init_variables(0, data.image_shape))
  host = memory.evaluation_bytes(members_total, images, data.num_target_classes,
                                 memory.tree_bytes(variables))
  evaluation = f"the evaluation of {members_total} model(s)"
  for what, trainer, k, batch, split, finished, averaging in checks:
    on_device = trainer.placement == "device" or (
        trainer.placement == "auto" and not isinstance(split.images, disk.DiskImages)
        and data_lib.fits_on_device(split.images.nbytes))
    est = memory.estimate(trainer, k, batch, split.images.shape[1:], finished,
                          split.images.nbytes + split.labels.nbytes if on_device else 0,
                          averaging)
    held = est.state + (0 if what == "pre-training" else host)  # built on the host, evaluation
    logging.info(memory.check(est, what + (f" and {evaluation}" if held > est.state else ""),
                              limit, host_bytes=held))


def finetune(config, data: TransferData, pretrained: dict[str, Any], writer=None,
             workdir: str | None = None, stop: resume.StopRequest | None = None) -> Ensemble:
  """Fine-tunes ``config.num_members`` members on the target task with ``config.method``.

  With a ``workdir`` the progress is checkpointed (see ``resume``) and a rerun resumes it; the
  latest checkpoint of a finished run holds the whole ensemble.
  """
  needed = methods.checkpoints_needed(config.method, config.num_members)
  have = members.num_members(pretrained)
  if have < needed:
    raise ValueError(f"method={config.method!r} with {config.num_members} members needs {needed} "
                     f"pre-trained checkpoints; {have} given.")
  plan = finetune_plan(config, data)
  model = models.build_model(config.model, data.num_target_classes)
  trainer = make_trainer(config, model, data, config.finetune)
  checkpointer = make_checkpointer(config, trainer, data, workdir, config.method)
  ft = config.finetune
  variables, phases = train.run_plan(trainer, plan, data.target_train, ft.batch_size,
                                  pretrained=pretrained, log_every=config.log_every_steps,
                                  writer=writer, checkpointer=checkpointer,
                                  save_every=config.checkpoint_every_steps, stop=stop,
                                  drop_diverged=config.drop_diverged_members)
  names, phase_info, positions, first = [], [], [], 0
  for planned, phase in zip(plan, phases):
    names += [f"{phase.name}[{i - first}]" for i in phase.member_ids]
    positions.append(list(range(len(names) - len(phase.member_ids), len(names))))
    phase_info.append({"name": phase.name, "members": phase.member_ids,
                       "lr_table": phase.lr_table, "history": phase.history,
                       "seconds": phase.seconds, "first_step_seconds": phase.first_step_seconds})
    first += planned.num_members
  if plan[-1].name != methods.BASELINE_PHASE:
    return Ensemble(model, variables, names, phase_info)
  # Stacked positions (not plan ids: diverged members may have been dropped) of each ensemble.
  own = [p for ps in positions[:-1] for p in ps]
  local = positions[0] + positions[-1]
  pick = lambda ids, of: [of[i] for i in ids]
  baseline = Ensemble(model, members.take(variables, local), pick(local, names),
                      [phase_info[0], phase_info[-1]])
  return Ensemble(model, members.take(variables, own), pick(own, names), phase_info[:-1],
                  baseline)


def predict_members(config, data: TransferData, model, variables, images,
             passes: int = 0) -> np.ndarray:
  return inference.predict(model, variables, images, data.mean, data.std, config.eval.batch_size,
                           config.execution.member_strategy, config.data.image_size,
                           passes=passes, seed=config.seed, resize=config.data.resize)


def mc_passes(config, model, image_shape=None) -> int:
  """Stochastic test passes per member: ``eval.mc_samples`` for a model with dropout (a module of
  one's own: see ``models.has_dropout``, which needs the ``image_shape`` it sees), else 0."""
  return config.eval.mc_samples if models.has_dropout(model, image_shape) else 0


def _ame_optimizers(config) -> dict[str, Any]:
  """``eval.ame_optimizer`` ('adam', or several separated by commas) -> {name: optimiser}."""
  names = [n.strip() for n in config.eval.ame_optimizer.split(",") if n.strip()]
  make = {"sgd": lambda lr: None,  # step 1 / i: soups.ame_soup's default
          "adam": optax.adam, "adagrad": optax.adagrad}
  return {name: make[name](config.eval.ame_lr) for name in names}


def _recompute_fn(config, data: TransferData, model):
  """``(stacked params, template stats) -> BatchNorm statistics on the target training images``."""
  return lambda params, stats: inference.recompute_batch_stats(
      model, params, stats, data.target_train.images, data.mean, data.std,
      config.eval.bn_batch_size, config.execution.member_strategy, config.data.image_size,
      config.data.resize)


def _learned_soup(config, data: TransferData, ens: Ensemble):
  """The learned soup's parameters and mixing report. While the mixing is learned, BatchNorm
  normalises each validation batch by its own statistics (train mode): the members' running
  statistics do not describe a weight mixture, and the mixture changes every step. The final
  soup's statistics are recomputed on the training images like every soup's. A model without
  BatchNorm is simply evaluated."""
  template = members.take(ens.variables["batch_stats"], 0)
  model = ens.model
  has_bn = bool(jax.tree.leaves(template))

  def logits_fn(params, images):
    x = data_lib.normalize(data_lib.eval_view(images, config.data.image_size, config.data.resize),
                           data.mean, data.std)
    logits, _ = models.apply(model, {"params": params, "batch_stats": template}, x,
                             train=has_bn, stochastic=False, mutable=["batch_stats"])
    return logits.astype(np.float32)

  return soups.learned_soup(ens.variables["params"], logits_fn, data.target_val.images,
                            data.target_val.labels, epochs=config.eval.learned_soup_epochs,
                            batch_size=config.eval.learned_soup_batch_size,
                            lr=config.eval.learned_soup_lr, seed=config.seed)


def make_soups(config, data: TransferData, ens: Ensemble,
               member_val_accuracy: list[float] | None = None) -> dict[str, Any]:
  """Uniform, greedy and learned soups (and AME with ``eval.ame_optimizer``); BatchNorm statistics
  recomputed on the target training images. The learned soup's probabilities include its learned
  logit scale.

  ``member_val_accuracy`` (each member's validation accuracy, which ``evaluate`` already has)
  sets the greedy order; it is computed when not given.
  """
  params = ens.variables["params"]
  template = members.take(ens.variables["batch_stats"], [0])

  recompute = _recompute_fn(config, data, ens.model)

  def finish(soup_params) -> dict[str, Any]:
    stacked = members.broadcast(soup_params, 1)
    return {"params": stacked, "batch_stats": recompute(stacked, template)}

  def accuracy(variables, split) -> float:
    probs = predict_members(config, data, ens.model, variables, split.images)
    return metrics.accuracy(probs[0], split.labels)

  ood = data.ood.images if data.ood is not None else None
  if member_val_accuracy is None:
    member_val = predict_members(config, data, ens.model, ens.variables, data.target_val.images)
    member_val_accuracy = [metrics.accuracy(p, data.target_val.labels) for p in member_val]
  greedy, chosen, _ = soups.greedy_soup(params, member_val_accuracy,
                                        lambda p: accuracy(finish(p), data.target_val))
  everyone = list(range(ens.num_members))
  made = [("uniform", soups.uniform_soup(params), everyone, {}), ("greedy", greedy, chosen, {})]
  if config.eval.learned_soup:
    learned, mixing = _learned_soup(config, data, ens)
    made.append(("learned", learned, everyone, mixing))
  optimizers = _ame_optimizers(config)
  for opt_name, optimizer in optimizers.items():
    made.append(("ame" if len(optimizers) == 1 else f"ame_{opt_name}",
                 soups.ame_soup(params, optimizer, config.eval.ame_passes), everyone,
                 {"optimizer": opt_name}))
  out = {}
  for name, soup_params, used, info in made:
    variables = finish(soup_params)
    # The learned logit scale beta: softmax(beta z) is softmax(log p / T) at T = 1 / beta.
    scaled = ((lambda p: uncertainty.apply_temperature(p, 1.0 / info["scale"]))
              if "scale" in info else (lambda p: p))
    predict = lambda images, v=variables, f=scaled: f(predict_members(config, data, ens.model, v,
                                                               images)[0])
    test, val = predict(data.target_test.images), predict(data.target_val.images)
    out[name] = {"members": used, **info,
                 "test": metrics.summary(test, data.target_test.labels, config.eval.ece_bins),
                 "val_accuracy": metrics.accuracy(val, data.target_val.labels),
                 "uncertainty": uncertainty.model_report(
                     test, data.target_test.labels, val, data.target_val.labels,
                     None if ood is None else predict(ood), config.eval.ece_bins),
                 "probs": test, "variables": variables}
  return out


def _dee_reference(config, results: dict[str, Any]) -> list[float] | None:
  """Calibrated test NLL of Local DE at sizes 1..L: this run's when it is a Local DE, else the
  curve in ``eval.dee_reference`` (a Local DE run's results.json), else this run's Local DE
  baseline's (``eval.baseline``)."""
  if config.method == "local_de":
    return results["uncertainty"]["size_curve_calibrated_nll"]
  if not config.eval.dee_reference:
    if "baseline" in results:
      return results["baseline"]["uncertainty"]["size_curve_calibrated_nll"]
    return None
  with open(config.eval.dee_reference) as f:
    reference = json.load(f)
  if reference.get("method") != "local_de" or "uncertainty" not in reference:
    raise ValueError(f"eval.dee_reference={config.eval.dee_reference!r} is not the results.json "
                     "of a Local DE run of this version (method local_de, with 'uncertainty').")
  return reference["uncertainty"]["size_curve_calibrated_nll"]


def evaluate(config, data: TransferData, ens: Ensemble) -> dict[str, Any]:
  """Test and validation metrics of members, ensemble (sizes 1..K) and soups (JSON-ready), with
  calibrated metrics, DEE, OOD detection and selective prediction (``uncertainty``)."""
  if ens.baseline is not None:
    return _with_baseline(config, data, ens)
  passes = mc_passes(config, ens.model, model_input_shape(config, data))
  names = ens.member_names if not passes else [
      f"{name} pass {s}" for name in ens.member_names for s in range(passes)]
  results = {"method": config.method, "member_names": names}
  if passes:
    results["mc_dropout"] = {"passes": passes, "models": ens.member_names}
  predict = lambda images: predict_members(config, data, ens.model, ens.variables, images, passes)
  probs = {}
  for split in ("test", "val"):
    s = getattr(data, f"target_{split}")
    probs[split] = predict(s.images)
    results[split] = metrics.ensemble_report(probs[split], s.labels, config.eval.ece_bins)
  test_y, val_y, bins = data.target_test.labels, data.target_val.labels, config.eval.ece_bins
  ood = None if data.ood is None else predict(data.ood.images)
  mean = metrics.ensemble
  results["uncertainty"] = {
      "ood_set": data.ood_name if ood is not None else None,
      "members": [uncertainty.model_report(probs["test"][k], test_y, probs["val"][k], val_y,
                                           None if ood is None else ood[k], bins)
                  for k in range(len(names))],
      "ensemble": uncertainty.model_report(mean(probs["test"]), test_y, mean(probs["val"]), val_y,
                                           None if ood is None else mean(ood), bins,
                                           probs["test"], ood),
      "size_curve_calibrated_nll": [
          uncertainty.calibrated_nll(mean(probs["val"][:k]), val_y, mean(probs["test"][:k]), test_y)
          for k in range(1, len(names) + 1)]}
  chosen, val_acc = soups.greedy_ensemble(probs["val"], val_y)
  results["greedy_ensemble"] = {
      "members": chosen, "val_accuracy": val_acc,
      "test": metrics.summary(mean(probs["test"][chosen]), test_y, bins),
      "uncertainty": uncertainty.model_report(
          mean(probs["test"][chosen]), test_y, mean(probs["val"][chosen]), val_y,
          None if ood is None else mean(ood[chosen]), bins, probs["test"][chosen],
          None if ood is None else ood[chosen])}
  curves = {"member 0": probs["test"][0], "ensemble": mean(probs["test"])}
  if config.eval.soups:
    val_accuracy = None if passes else [m["accuracy"] for m in results["val"]["members"]]
    made = make_soups(config, data, ens, val_accuracy)
    results["soups"] = {name: {k: v for k, v in soup.items() if k not in ("variables", "probs")}
                        for name, soup in made.items()}
    curves["uniform soup"] = made["uniform"]["probs"]
  if config.eval.low_precision_bits:
    results["low_precision"] = low_precision.evaluate(
        ens.variables["params"], ens.variables["batch_stats"],
        lambda variables, images: predict_members(config, data, ens.model, variables, images),
        _recompute_fn(config, data, ens.model),
        (data.target_test.images, test_y), (data.target_val.images, val_y),
        tuple(config.eval.low_precision_bits), config.eval.low_precision_samples, config.seed,
        config.eval.low_precision_scale == "channel", bins)
  reference = _dee_reference(config, results)
  if reference is not None:
    results["dee"] = _dee_report(results, reference, config.eval.dee_reference or "this run")
  results["curves"] = {name: {"reliability": uncertainty.reliability_bins(p, test_y, bins),
                              "risk_coverage": _thin(*uncertainty.risk_coverage(p, test_y))}
                       for name, p in curves.items()}
  return results


def _with_baseline(config, data: TransferData, ens: Ensemble) -> dict[str, Any]:
  """``evaluate`` of the method's ensemble, with its Local DE baseline evaluated the same way
  (members, ensemble, greedy ensemble, calibration, OOD; no soups) under ``'baseline'``; the
  baseline's calibrated-NLL size curve is the DEE reference unless ``eval.dee_reference`` names
  another."""
  local = config.copy_and_resolve_references()
  with local.unlocked():
    local.method, local.eval.soups, local.eval.mc_samples = "local_de", False, 0
    local.eval.low_precision_bits, local.eval.dee_reference = (), ""
  baseline = evaluate(local, data, dataclasses.replace(ens.baseline, baseline=None))
  baseline.pop("curves")
  results = evaluate(config, data, dataclasses.replace(ens, baseline=None))
  results["baseline"] = baseline
  # DEE needs the baseline's curve: computed again now that results hold it.
  if "dee" not in results:
    results["dee"] = _dee_report(results, _dee_reference(config, results),
                                 "this run's Local DE baseline")
  return results


def _dee_report(results: dict[str, Any], reference: list[float], name: str) -> dict[str, Any]:
  """Deep-ensemble equivalents of every model in ``results`` against a Local DE curve."""
  dee = lambda report: uncertainty.deep_ensemble_equivalent(report["calibrated"]["nll"], reference)
  u = results["uncertainty"]
  return {"reference": name, "members": [dee(m) for m in u["members"]],
          "ensemble": dee(u["ensemble"]),
          "size_curve": [uncertainty.deep_ensemble_equivalent(v, reference)
                         for v in u["size_curve_calibrated_nll"]],
          "greedy_ensemble": dee(results["greedy_ensemble"]["uncertainty"]),
          "soups": {name: dee(s["uncertainty"]) for name, s in results.get("soups", {}).items()}}


def _thin(coverage, risk, points: int = 200) -> dict[str, list[float]]:
  idx = np.unique(np.linspace(0, len(coverage) - 1, min(points, len(coverage))).astype(int))
  return {"coverage": coverage[idx].tolist(), "risk": risk[idx].tolist()}


def body_params(params: dict[str, Any], head: str = models.HEAD) -> dict[str, Any]:
  """All parameters but the classifier head (what a member shares with its pre-trained point)."""
  return {name: v for name, v in params.items() if name != head}


def curve_fn(config, data: TransferData, model, batch_stats_template):
  """``basin.interpolation_curve`` bound to the target data and the evaluation settings:
  call it with the two end points' params."""
  return functools.partial(
      basin.interpolation_curve, model, batch_stats_template=batch_stats_template,
      train_images=data.target_train.images, test_images=data.target_test.images,
      test_labels=data.target_test.labels, mean=data.mean, std=data.std,
      num_points=config.eval.basin_points, bn_batch_size=config.eval.bn_batch_size,
      eval_batch_size=config.eval.batch_size, strategy=config.execution.member_strategy,
      image_size=config.data.image_size, threshold=config.eval.basin_threshold,
      resize=config.data.resize)


def basin_report(config, data: TransferData, ens: Ensemble,
                 pretrained: dict[str, Any]) -> dict[str, Any]:
  """Where each member lies relative to member 0, its predecessor and its pre-trained point.

  For every member: L2 distance of its body (all but the head) from the pre-trained body it
  started from (checkpoint k for Global DE, 0 otherwise) and of all its weights from member 0, and
  test NLL/accuracy along straight lines, with BatchNorm statistics recomputed at every point:
  pre-trained point -> member (the pre-trained body carrying this member's head, since the
  pre-trained head solves another task), member 0 -> member, member k-1 -> member k.
  """
  params = ens.variables["params"]
  template = members.take(ens.variables["batch_stats"], 0)
  first = members.take(params, 0)
  curve = curve_fn(config, data, ens.model, template)
  body = functools.partial(body_params, head=config.model.head)
  head = config.model.head
  rows = []
  for k in range(ens.num_members):
    member = members.take(params, k)
    source = members.take(pretrained["params"], k if config.method == "global_de" else 0)
    row = {"member": ens.member_names[k],
           "l2_to_pretrained": basin.l2_distance(body(member), body(source)),
           "l2_to_first": basin.l2_distance(member, first),
           "to_pretrained": curve({**source, head: member[head]}, member)}
    if k >= 1:
      row["to_first"] = curve(first, member)
    if k >= 2:
      row["to_previous"] = curve(members.take(params, k - 1), member)
    rows.append(row)
  return {"threshold": config.eval.basin_threshold, "members": rows}


@contextlib.contextmanager
def _training_kept(workdir: str, ens: Ensemble):
  """Says, when the evaluation fails, that the training is saved and how to evaluate it again."""
  try:
    yield
  except resume.Interrupted:
    raise
  except Exception as e:
    logging.error("The evaluation failed (%s: %s). The %d trained member(s) are saved in %s: "
                  "rerunning the same command loads them and runs only the evaluation.",
                  type(e).__name__, e, ens.num_members, os.path.join(workdir, "checkpoints"))
    raise


def _check_workdir(workdir: str) -> None:
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


def run(config, workdir: str, data: TransferData | tuple | None = None, model=None,
        variables=None, command: str | None = None) -> dict[str, Any]:
  """The whole job: validate, load data, pre-train (or import, or reuse), fine-tune, evaluate,
  write outputs.

  ``data``: the config's data when None; a ``TransferData``; or a notebook's arrays
  ``(train_images, train_labels, test_images, test_labels)`` as the target task.
  ``model``: a Flax module of the user's own (see ``use_model``) instead of ``config.model.name``;
  ``variables``: its pre-trained variables (or a list, one per Global DE member) instead of
  pre-training or ``pretrain.checkpoint``. ``command``: the command line that started the run,
  shown in ``report.html``.
  Writes ``results.json``, ``timing.json``, ``learning_rates.png`` and ``ensemble_size.png`` to
  ``workdir`` and returns the results (with timing). SIGTERM/SIGINT during training finish the
  current step, save the progress and raise ``resume.Interrupted``; rerunning resumes.
  """
  if model is not None:
    config = use_model(config, model)
  if variables is not None and config.pretrain.checkpoint:
    # The given network is the one to fine-tune; a config's own (a shipped network) is not.
    logging.info("variables= given: pretrain.checkpoint=%r is not used.",
                 config.pretrain.checkpoint)
    config = config.copy_and_resolve_references()
    config.pretrain.checkpoint = ""
  if isinstance(variables, (list, tuple)):  # the given networks are the checkpoints
    config = config.copy_and_resolve_references()
    config.pretrain.num_checkpoints = len(variables)
  configlib.validate(config, data_given=data is not None)
  distributed.initialize(config.execution)  # with execution.distributed; before any JAX call
  _check_workdir(workdir)
  if not config.pretrain.checkpoint:
    _own_checkpoint_dir(config, workdir)  # a wrong pretrain.checkpoint_dir stops before the data
  writes = distributed.is_writer()  # every process computes; only process 0 writes the outputs
  times = {}
  t = time.perf_counter()
  if data is None:
    data = load_transfer_data(config)
  elif not isinstance(data, TransferData):
    data = data_lib.from_arrays(config, *data)
  _check_batch(config.finetune.batch_size, len(data.target_train), "finetune.batch_size",
               "target training images")
  times["data_s"] = time.perf_counter() - t
  t = time.perf_counter()
  # Weight files are read and checked before anything is written or trained.
  _check_model(config, data)
  if variables is not None:
    pretrained = given_pretrained(config, data, variables)
  else:
    pretrained = import_checkpoints(config, data) if config.pretrain.checkpoint else None
  # Logged once the inputs are read and checked: a bad input's message stays the only line.
  counts = data_lib.class_counts(data)
  logging.info(data_lib.imbalance_line(counts))
  check_memory(config, data, pretraining=pretrained is None and data.source_train is not None)
  times["pretrain_s"] = time.perf_counter() - t
  writer = report.create_writer(workdir) if writes else report.LoggingWriter()
  try:
    with resume.StopRequest() as stop:
      if pretrained is None:
        t = time.perf_counter()
        pretrained = pretrain(config, data, workdir, writer, stop)
        times["pretrain_s"] = time.perf_counter() - t
      t = time.perf_counter()
      ens = finetune(config, data, pretrained, writer, workdir, stop)
      times["finetune_s"] = time.perf_counter() - t
      # Evaluation writes nothing until it is done and a rerun redoes it from the saved
      # ensemble: a stop ends it at once.
      with stop.immediate("evaluating"), _training_kept(workdir, ens):
        t = time.perf_counter()
        results = evaluate(config, data, ens)
        if config.eval.basin:
          results["basin"] = basin_report(config, data, ens, pretrained)
        times["evaluate_s"] = time.perf_counter() - t
  finally:
    writer.close()
  trained = ens.phases + (ens.baseline.phases[1:] if ens.baseline is not None else [])
  results["phases"] = [{"name": p["name"], "members": p["members"],
                        "steps": len(p["lr_table"]), "history": p["history"]} for p in trained]
  results["images_per_class"] = counts
  results["config"] = config.to_dict()
  if writes:
    report.write_json(os.path.join(workdir, "results.json"), results)
  # Timing lives apart so that results.json depends on the config alone (a resumed run's equals
  # an uninterrupted one's).
  results["timing"] = {k: round(v, 2) for k, v in times.items()}
  batch = config.finetune.batch_size
  results["timing"]["phases"] = [  # steady throughput: the first step (compilation) left out
      {"name": p["name"], "seconds": round(p["seconds"], 2),
       "first_step_s": round(p["first_step_seconds"], 2),
       "member_img_per_s": round((len(p["lr_table"]) - 1) * batch * len(p["members"]) /
                                 max(p["seconds"] - p["first_step_seconds"], 1e-9), 1)}
      for p in trained if p["seconds"] and len(p["lr_table"]) > 1]
  if not writes:
    return results
  report.write_json(os.path.join(workdir, "timing.json"), results["timing"])
  report.plot_learning_rates(os.path.join(workdir, "learning_rates.png"), trained)
  report.plot_size_curve(os.path.join(workdir, "ensemble_size.png"), results)
  report.plot_reliability(os.path.join(workdir, "reliability.png"), results["curves"])
  report.plot_risk_coverage(os.path.join(workdir, "risk_coverage.png"), results["curves"])
  if "basin" in results:
    report.plot_interpolation(os.path.join(workdir, "interpolation.png"), results["basin"])
  plots = {"Test metrics against ensemble size": "ensemble_size.png",
           "Reliability (bars labelled with their image counts)": "reliability.png",
           "Selective prediction: risk against coverage": "risk_coverage.png",
           "Learning rate of every member": "learning_rates.png",
           "Loss along straight lines between members": "interpolation.png"}
  report.write_html(os.path.join(workdir, "report.html"), results,
                    {k: os.path.join(workdir, v) for k, v in plots.items()}, command)
  return results
