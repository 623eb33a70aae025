"""Uncertainty metrics the papers use: pure functions of predicted probabilities.

``probs`` are ``[N, C]`` (one model, or an ensemble's mean) or ``[K, N, C]`` (members); ``labels``
are integers ``[N]``.

- **Temperature scaling** (Guo et al. 2017): ``p_T = softmax(log p / T)``, T fitted to minimise
  NLL. For an ensemble the temperature is applied to the log of the *averaged* probabilities
  (Ashukha et al. 2020, "Pitfalls of In-Domain Uncertainty Estimation"). NLL is convex in
  ``1 / T``, so it is unimodal in ``log T``: a golden-section search on ``log T`` finds the optimum
  without scipy. **Calibrated NLL** = NLL at the fitted T, on data the fit did not see.
- **DEE** (Ashukha et al. 2020): how many Deep-Ensemble members reach a method's calibrated NLL,
  linearly interpolated between integer sizes, 1 when worse than one network, linearly
  extrapolated past the largest measured size.
- **OOD detection**: a score per input, higher = more likely out of distribution: ``1 - max p``
  (max-softmax), entropy, mutual information (ensembles: entropy of the mean minus the mean
  entropy). AUROC and AUPR (out-of-distribution as the positive class) and the FPR at 95% TPR.
- **Selective prediction**: inputs sorted by confidence (max p, descending); risk at coverage c is
  the error rate of the most confident ``c N``; AURC is the mean risk over the N coverages
  ``1/N .. 1`` (Geifman et al. 2019).
"""
from __future__ import annotations

import math

import numpy as np

from starsse_jax import metrics

_EPS = 1e-12


# ------------------------------------------------------------------------------ temperature


def log_probs(probs) -> np.ndarray:
  return np.log(np.maximum(np.asarray(probs, np.float64), _EPS))


def apply_temperature(probs, temperature: float) -> np.ndarray:
  """``softmax(log p / T)``: ``probs`` [N, C] (an ensemble's mean already averaged)."""
  z = log_probs(probs) / temperature
  z -= z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _nll_at(logp, labels, temperature) -> float:
  z = logp / temperature
  m = z.max(-1)
  lse = m + np.log(np.exp(z - m[:, None]).sum(-1))
  return float(np.mean(lse - z[np.arange(len(labels)), labels]))


def fit_temperature(probs, labels, bounds=(1e-2, 1e2), tol: float = 1e-7) -> float:
  """The T minimising ``NLL(softmax(log p / T))``: golden-section search on ``log T`` in
  ``bounds`` (NLL is unimodal in ``log T``)."""
  logp = log_probs(probs)
  labels = np.asarray(labels)
  lo, hi = math.log(bounds[0]), math.log(bounds[1])
  ratio = (math.sqrt(5) - 1) / 2
  a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
  fa, fb = _nll_at(logp, labels, math.exp(a)), _nll_at(logp, labels, math.exp(b))
  while hi - lo > tol:
    if fa <= fb:
      hi, b, fb = b, a, fa
      a = hi - ratio * (hi - lo)
      fa = _nll_at(logp, labels, math.exp(a))
    else:
      lo, a, fa = a, b, fb
      b = lo + ratio * (hi - lo)
      fb = _nll_at(logp, labels, math.exp(b))
  return math.exp((lo + hi) / 2)


def calibrated(summary_fn, fit_probs, fit_labels, eval_probs, eval_labels) -> dict:
  """``summary_fn`` (e.g. ``metrics.summary``) of ``eval_probs`` at the temperature fitted on
  ``(fit_probs, fit_labels)``, with the temperature."""
  t = fit_temperature(fit_probs, fit_labels)
  return {"temperature": t, **summary_fn(apply_temperature(eval_probs, t), eval_labels)}


def calibrated_nll(fit_probs, fit_labels, eval_probs, eval_labels) -> float:
  """NLL of ``eval_probs`` at the temperature fitted on ``(fit_probs, fit_labels)``."""
  t = fit_temperature(fit_probs, fit_labels)
  return metrics.nll(apply_temperature(eval_probs, t), eval_labels)


