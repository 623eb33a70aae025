import math

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from starsse_jax import build, api, basin, inference, members, metrics, models


def test_interpolate_and_distance_by_hand():
  a = {"w": jnp.array([0.0, 0.0]), "b": jnp.array(1.0)}
  b = {"w": jnp.array([3.0, 4.0]), "b": jnp.array(1.0)}
  mid = basin.interpolate(a, b, 0.25)
  np.testing.assert_allclose(mid["w"], [0.75, 1.0])
  np.testing.assert_allclose(mid["b"], 1.0)
  assert basin.l2_distance(a, b) == pytest.approx(5.0)
  assert basin.l2_distance(a, a) == 0.0


def test_barrier_height_by_hand():
  alphas = np.linspace(0, 1, 5)
  assert basin.barrier_height(alphas, [1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
  assert basin.barrier_height(alphas, [1.0, 0.8, 0.7, 0.8, 1.0]) == 0.0  # convex: no barrier
  # Chord from 1 to 2: at alpha 0.5 it is 1.5; the loss there is 2.5 -> barrier 1.0.
  assert basin.barrier_height(alphas, [1.0, 1.5, 2.5, 1.9, 2.0]) == pytest.approx(1.0)
  assert basin.left_basin(0.2) and not basin.left_basin(0.05)
  assert not basin.left_basin(0.2, threshold=0.3)


def test_interpolation_curve_on_a_real_model(synthetic):
  config = tiny_config()
  model = models.build_model(config.model, synthetic.num_target_classes)
  trainer = build.make_trainer(config, model, synthetic, config.finetune)
  a, b = (trainer.init_variables(s, synthetic.image_shape) for s in (0, 1))
  net = inference.Network(model, synthetic.mean, synthetic.std)
  data = (synthetic.target_train.images, (synthetic.target_test.images,
                                          synthetic.target_test.labels))
  settings = basin.CurveSettings(bn_batch_size=8)
  curve = basin.interpolation_curve(net, a["params"], b["params"], a["batch_stats"], *data,
                                    settings)
  assert len(curve["alpha"]) == 11 and all(math.isfinite(v) for v in curve["nll"])
  assert curve["l2_distance"] == pytest.approx(basin.l2_distance(a["params"], b["params"]))
  assert curve["barrier"] >= 0.0
  # A line from a network to itself is flat: every point is the same network.
  flat = basin.interpolation_curve(net, a["params"], a["params"], a["batch_stats"], *data,
                                   basin.CurveSettings(num_points=3, bn_batch_size=8))
  np.testing.assert_allclose(flat["nll"], flat["nll"][0], rtol=1e-5)
  assert flat["barrier"] == pytest.approx(0.0, abs=1e-5) and not flat["left_basin"]
  # The curve's first point is network a on its own, with statistics recomputed the same way.
  one = members.stack([a["params"]])
  stats = inference.recompute_batch_stats(inference.Network(model, synthetic.mean, synthetic.std),
                                          one, members.stack([a["batch_stats"]]),
                                          synthetic.target_train.images, batch_size=8)
  probs = inference.predict(inference.Network(model, synthetic.mean, synthetic.std),
                            {"params": one, "batch_stats": stats}, synthetic.target_test.images)
  assert curve["nll"][0] == pytest.approx(metrics.nll(probs[0], synthetic.target_test.labels),
                                          rel=1e-5)
  with pytest.raises(ValueError, match="at least 2 points"):
    basin.interpolation_curve(net, a["params"], b["params"], a["batch_stats"], *data,
                              basin.CurveSettings(num_points=1))


def test_basin_report_of_a_starsse_ensemble(synthetic):
  config = tiny_config("starsse", members=3)
  config.eval.basin_points = 3
  model = models.build_model(config.model, synthetic.num_source_classes)
  trainer = build.make_trainer(config, model, synthetic, config.pretrain)
  pre = members.stack([trainer.init_variables(3, synthetic.image_shape)])
  ens = api.finetune(config, synthetic, pre)
  report = api.basin_report(config, synthetic, ens, pre)
  rows = report["members"]
  assert [r["member"] for r in rows] == ens.member_names
  assert rows[0]["l2_to_first"] == 0.0 and "to_first" not in rows[0]
  assert "to_first" in rows[1] and "to_previous" in rows[2]
  for row in rows:
    assert row["l2_to_pretrained"] > 0.0  # fine-tuning moved every body
    assert len(row["to_pretrained"]["nll"]) == 3 and row["to_pretrained"]["barrier"] >= 0.0
  # StarSSE branches start from member 0, so they are closer to it than to the pre-trained point.
  assert rows[1]["l2_to_first"] < rows[1]["l2_to_pretrained"]
  # The line member 0 -> member 1 ends at member 1: its last point equals the end of the line
  # pre-trained point -> member 1 (same network, same recomputed statistics).
  assert rows[1]["to_first"]["nll"][-1] == pytest.approx(rows[1]["to_pretrained"]["nll"][-1],
                                                          rel=1e-5)
