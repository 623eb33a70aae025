"""The objects a config makes: the network as evaluations call it, the trainer, the progress
checkpointer, the fine-tuning plan, the members' predictions.

``api``, ``evaluation``, ``sweep``, the experiments and the tests build them here, so that a
config means the same objects everywhere::

    trainer = build.make_trainer(config, model, data, config.finetune)
    plan = build.finetune_plan(config, data)
    probs = build.predict_members(config, data, model, variables, data.target_test.images)
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from starsse_jax import augment, inference, methods, optimizers, resume
from starsse_jax.data import TransferData
from starsse_jax.step import Trainer


def make_network(config, data: TransferData, model) -> inference.Network:
  """``model`` with the data's input normalisation and the config's resolution and member
  strategy: what predictions and statistics recomputes call."""
  return inference.Network(model, data.mean, data.std, config.data.image_size,
                           config.data.resize, config.execution.member_strategy)


def make_trainer(config, model, data: TransferData, section) -> Trainer:
  """The trainer of a training ``section`` (``config.pretrain`` or ``config.finetune``): its
  optimizer, augmentation and loss, the data's normalisation, the execution settings."""
  if hasattr(model, "kernel_grad"):
    model = model.clone(kernel_grad=config.execution.kernel_grad)
  return Trainer(
      network=make_network(config, data, model),
      tx=optimizers.make(optimizers.OptimizerConfig.from_config(section)),
      augment=augment.Augment.from_config(config.data, section),
      label_smoothing=section.label_smoothing, seed=config.seed,
      num_devices=config.execution.num_devices, placement=config.data.placement,
      head=config.model.head)


def make_checkpointer(config, trainer: Trainer, data: TransferData, workdir: str | None,
                      kind: str, fields=None) -> resume.RunCheckpointer | None:
  """Progress checkpoints in ``WORKDIR/checkpoints/KIND-HASH``; HASH names the settings that
  determine the run (all of the config, or its top-level ``fields``), so reruns of the same
  config resume and other configs start their own. None without a workdir."""
  if not workdir:
    return None
  settings = config.to_dict()
  fp = resume.fingerprint(settings if fields is None else
                          {k: v for k, v in settings.items() if k in fields})
  variables = trainer.init_variables(0, data.image_shape)
  template = {**variables, "opt_state": trainer.tx.init(variables["params"])}
  return resume.RunCheckpointer(os.path.join(workdir, "checkpoints", f"{kind}-{fp}"), template)


def finetune_plan(config, data: TransferData) -> list[methods.Phase]:
  """The phases ``api.finetune`` runs for ``config.method`` on ``data`` (with the Local DE
  baseline's phase when ``eval.baseline='local_de'``)."""
  budget = methods.Budget.from_config(config.finetune, config.num_members,
                                      len(data.target_train) // config.finetune.batch_size)
  plan = methods.build_plan(config.method, budget)
  if config.eval.baseline == "local_de":
    plan = methods.with_local_de_baseline(plan)
  return plan


def predict_members(config, data: TransferData, model, variables: dict[str, Any], images,
                    passes: int = 0) -> np.ndarray:
  """``[K (x passes), N, C]`` probabilities of stacked variables on ``images`` with the config's
  evaluation settings (``inference.predict``)."""
  return inference.predict(make_network(config, data, model), variables, images,
                           config.eval.batch_size, passes=passes, seed=config.seed)


def model_input_shape(config, data: TransferData) -> tuple[int, ...]:
  """The shape of one image as the model sees it (after ``data.image_size`` resizing)."""
  shape = tuple(data.image_shape)
  if config.data.image_size:
    shape = (config.data.image_size, config.data.image_size, shape[-1])
  return shape