def test_split_calibrated(summary_fn, probs, labels, repeats: int = 5, seed: int = 0) -> dict:
  """Ashukha et al.'s protocol: shuffle the test set, fit T on one half and evaluate on the
  other, both ways (2-fold), ``repeats`` times; the mean of every metric and of T."""
  probs, labels = np.asarray(probs), np.asarray(labels)
  rng = np.random.default_rng(seed)
  runs = []
  for _ in range(repeats):
    perm = rng.permutation(len(labels))
    halves = perm[:len(perm) // 2], perm[len(perm) // 2:]
    for fit, ev in (halves, halves[::-1]):
      runs.append(calibrated(summary_fn, probs[fit], labels[fit], probs[ev], labels[ev]))
  return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


# ------------------------------------------------------------------------------ DEE


def deep_ensemble_equivalent(score: float, reference) -> float:
  """DEE of a method scoring ``score`` (lower is better, e.g. calibrated NLL) against the
  reference curve ``reference[l-1]`` = Deep Ensemble of l members.

  The first l with ``reference[l-1] <= score`` gives ``l - 1 + (reference[l-2] - score) /
  (reference[l-2] - reference[l-1])``; worse than one network gives 1; better than the largest
  ensemble extrapolates the last segment (``DEE = max(l-1, l + (s - DE(l)) / (DE(l) - DE(l-1)))``
  as the reference code writes it).
  """
  ref = np.asarray(reference, np.float64)
  if not len(ref) or score >= ref[0]:
    return 1.0
  for l in range(2, len(ref) + 1):
    if ref[l - 1] <= score:
      prev, cur = ref[l - 2], ref[l - 1]
      return float(l - 1 + (prev - score) / (prev - cur)) if prev != cur else float(l)
  if len(ref) == 1:
    return 1.0
  prev, cur = ref[-2], ref[-1]
  slope = prev - cur  # NLL gained by the last added member
  if slope <= 0:
    return float(len(ref))
  return float(len(ref) + (cur - score) / slope)


# ------------------------------------------------------------------------------ OOD


def entropy(probs) -> np.ndarray:
  p = np.asarray(probs, np.float64)
  return -np.sum(p * np.log(np.maximum(p, _EPS)), axis=-1)


def ood_scores(member_probs) -> dict[str, np.ndarray]:
  """Scores per input (higher = more likely OOD) from members' probabilities ``[K, N, C]``;
  mutual information only for K > 1."""
  member_probs = np.asarray(member_probs, np.float64)
  mean = member_probs.mean(0)
  scores = {"max_softmax": 1.0 - mean.max(-1), "entropy": entropy(mean)}
  if len(member_probs) > 1:
    scores["mutual_information"] = entropy(mean) - entropy(member_probs).mean(0)
  return scores


def _ranks(x: np.ndarray) -> np.ndarray:
  """Average ranks (1-based) with ties sharing their mean rank."""
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  ranks = np.empty(len(x), np.float64)
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = (s + e + 1) / 2
  return ranks


def auroc(scores_in, scores_out) -> float:
  """P(score_out > score_in) + P(tie)/2: the Mann-Whitney statistic, OOD positive."""
  s_in, s_out = np.asarray(scores_in, np.float64), np.asarray(scores_out, np.float64)
  ranks = _ranks(np.concatenate([s_in, s_out]))
  n_in, n_out = len(s_in), len(s_out)
  return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def _curve(scores_in, scores_out):
  """(TPR, FPR, precision) at every distinct threshold, from the highest score down."""
  scores = np.concatenate([scores_in, scores_out]).astype(np.float64)
  positive = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
  order = np.argsort(-scores, kind="mergesort")
  scores, positive = scores[order], positive[order]
  last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]  # end of each tie
  tp = np.cumsum(positive)[last]
  fp = np.cumsum(1 - positive)[last]
  return tp / len(scores_out), fp / len(scores_in), tp / (tp + fp)


