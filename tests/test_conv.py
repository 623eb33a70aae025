"""The per-tap kernel gradient against XLA's own, and the model with either formulation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from starsse_jax import configlib, conv, models


def _xla_kernel_grad(x, kernel, strides, padding, dy):
  f = lambda k: lax.conv_general_dilated(x, k, strides, padding,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.vjp(f, kernel)[1](dy)[0]


@pytest.mark.parametrize("size,kernel,strides,padding", [
    ((9, 9), (3, 3), (1, 1), ((1, 1), (1, 1))),    # 3x3 conv of a basic block
    ((9, 9), (3, 3), (2, 2), ((1, 1), (1, 1))),    # its strided first conv, odd input
    ((8, 10), (1, 1), (2, 2), ((0, 0), (0, 0))),   # a downsample shortcut
    ((15, 12), (7, 7), (2, 2), ((3, 3), (3, 3))),  # the ImageNet stem
    ((7, 6), (3, 2), (1, 3), ((0, 1), (2, 0))),    # asymmetric everything
    ((6, 6), (3, 3), (3, 3), ((0, 0), (0, 0))),    # stride = kernel: rows no tap reads
])
def test_kernel_grad_by_taps_matches_xla(size, kernel, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3,) + size + (4,)), jnp.float32)
  k = jnp.asarray(rng.normal(size=kernel + (4, 5)), jnp.float32)
  y = lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  got = conv.kernel_grad_by_taps(x, dy, kernel, strides, padding)
  want = _xla_kernel_grad(x, k, strides, padding, dy)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _conv_pair(kernel_grad, padding=((1, 1), (1, 1)), strides=(2, 2)):
  return nn.Conv(6, (3, 3), strides, padding, use_bias=False,
                 conv_general_dilated=conv.conv_function(kernel_grad))


@pytest.mark.parametrize("padding", [((1, 1), (1, 1)), "SAME", "VALID"])
def test_taps_conv_is_the_same_function(padding):
  """Forward and input gradient are XLA's own (bit for bit); the kernel gradient agrees to
  float32 rounding (only the summation order differs)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 11, 11, 3)), jnp.float32)
  variables = _conv_pair("xla", padding).init(jax.random.key(0), x)

  def loss(kernel_grad):
    def f(params, x):
      y = _conv_pair(kernel_grad, padding).apply({"params": params}, x)
      return jnp.sum(jnp.sin(y)), y
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

  (l_xla, y_xla), (gk_xla, gx_xla) = loss("xla")(variables["params"], x)
  (l_taps, y_taps), (gk_taps, gx_taps) = loss("taps")(variables["params"], x)
  np.testing.assert_array_equal(y_taps, y_xla)
  np.testing.assert_array_equal(gx_taps, gx_xla)
  np.testing.assert_allclose(gk_taps["kernel"], gk_xla["kernel"], rtol=1e-5, atol=1e-5)
  # and the taps path really ran: XLA's kernel gradient is a convolution, the taps' are products
  def compiled(kernel_grad):
    f = lambda p, x: jnp.sum(_conv_pair(kernel_grad, padding).apply({"params": p}, x))
    return jax.jit(jax.grad(f)).lower(variables["params"], x).compile().as_text()
  xla_hlo, taps_hlo = compiled("xla"), compiled("taps")
  assert taps_hlo.count(" convolution(") == xla_hlo.count(" convolution(") - 1
  assert " dot(" in taps_hlo and " dot(" not in xla_hlo


def _model(kernel_grad, dtype="float32"):
  config = configlib.base_config()
  config.model.dtype = dtype
  return models.build_model(config.model, 10).clone(kernel_grad=kernel_grad)


@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-4), ("bfloat16", 5e-2)])
def test_model_gradients_agree(dtype, rtol):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(8, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 8))
  variables = _model("xla", dtype).init(jax.random.key(0), x[:1], train=False)

  def grads(kernel_grad):
    model = _model(kernel_grad, dtype)

    def loss(params):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              train=True, mutable=["batch_stats"])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y])
    return jax.jit(jax.value_and_grad(loss))(variables["params"])

  loss_xla, g_xla = grads("xla")
  loss_taps, g_taps = grads("taps")
  assert float(loss_taps) == float(loss_xla)  # same forward program
  for path, a in jax.tree_util.tree_leaves_with_path(g_taps):
    b = dict(jax.tree_util.tree_leaves_with_path(g_xla))[path]
    scale = float(jnp.max(jnp.abs(b))) or 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_auto_is_taps_only_on_cpu():
  assert conv.resolve_kernel_grad("auto", "cpu") == "taps"
  assert conv.resolve_kernel_grad("auto", "gpu") == "xla"
  assert conv.resolve_kernel_grad("auto", "tpu") == "xla"
  # 'xla' is Flax's own convolution: the program accelerators run is unchanged
  assert conv.conv_function("xla") is None
  with pytest.raises(ValueError, match="kernel gradient 'fast'"):
    conv.resolve_kernel_grad("fast")


def test_auto_off_cpu_is_flax_program(monkeypatch):
  """Where 'auto' means 'xla' (GPU, TPU) the traced train program is exactly the one a model
  of plain ``flax.linen.Conv`` gives: nothing changes for accelerators."""
  x = jnp.ones((2, 28, 28, 1))
  variables = _model("xla").init(jax.random.key(0), x, train=False)

  def program(model):
    def loss(params):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              train=True, mutable=["batch_stats"])
      return jnp.sum(logits)
    return str(jax.make_jaxpr(jax.grad(loss))(variables["params"]))

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert program(_model("auto")) == program(_model("xla"))
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert program(_model("auto")) == program(_model("taps")) != program(_model("xla"))


def test_config_rejects_unknown_kernel_grad():
  config = configlib.base_config()
  config.execution.kernel_grad = "fast"
  with pytest.raises(ValueError, match="execution.kernel_grad='fast'"):
    configlib.validate(config)
