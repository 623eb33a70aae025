"""The transformer recipe's pieces against hand-computed values or independent implementations."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from starsse_jax import augment, losses, methods, optimizers, schedules


def test_warmup_cosine_per_epoch_matches_the_official_linear_warmup_cosine():
  # The official code's LambdaLR, stepped once per epoch: lr 1e-4, 10 warm-up epochs from 5e-7,
  # 102 epochs. Hand-computed values at epochs 0, 5, 10, 56, 101.
  spe = 3
  s = schedules.warmup_cosine(1e-4, 102 * spe, 10 * spe, 5e-7, unit_steps=spe)
  table = schedules.table([s], 102 * spe)[:, 0]
  expected = {0: 5e-7, 5: 0.5 * 5e-7 + 0.5 * 1e-4, 10: 1e-4, 56: 0.5e-4,
              101: 1e-4 * 0.5 * (1 + np.cos(np.pi * 91 / 92))}
  for epoch, value in expected.items():
    np.testing.assert_allclose(table[epoch * spe:(epoch + 1) * spe], value, rtol=1e-5)
  assert table[9 * spe] == pytest.approx(0.1 * 5e-7 + 0.9 * 1e-4, rel=1e-5)


def test_warmup_cosine_without_warmup_is_the_cosine_cycle():
  a = schedules.table([schedules.warmup_cosine(0.1, 37)], 37)
  b = schedules.table([schedules.cosine_cycle(0.1, 37)], 37)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)  # float32 (optax) vs float64


def test_only_the_first_fine_tuning_warms_up_and_cycles_do_not():
  b = methods.Budget(num_members=3, steps_per_epoch=4, epochs=10, lr=1e-3, warmup_epochs=2,
                     warmup_lr=1e-5, per_epoch=True, lr_ratio=1.0, cycle_ratio=1.0)
  plan = methods.build_plan("starsse", b)
  first = schedules.table(plan[0].schedules, plan[0].num_steps)[:, 0]
  cycle = schedules.table(plan[1].schedules, plan[1].num_steps)[:, 0]
  assert first[0] == pytest.approx(1e-5) and first[8] == pytest.approx(1e-3)
  assert cycle[0] == pytest.approx(1e-3) and np.all(np.diff(cycle) <= 0)
  assert len(set(first[:4].tolist())) == 1  # constant within an epoch


def _params():
  return {"cls_token": jnp.ones((1, 1, 4)), "pos_embed": jnp.ones((1, 5, 4)),
          "blocks_0": {"attn": {"relative_position_bias_table": jnp.ones((9, 2)),
                                "qkv": {"kernel": jnp.ones((4, 12)), "bias": jnp.ones(12)}},
                       "norm1": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}},
          "head": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}


def test_adamw_decays_only_matrices_that_are_not_embeddings_or_tables():
  mask = optimizers.decay_mask(_params())
  flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  decayed = sorted(k for k, v in flat.items() if v)
  assert decayed == ["['blocks_0']['attn']['qkv']['kernel']", "['head']['kernel']"]


def test_adamw_step_equals_pytorch_adamw_by_hand():
  cfg = optimizers.OptimizerConfig("adamw", weight_decay=0.25, b1=0.9, b2=0.999, eps=1e-8)
  tx = optimizers.make(cfg)
  params = {"w": jnp.asarray([[1.0, -2.0]]), "b": jnp.asarray([0.5])}
  grads = {"w": jnp.asarray([[0.3, 0.1]]), "b": jnp.asarray([-0.2])}
  state = tx.init(params)
  state = state._replace(hyperparams={**state.hyperparams, "learning_rate": 1e-2})
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  # PyTorch AdamW, step 1: m_hat = g, v_hat = g^2, w -= lr (g / (|g| + eps) + wd w) (decayed)
  lr, wd = 1e-2, 0.25
  w, g = np.array([[1.0, -2.0]]), np.array([[0.3, 0.1]])
  np.testing.assert_allclose(new["w"], w - lr * (g / (np.abs(g) + 1e-8) + wd * w), rtol=1e-6)
  np.testing.assert_allclose(new["b"], 0.5 - lr * (-0.2 / (0.2 + 1e-8)), rtol=1e-6)  # no decay


def test_gradient_clipping_scales_to_the_global_norm():
  tx = optimizers.make(optimizers.OptimizerConfig("sgd", momentum=0.0, grad_clip_norm=1.0))
  params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
  grads = {"a": jnp.asarray([3.0, 0.0]), "b": jnp.asarray([4.0])}  # norm 5
  state = tx.init(params)
  state = state._replace(hyperparams={**state.hyperparams, "learning_rate": 1.0})
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["a"], [-0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(updates["b"], [-0.8], rtol=1e-6)


def test_label_smoothing_and_soft_cross_entropy():
  t = losses.smooth_targets(jnp.asarray([2, 0]), 4, 0.1)
  np.testing.assert_allclose(t, [[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]],
                             rtol=1e-6)
  logits = jnp.asarray([[1.0, 2.0, 0.5, -1.0], [0.0, 0.3, 0.2, 0.1]])
  hard = losses.soft_cross_entropy(logits, losses.smooth_targets(
      jnp.asarray([2, 0]), 4, 0.0))
  np.testing.assert_allclose(hard, optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.asarray([2, 0])).mean(), rtol=1e-6)


def test_mixup_mixes_images_and_labels_with_the_same_lambda():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5, 5, 1)), jnp.float32)
  targets = losses.smooth_targets(jnp.asarray([0, 1, 2, 1]), 3, 0.0)
  reg = augment.Augment(mixup_alpha=0.8)
  mixed, lam = augment.mix(jax.random.key(1), x, reg)
  lam_from_images = (mixed - x[::-1]) / (x - x[::-1])
  np.testing.assert_allclose(lam_from_images, lam, rtol=1e-4)
  np.testing.assert_allclose(losses.mix_targets(targets, lam),
                             lam * targets + (1 - lam) * targets[::-1], rtol=1e-6)
  assert 0 < float(lam) < 1


def test_cutmix_pastes_a_box_whose_area_is_one_minus_lambda():
  x = jnp.zeros((2, 16, 16, 1)).at[1].set(1.0)  # image 0 black, image 1 white
  reg = augment.Augment(cutmix_alpha=1.0)
  for seed in range(5):
    mixed, lam = augment.mix(jax.random.key(seed), x, reg)
    pasted = float(mixed[0].mean())  # image 0 received a box of image 1
    assert pasted == pytest.approx(1 - float(lam), abs=1e-6)


def test_mix_prob_zero_leaves_the_batch_alone():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 3, 1)), jnp.float32)
  reg = augment.Augment(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.0)
  mixed, lam = augment.mix(jax.random.key(0), x, reg)
  np.testing.assert_array_equal(mixed, x)
  assert float(lam) == 1.0


def test_random_erasing_fills_one_box_per_chosen_image():
  x = jnp.full((64, 20, 20, 3), 7.0)
  out = np.asarray(augment.random_erase(jax.random.key(0), x, 1.0))
  changed = np.any(out != 7.0, axis=-1)
  fractions = changed.mean(axis=(1, 2))
  assert np.all((fractions > 0.01) & (fractions < 0.4))
  for image in changed:  # a rectangle: its bounding box is all changed
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    assert image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
  np.testing.assert_array_equal(augment.random_erase(jax.random.key(0), x, 0.0), x)


# ------------------------------------------------------------------------------ RandAugment

from starsse_jax import augment as ra  # noqa: E402

FILL = jnp.asarray([124.0, 116.0, 104.0])


def _image(seed=0, h=8, w=8, c=3):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (h, w, c)), jnp.float32)


def test_pixel_operations_by_hand():
  img = jnp.asarray([[[0.0], [100.0], [130.0], [255.0]]])  # one row of four pixels, 1 channel
  f1 = jnp.asarray([0.0])
  np.testing.assert_array_equal(ra.invert(img, 0.9, 1, f1)[0, :, 0], [255, 155, 125, 0])
  # level 0.9: posterize keeps 4 - int(3.6) = 1 bit; solarize threshold 256 - int(230.4) = 26;
  # solarize-add adds int(99) below 128; brightness factor 1 + 0.81 (clipped at 255).
  np.testing.assert_array_equal(ra.posterize(img, 0.9, 1, f1)[0, :, 0], [0, 0, 128, 128])
  np.testing.assert_array_equal(ra.solarize(img, 0.9, 1, f1)[0, :, 0], [0, 155, 125, 0])
  np.testing.assert_array_equal(ra.solarize_add(img, 0.9, 1, f1)[0, :, 0], [99, 199, 130, 255])
  np.testing.assert_allclose(ra.brightness(img, 0.9, 1, f1)[0, :, 0], [0, 181, 235.3, 255],
                             rtol=1e-6)
  np.testing.assert_allclose(ra.brightness(img, 0.9, -1, f1)[0, :, 0],
                             [0, 19, 24.7, 48.45], rtol=1e-5)
  stretched = ra.auto_contrast(jnp.asarray([[[50.0], [100.0], [150.0]]]), 0, 1, f1)
  np.testing.assert_allclose(stretched[0, :, 0], [0, 127.5, 255], rtol=1e-6)


def test_equalize_matches_pils_lookup_table_by_hand():
  # Values 0 (x4), 10 (x2), 20 (x2): PIL's step = (8 - 2) // 255 = 0 -> unchanged; with many
  # pixels: 256 zeros, 255 of 100, 1 of 200 -> step = (512 - 1) // 255 = 2, lut[v] = (cum + 1) // 2
  small = jnp.asarray([0.0] * 4 + [10.0] * 2 + [20.0] * 2).reshape(2, 4, 1)
  np.testing.assert_array_equal(ra.equalize(small, 0, 1, None), small)
  values = np.asarray([0.0] * 256 + [100.0] * 255 + [200.0])
  big = jnp.asarray(values.reshape(16, 32, 1))
  out = np.asarray(ra.equalize(big, 0, 1, None)).reshape(-1)
  assert set(out[:256]) == {0.0} and set(out[256:511]) == {128.0} and out[511] == 255.0


def test_geometric_operations_move_pixels_and_fill_with_the_mean():
  img = _image(1)
  np.testing.assert_allclose(ra.rotate(img, 0.0, 1, FILL), img, atol=1e-4)
  np.testing.assert_allclose(ra.shear_x(img, 0.0, 1, FILL), img, atol=1e-4)
  # Translate by 0.45 * l * 8 px with l = 5/9: exactly 2 px; the vacated columns hold the fill.
  moved = np.asarray(ra.translate_x(img, 5 / 9, 1, FILL))
  np.testing.assert_allclose(moved[:, :6], np.asarray(img)[:, 2:], atol=1e-3)
  np.testing.assert_allclose(moved[:, 6:], np.broadcast_to(FILL, (8, 2, 3)), atol=1e-3)
  # 90 degrees (l = 3, beyond RandAugment's range but exact on the grid): a quarter turn.
  quarter = np.asarray(ra.rotate(img, 3.0, 1, FILL))
  turned = [np.rot90(np.asarray(img), k, axes=(0, 1)) for k in (1, 3)]
  assert min(np.abs(quarter - t).max() for t in turned) < 1e-3


def test_color_and_contrast_blend_towards_grey():
  img = _image(2)
  grey = np.asarray(ra.color(img, 1.0, -1, FILL))  # factor 0.1: mostly grey
  spread = lambda a: np.abs(a - a.mean(axis=-1, keepdims=True)).mean()
  assert spread(grey) < 0.2 * spread(np.asarray(img))
  flat = np.asarray(ra.contrast(img, 1.0, -1, FILL))
  assert flat.std() < 0.2 * np.asarray(img).std()


def test_rand_augment_is_per_image_seeded_and_off_at_prob_zero():
  images = jnp.stack([_image(s, 12, 12) for s in range(6)])
  policy = ra.RandAugment(num_ops=2, magnitude=9, magnitude_std=0.5, prob=1.0)
  a = jax.jit(lambda k, x: ra.rand_augment(k, x, policy, FILL))(jax.random.key(0), images)
  b = ra.rand_augment(jax.random.key(0), images, policy, FILL)
  np.testing.assert_allclose(a, b, atol=1e-3)
  assert a.shape == images.shape and float(a.min()) >= 0 and float(a.max()) <= 255
  assert all(not np.allclose(a[i], images[i]) for i in range(6))
  off = ra.rand_augment(jax.random.key(0), images, ra.RandAugment(prob=0.0), FILL)
  np.testing.assert_array_equal(off, images)
