"""Evaluation of a fine-tuned ensemble: members, the ensemble at every size, the greedy ensemble,
soups (uniform, greedy, learned, AME), calibration and OOD detection, DEE, low-precision
ensembles, the Local DE baseline beside the method, and the basin report.

Everything here reads a trained ``Ensemble`` and the data, and returns JSON-ready dicts::

    results = evaluation.evaluate(config, data, ens)
    results["basin"] = evaluation.basin_report(config, data, ens, pretrained)
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import numpy as np
import optax

from starsse_jax import (basin, build, inference, low_precision, members, methods, metrics,
                         models, soups, uncertainty)
from starsse_jax.build import model_input_shape, predict_members
from starsse_jax.data import TransferData


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
  net = build.make_network(config, data, model)
  return lambda params, stats: inference.recompute_batch_stats(
      net, params, stats, data.target_train.images, config.eval.bn_batch_size)


def _learned_soup(config, data: TransferData, ens: Ensemble):
  """The learned soup's parameters and mixing report. While the mixing is learned, BatchNorm
  normalises each validation batch by its own statistics (train mode): the members' running
  statistics do not describe a weight mixture, and the mixture changes every step. The final
  soup's statistics are recomputed on the training images like every soup's. A model without
  BatchNorm is simply evaluated."""
  template = members.take(ens.variables["batch_stats"], 0)
  model = ens.model
  has_bn = bool(jax.tree.leaves(template))

  net = build.make_network(config, data, model)

  def logits_fn(params, images):
    x = net.view(images)
    logits, _ = models.apply(model, {"params": params, "batch_stats": template}, x,
                             train=has_bn, stochastic=False, mutable=["batch_stats"])
    return logits.astype(np.float32)

  fit = soups.LearnedSoup(epochs=config.eval.learned_soup_epochs,
                          batch_size=config.eval.learned_soup_batch_size,
                          lr=config.eval.learned_soup_lr, seed=config.seed)
  return soups.learned_soup(ens.variables["params"], logits_fn, data.target_val.images,
                            data.target_val.labels, fit)


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
        ens.variables,
        lambda variables, images: predict_members(config, data, ens.model, variables, images),
        _recompute_fn(config, data, ens.model),
        (data.target_test.images, test_y), (data.target_val.images, val_y),
        low_precision.Settings(tuple(config.eval.low_precision_bits),
                               config.eval.low_precision_samples, config.seed,
                               config.eval.low_precision_scale == "channel", bins))
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
  settings = basin.CurveSettings(config.eval.basin_points, config.eval.bn_batch_size,
                                 config.eval.batch_size, config.eval.basin_threshold)
  return functools.partial(
      basin.interpolation_curve, build.make_network(config, data, model),
      batch_stats_template=batch_stats_template, train_images=data.target_train.images,
      test=(data.target_test.images, data.target_test.labels), settings=settings)


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
    source = members.take(pretrained["params"],
                          k if methods.get(config.method).checkpoint_per_member else 0)
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
