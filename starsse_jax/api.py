"""The functional API: pre-train, fine-tune an ensemble with a method, evaluate it and its soups.

A notebook uses these directly::

    config = configs.load("starsse")
    data = load_transfer_data(config)
    pretrained = pretrain(config, data, workdir)
    ens = finetune(config, data, pretrained)
    results = evaluate(config, data, ens)

``run`` does all of it and writes the outputs; ``python -m starsse_jax.main`` is a thin layer over
it. What a run is given is checked in ``inputs``, the objects a config makes are built in
``build``, the evaluation is ``evaluation``'s, the outputs are written by ``report``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from starsse_jax import (build, checkpoint, configlib, data as data_lib, distributed, inputs,
                         members, methods, models, report, resume, train)
from starsse_jax.build import make_checkpointer, make_trainer
from starsse_jax.data import TransferData, from_arrays, load_transfer_data
from starsse_jax.evaluation import Ensemble, basin_report, evaluate, make_soups
from starsse_jax.inputs import given_pretrained, import_checkpoints, use_model

__all__ = ["Ensemble", "load_transfer_data", "from_arrays", "import_checkpoints", "use_model",
           "given_pretrained", "pretrain", "finetune", "evaluate", "make_soups", "basin_report",
           "run"]


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
  directory = inputs.own_checkpoint_dir(config, workdir)
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
  inputs.check_batch(config.pretrain.batch_size, len(data.source_train), "pretrain.batch_size",
               "source training images")
  pt = config.pretrain
  plan = methods.pretrain_plan(needed, len(data.source_train) // pt.batch_size, pt.epochs, pt.lr,
                               pt.warmup_epochs, pt.warmup_lr, pt.schedule_unit == "epoch")
  logging.info("Pre-training %d model(s) on %d source images.", needed, len(data.source_train))
  variables, _ = train.run_plan(
      trainer, plan, data.source_train, config.pretrain.batch_size,
      actions=_actions(config, writer, stop),
      checkpointer=make_checkpointer(config, trainer, data, workdir, "pretrain",
                                     ("seed", "data", "model", "pretrain")))
  if directory:
    checkpoint.save(directory, 0, variables, {
        "model": config.model.to_dict(), "num_checkpoints": needed,
        "num_classes": data.num_source_classes, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    logging.info("Saved pre-trained checkpoint(s) to %s.", directory)
  return variables


def _actions(config, writer, stop) -> train.Actions:
  """The phase loops' periodic actions as the config sets them."""
  return train.Actions(log_every=config.log_every_steps, writer=writer,
                       save_every=config.checkpoint_every_steps, stop=stop,
                       drop_diverged=config.drop_diverged_members)


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
  plan = build.finetune_plan(config, data)
  model = models.build_model(config.model, data.num_target_classes)
  trainer = make_trainer(config, model, data, config.finetune)
  checkpointer = make_checkpointer(config, trainer, data, workdir, config.method)
  variables, phases = train.run_plan(trainer, plan, data.target_train,
                                     config.finetune.batch_size, pretrained,
                                     _actions(config, writer, stop), checkpointer)
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
  config = _configured(config, model, variables)
  configlib.validate(config, data_given=data is not None)
  distributed.initialize(config.execution)  # with execution.distributed; before any JAX call
  inputs.check_workdir(workdir)
  if not config.pretrain.checkpoint:  # a wrong pretrain.checkpoint_dir stops before the data
    inputs.own_checkpoint_dir(config, workdir)
  writes = distributed.is_writer()  # every process computes; only process 0 writes the outputs
  times = {}
  data, pretrained, counts = _read_inputs(config, data, variables, times)
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
  results["timing"] = report.timing(times, trained, config.finetune.batch_size)
  if writes:
    report.write_outputs(workdir, results, trained, command)
  return results


def _configured(config, model, variables):
  """``config`` with a user's ``model`` registered, and with the given ``variables`` replacing
  its own ``pretrain.checkpoint`` (a list of them sets ``pretrain.num_checkpoints``)."""
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
  return config


def _read_inputs(config, data, variables, times: dict[str, float]):
  """The data, the pre-trained variables (None when the run pre-trains) and the images per class,
  read and checked before anything is written or trained: the batch size, the model on the
  data's images, the weights, the memory. Adds the seconds spent to ``times``."""
  t = time.perf_counter()
  if data is None:
    data = load_transfer_data(config)
  elif not isinstance(data, TransferData):
    data = data_lib.from_arrays(config, *data)
  inputs.check_batch(config.finetune.batch_size, len(data.target_train), "finetune.batch_size",
                     "target training images")
  times["data_s"] = time.perf_counter() - t
  t = time.perf_counter()
  inputs.check_model(config, data)
  if variables is not None:
    pretrained = given_pretrained(config, data, variables)
  else:
    pretrained = import_checkpoints(config, data) if config.pretrain.checkpoint else None
  # Logged once the inputs are read and checked: a bad input's message stays the only line.
  counts = data_lib.class_counts(data)
  logging.info(data_lib.imbalance_line(counts))
  inputs.check_memory(config, data,
                      pretraining=pretrained is None and data.source_train is not None)
  times["pretrain_s"] = time.perf_counter() - t
  return data, pretrained, counts
