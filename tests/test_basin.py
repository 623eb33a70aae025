import math

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from starsse_jax import api, basin, inference, members, metrics, models


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
  trainer = api._trainer(config, model, synthetic, config.finetune)  # pylint: disable=protected-access
  a, b = (trainer.init_variables(s, synthetic.image_shape) for s in (0, 1))
  kwargs = dict(train_images=synthetic.target_train.images, test_images=synthetic.target_test.images,
                test_labels=synthetic.target_test.labels, mean=synthetic.mean, std=synthetic.std,
                bn_batch_size=8)
  curve = basin.interpolation_curve(model, a["params"], b["params"], a["batch_stats"], **kwargs)
  assert len(curve["alpha"]) == 11 and all(math.isfinite(v) for v in curve["nll"])
  assert curve["l2_distance"] == pytest.approx(basin.l2_distance(a["params"], b["params"]))
  assert curve["barrier"] >= 0.0
  # A line from a network to itself is flat: every point is the same network.
  flat = basin.interpolation_curve(model, a["params"], a["params"], a["batch_stats"],
                                   num_points=3, **kwargs)
  np.testing.assert_allclose(flat["nll"], flat["nll"][0], rtol=1e-5)
  assert flat["barrier"] == pytest.approx(0.0, abs=1e-5) and not flat["left_basin"]
  # The curve's first point is network a on its own, with statistics recomputed the same way.
  one = members.stack([a["params"]])
  stats = inference.recompute_batch_stats(model, one, members.stack([a["batch_stats"]]),
                                          synthetic.target_train.images, synthetic.mean,
                                          synthetic.std, batch_size=8)
  probs = inference.predict(model, {"params": one, "batch_stats": stats},
                            synthetic.target_test.images, synthetic.mean, synthetic.std)
  assert curve["nll"][0] == pytest.approx(metrics.nll(probs[0], synthetic.target_test.labels),
                                          rel=1e-5)
  with pytest.raises(ValueError, match="at least 2 points"):
    basin.interpolation_curve(model, a["params"], b["params"], a["batch_stats"], num_points=1,
                              **kwargs)
