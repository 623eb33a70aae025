"""Uncertainty metrics against closed forms, hand-worked values and scikit-learn."""
import math

import numpy as np
import pytest

from starsse_jax import build, metrics, uncertainty


def _two_class(a=3.0, q=0.75, n=400):
  """n inputs with logits (a, 0); a fraction q of them has label 0."""
  logits = np.tile([a, 0.0], (n, 1))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  labels = (np.arange(n) >= q * n).astype(int)
  return probs, labels


def test_temperature_fit_finds_the_closed_form_optimum():
  # NLL is minimised where sigmoid(a / T) = q, i.e. T = a / logit(q).
  for a, q in ((3.0, 0.75), (1.0, 0.9), (6.0, 0.6)):
    probs, labels = _two_class(a, q)
    expected = a / math.log(q / (1 - q))
    assert uncertainty.fit_temperature(probs, labels) == pytest.approx(expected, rel=1e-5)
    scaled = uncertainty.apply_temperature(probs, expected)
    np.testing.assert_allclose(scaled[:, 0], q, rtol=1e-9)
  probs, _ = _two_class()
  np.testing.assert_allclose(uncertainty.apply_temperature(probs, 1.0), probs, rtol=1e-12)


def test_calibrated_nll_never_exceeds_the_raw_nll_on_the_fitting_data():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(500, 5)) * 4
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  labels = rng.integers(0, 5, 500)
  fitted = uncertainty.calibrated(metrics.summary, probs, labels, probs, labels)
  assert fitted["nll"] <= metrics.nll(probs, labels) + 1e-12
  assert fitted["temperature"] > 1  # over-confident random logits get softened
  split = uncertainty.test_split_calibrated(metrics.summary, probs, labels, repeats=5)
  assert split == uncertainty.test_split_calibrated(metrics.summary, probs, labels, repeats=5)
  assert set(split) == {"temperature", "accuracy", "nll", "ece", "brier"}
  assert split["nll"] >= fitted["nll"] - 1e-9  # held-out halves cannot beat the in-sample fit


def test_deep_ensemble_equivalent_hand_worked():
  ref = [1.0, 0.8, 0.7, 0.65]
  dee = uncertainty.deep_ensemble_equivalent
  assert dee(0.75, ref) == pytest.approx(2.5)  # halfway between 2 and 3 members
  assert dee(0.8, ref) == pytest.approx(2.0)
  assert dee(0.68, ref) == pytest.approx(3.4)
  assert dee(1.2, ref) == 1.0  # worse than one network
  assert dee(1.0, ref) == 1.0
  assert dee(0.6, ref) == pytest.approx(5.0)  # extrapolates the last step (0.05 per member)
  assert dee(0.5, [1.0, 0.8, 0.8]) == 3.0  # a flat last step cannot be extrapolated