def aupr(scores_in, scores_out) -> float:
  """Average precision with OOD as the positive class: ``sum_k (R_k - R_{k-1}) P_k``."""
  tpr, _, precision = _curve(scores_in, scores_out)
  return float(np.sum(np.diff(np.r_[0.0, tpr]) * precision))


def fpr_at_tpr(scores_in, scores_out, tpr_level: float = 0.95) -> float:
  """The false-positive rate at the first threshold whose TPR reaches ``tpr_level``."""
  tpr, fpr, _ = _curve(scores_in, scores_out)
  return float(fpr[np.argmax(tpr >= tpr_level - 1e-12)])


def ood_report(member_probs_in, member_probs_out) -> dict[str, dict[str, float]]:
  """AUROC, AUPR and FPR@95%TPR of every score, in- vs out-of-distribution inputs."""
  scores_in, scores_out = ood_scores(member_probs_in), ood_scores(member_probs_out)
  return {name: {"auroc": auroc(scores_in[name], scores_out[name]),
                 "aupr": aupr(scores_in[name], scores_out[name]),
                 "fpr_at_95_tpr": fpr_at_tpr(scores_in[name], scores_out[name])}
          for name in scores_in}


# ------------------------------------------------------------------------------ selective


def risk_coverage(probs, labels) -> tuple[np.ndarray, np.ndarray]:
  """(coverage, risk) at coverages ``1/N .. 1``, most confident inputs first."""
  probs = np.asarray(probs, np.float64)
  order = np.argsort(-probs.max(-1), kind="mergesort")
  errors = (np.argmax(probs, -1) != np.asarray(labels))[order]
  n = np.arange(1, len(errors) + 1)
  return n / len(errors), np.cumsum(errors) / n


def selective_report(probs, labels, coverages=(0.8, 0.9, 0.95)) -> dict[str, float]:
  """AURC and accuracy at the given coverages."""
  coverage, risk = risk_coverage(probs, labels)
  out = {"aurc": float(risk.mean())}
  for c in coverages:
    k = max(1, int(math.floor(c * len(risk) + 1e-9)))
    out[f"accuracy_at_{round(c * 100)}"] = float(1.0 - risk[k - 1])
  return out


# ------------------------------------------------------------------------------ reports


def reliability_bins(probs, labels, num_bins: int = 15) -> dict[str, list[float]]:
  """Per equal-width confidence bin (as ``metrics.ece``): mean confidence, accuracy, count."""
  probs = np.asarray(probs, np.float64)
  conf = probs.max(-1)
  correct = np.argmax(probs, -1) == np.asarray(labels)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  out = {"confidence": [], "accuracy": [], "count": []}
  for lo, hi in zip(edges[:-1], edges[1:]):
    in_bin = (conf > lo) & (conf <= hi)
    out["count"].append(int(in_bin.sum()))
    out["confidence"].append(float(conf[in_bin].mean()) if in_bin.any() else (lo + hi) / 2)
    out["accuracy"].append(float(correct[in_bin].mean()) if in_bin.any() else 0.0)
  return out


def model_report(test, test_labels, val=None, val_labels=None, ood=None, num_bins: int = 15,
                 test_members=None, ood_members=None) -> dict:
  """Calibrated metrics (T fitted on the validation slice, and Ashukha's test-split protocol),
  selective prediction and OOD detection of one model's test probabilities ``[N, C]``.

  For an ensemble, pass the averaged probabilities and ``test_members`` / ``ood_members``
  ``[K, N, C]`` (mutual information needs the members).
  """
  summary = lambda p, y: metrics.summary(p, y, num_bins)
  out = {"selective": selective_report(test, test_labels),
         "calibrated_test_split": test_split_calibrated(summary, test, test_labels)}
  if val is not None:
    out["calibrated"] = calibrated(summary, val, val_labels, test, test_labels)
  if ood is not None:
    out["ood"] = ood_report(test_members if test_members is not None else np.asarray(test)[None],
                            ood_members if ood_members is not None else np.asarray(ood)[None])
  return out
