"""Metrics of members and ensembles: pure functions of predicted probabilities.

``probs`` are softmax outputs ``[N, C]`` (one model) or ``[K, N, C]`` (K members); ``labels`` are
integers ``[N]``. The ensemble's prediction is the mean of its members' probabilities.

- accuracy: fraction with ``argmax p = y``.
- NLL: ``-mean log p_y``.
- ECE (Guo et al. 2017): ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` over ``num_bins`` equal-width
  bins of confidence ``max p`` (a bin holds confidences in ``(lo, hi]``).
- Brier score (Ashukha et al. 2020): ``mean_n sum_c (p_nc - [y_n = c])^2``.
- disagreement: mean over member pairs of the fraction of inputs whose argmax differ.
- KL to the ensemble: ``mean_k mean_n KL(p_k || p_bar)``; it equals the entropy of the ensemble
  minus the members' mean entropy (the ensemble's mutual information).
"""
from __future__ import annotations

import itertools

import numpy as np

_EPS = 1e-12


def ensemble(probs: np.ndarray) -> np.ndarray:
  """Mean of member probabilities ``[K, N, C] -> [N, C]``."""
  return np.mean(np.asarray(probs, np.float64), axis=0)


def accuracy(probs, labels) -> float:
  return float(np.mean(np.argmax(probs, -1) == labels))


def nll(probs, labels) -> float:
  p = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
  return float(-np.mean(np.log(np.maximum(p, _EPS))))


def ece(probs, labels, num_bins: int = 15) -> float:
  probs = np.asarray(probs, np.float64)
  conf = probs.max(-1)
  correct = np.argmax(probs, -1) == labels
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  total = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    in_bin = (conf > lo) & (conf <= hi)
    if in_bin.any():
      total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return float(total)


def brier(probs, labels) -> float:
  probs = np.asarray(probs, np.float64)
  onehot = np.eye(probs.shape[-1])[labels]
  return float(np.mean(np.sum((probs - onehot) ** 2, axis=-1)))


def disagreement(member_probs) -> float:
  preds = np.argmax(member_probs, -1)
  pairs = list(itertools.combinations(range(len(preds)), 2))
  if not pairs:
    return 0.0
  return float(np.mean([np.mean(preds[i] != preds[j]) for i, j in pairs]))


def kl_to_ensemble(member_probs) -> float:
  p = np.asarray(member_probs, np.float64)
  p_bar = p.mean(0, keepdims=True)
  kl = np.sum(p * (np.log(np.maximum(p, _EPS)) - np.log(np.maximum(p_bar, _EPS))), axis=-1)
  return float(kl.mean())


def summary(probs, labels, num_bins: int = 15) -> dict[str, float]:
  """Accuracy, NLL, ECE and Brier score of one model's probabilities ``[N, C]``."""
  return {"accuracy": accuracy(probs, labels), "nll": nll(probs, labels),
          "ece": ece(probs, labels, num_bins), "brier": brier(probs, labels)}


def best_members(test_members, val_members) -> dict[str, dict]:
  """The members an ensemble is measured against, from per-member ``{"accuracy", "nll"}`` dicts
  of the test set and of the validation slice: ``best``, the most accurate and the lowest-NLL
  member on the test set (chosen with the test labels, an optimistic comparison), and
  ``picked``, those picked on the validation slice (the one a user would deploy), each with its
  test accuracy and NLL and the indices ``members`` = (by accuracy, by NLL)."""
  def choose(scores):
    by_acc = int(np.argmax([m["accuracy"] for m in scores]))
    by_nll = int(np.argmin([m["nll"] for m in scores]))
    return {"accuracy": test_members[by_acc]["accuracy"], "nll": test_members[by_nll]["nll"],
            "members": (by_acc, by_nll)}
  return {"best": choose(test_members), "picked": choose(val_members)}


def ensemble_report(member_probs, labels, num_bins: int = 15) -> dict:
  """Per-member metrics, the full ensemble's, its diversity, and the ensemble-size curve.

  ``size_curve[k-1]`` is the ensemble of the first k members (in plan order).
  """
  member_probs = np.asarray(member_probs, np.float64)
  return {
      "members": [summary(p, labels, num_bins) for p in member_probs],
      "ensemble": summary(ensemble(member_probs), labels, num_bins),
      "diversity": {"disagreement": disagreement(member_probs),
                    "kl_to_ensemble": kl_to_ensemble(member_probs)},
      "size_curve": [summary(ensemble(member_probs[:k]), labels, num_bins)
                     for k in range(1, len(member_probs) + 1)],
  }