def test_auroc_aupr_fpr_match_scikit_learn_on_random_and_tied_scores():
  sk = pytest.importorskip("sklearn.metrics", reason="test dependency from requirements-test")
  rng = np.random.default_rng(1)
  for tied in (False, True):
    s_in = rng.normal(0, 1, 300)
    s_out = rng.normal(0.7, 1, 200)
    if tied:
      s_in, s_out = np.round(s_in), np.round(s_out)
    y = np.r_[np.zeros(300), np.ones(200)]
    s = np.r_[s_in, s_out]
    assert uncertainty.auroc(s_in, s_out) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert uncertainty.aupr(s_in, s_out) == pytest.approx(sk.average_precision_score(y, s),
                                                          abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    assert uncertainty.fpr_at_tpr(s_in, s_out) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
  assert uncertainty.auroc([0, 0], [1, 1]) == 1.0 and uncertainty.auroc([1], [1]) == 0.5


def test_ood_scores_and_mutual_information():
  rng = np.random.default_rng(2)
  p = rng.dirichlet(np.ones(4), size=(3, 50))
  scores = uncertainty.ood_scores(p)
  np.testing.assert_allclose(scores["mutual_information"].mean(), metrics.kl_to_ensemble(p),
                             rtol=1e-10)  # MI = mean KL of members to their mean
  same = uncertainty.ood_scores(np.stack([p[0]] * 3))
  np.testing.assert_allclose(same["mutual_information"], 0, atol=1e-12)
  assert "mutual_information" not in uncertainty.ood_scores(p[:1])
  np.testing.assert_allclose(scores["max_softmax"], 1 - p.mean(0).max(-1))


def test_risk_coverage_and_aurc_hand_worked():
  # Confidences 0.9, 0.8, 0.7, 0.6 with correct, wrong, correct, wrong predictions.
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
  labels = np.array([0, 0, 0, 0])
  coverage, risk = uncertainty.risk_coverage(probs, labels)
  np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(risk, [0, 0.5, 1 / 3, 0.5])
  report = uncertainty.selective_report(probs, labels, coverages=(0.5, 0.75))
  assert report["aurc"] == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
  assert report["accuracy_at_50"] == 0.5 and report["accuracy_at_75"] == pytest.approx(2 / 3)


def test_evaluate_reports_calibration_dee_ood_and_selective_prediction(synthetic, tmp_path):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from starsse_jax import api, members, models, report  # pylint: disable=g-import-not-at-top
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = tiny_config("local_de", members=3)
  config.eval.ame_optimizer = "sgd"  # AME with step 1/i: the uniform soup, through the pipeline
  model = models.build_model(config.model, synthetic.num_source_classes)
  trainer = build.make_trainer(config, model, synthetic, config.pretrain)
  pre = members.stack([trainer.init_variables(0, synthetic.image_shape)])
  data = dataclasses.replace(synthetic, ood=synthetic.source_train, ood_name="synthetic source")
  ens = api.finetune(config, data, pre)
  results = api.evaluate(config, data, ens)
  u = results["uncertainty"]
  assert u["ood_set"] == "synthetic source"
  for part in u["members"] + [u["ensemble"]] + [s["uncertainty"] for s in results["soups"].values()]:
    assert part["calibrated"]["temperature"] > 0 and np.isfinite(part["calibrated"]["nll"])
    assert 0 <= part["ood"]["max_softmax"]["auroc"] <= 1
    assert 0 <= part["selective"]["aurc"] <= 1
    assert set(part["calibrated_test_split"]) >= {"nll", "ece", "temperature"}
  assert "mutual_information" in u["ensemble"]["ood"]
  ame, uniform = results["soups"]["ame"]["test"], results["soups"]["uniform"]["test"]
  assert ame["accuracy"] == uniform["accuracy"]
  assert ame["nll"] == pytest.approx(uniform["nll"], abs=1e-4)
  greedy = results["greedy_ensemble"]
  assert greedy["members"] and greedy["val_accuracy"] >= max(
      m["accuracy"] for m in results["val"]["members"])
  assert "greedy ensemble (" in report.table(results)
  assert len(u["size_curve_calibrated_nll"]) == 3
  # A Local DE is its own DEE reference: its one-member point is worth exactly one member.
  assert results["dee"]["size_curve"][0] == 1.0
  assert all(d >= 1.0 for d in results["dee"]["size_curve"])
  table = report.table(results)
  assert "| cal. nll | ood auroc |" in table and "OOD set: synthetic source" in table
  report.plot_reliability(str(tmp_path / "r.png"), results["curves"])
  report.plot_risk_coverage(str(tmp_path / "rc.png"), results["curves"])
  assert (tmp_path / "r.png").stat().st_size > 1000 and (tmp_path / "rc.png").stat().st_size > 1000
  # Another method takes its DEE reference from a Local DE's results.json.
  path = tmp_path / "local.json"
  report.write_json(str(path), results)
  config.method, config.eval.dee_reference = "starsse", str(path)
  ens = api.finetune(config, data, pre)
  assert len(api.evaluate(config, data, ens)["dee"]["members"]) == 3


def test_a_local_de_baseline_is_trained_and_reported_beside_the_method(synthetic):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from starsse_jax import api, members, models, report  # pylint: disable=g-import-not-at-top
  config = tiny_config("starsse", members=3)
  config.eval.baseline = "local_de"
  config.finetune.cycle_ratio = 1.0  # equal compute: a Local DE of 3
  model = models.build_model(config.model, synthetic.num_source_classes)
  trainer = build.make_trainer(config, model, synthetic, config.pretrain)
  pre = members.stack([trainer.init_variables(0, synthetic.image_shape)])
  ens = api.finetune(config, synthetic, pre)
  assert ens.member_names == ["finetune[0]", "star_branches[0]", "star_branches[1]"]
  local = ens.baseline
  assert local.member_names == ["finetune[0]", "local_de_baseline[0]", "local_de_baseline[1]"]
  params, local_params = ens.variables["params"], local.variables["params"]
  first = lambda tree, k: members.take(tree, k)["head"]["kernel"]
  np.testing.assert_array_equal(first(params, 0), first(local_params, 0))  # shared first model
  assert not np.allclose(first(local_params, 1), first(local_params, 0))
  assert not np.allclose(first(local_params, 1), first(local_params, 2))
  results = api.evaluate(config, synthetic, ens)
  b = results["baseline"]
  assert b["method"] == "local_de" and len(b["test"]["members"]) == 3 and "soups" not in b
  assert b["test"]["members"][0] == results["test"]["members"][0]
  assert results["dee"]["reference"] == "this run's Local DE baseline"
  assert results["dee"]["size_curve"][0] == pytest.approx(1.0)  # member 0 is one Local DE member
  assert "| local DE of 3 (baseline) |" in report.table(results)
  assert "local DE baseline: members' accuracy" in report.table(results)
  config.method = "local_de"
  with pytest.raises(ValueError, match="eval.baseline"):
    from starsse_jax import configlib  # pylint: disable=g-import-not-at-top
    configlib.validate(config)


def test_an_ood_set_that_overlaps_the_test_set_is_refused(tmp_path):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from starsse_jax import data, sources  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x_test = rng.integers(0, 256, (12, 6, 6, 3)).astype(np.uint8)
  x_train = rng.integers(0, 256, (30, 6, 6, 3)).astype(np.uint8)
  y = lambda n: np.arange(n) % 3
  config = tiny_config()
  config.data.target_train_per_class, config.data.target_val_per_class = 0, 2
  np.savez(tmp_path / "ood.npz", train_images=x_train[:3], train_labels=y(3),
           test_images=np.concatenate([x_test[:1], x_train[:5]]), test_labels=y(6))
  config.eval.ood = f"npz:{tmp_path}/ood.npz"
  with pytest.raises(sources.DatasetError, match="shares 1 image"):
    data.from_arrays(config, x_train, y(30), x_test, y(12))
  np.savez(tmp_path / "ood.npz", train_images=x_train[:3], train_labels=y(3),
           test_images=rng.integers(0, 256, (5, 8, 8, 1)).astype(np.uint8), test_labels=y(5))
  d = data.from_arrays(config, x_train, y(30), x_test, y(12))
  assert d.ood.images.shape == (5, 6, 6, 3)  # resized to the target's size, grey -> RGB
  config.eval.ood = "none"
  assert data.from_arrays(config, x_train, y(30), x_test, y(12)).ood is None
