import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starsse_jax import members


def _tree(seed):
  r = np.random.default_rng(seed)
  return {"a": jnp.asarray(r.normal(size=(3, 2)), jnp.float32),
          "b": {"c": jnp.asarray(r.normal(size=(4,)), jnp.float32)}}


def test_stack_unstack_round_trip():
  trees = [_tree(s) for s in range(3)]
  stacked = members.stack(trees)
  assert stacked["a"].shape == (3, 3, 2) and members.num_members(stacked) == 3
  for original, back in zip(trees, members.unstack(stacked)):
    jax.tree.map(np.testing.assert_array_equal, original, back)


def test_take_concat_broadcast_mean():
  stacked = members.stack([_tree(s) for s in range(4)])
  sub = members.take(stacked, [2, 0])
  np.testing.assert_array_equal(sub["a"][0], stacked["a"][2])
  joined = members.concat([None, sub, members.take(stacked, [1])])
  assert members.num_members(joined) == 3
  np.testing.assert_array_equal(joined["b"]["c"][2], stacked["b"]["c"][1])
  copies = members.broadcast(_tree(9), 5)
  assert copies["a"].shape == (5, 3, 2)
  np.testing.assert_array_equal(copies["a"][4], _tree(9)["a"])
  np.testing.assert_allclose(members.mean(stacked)["a"], np.mean(stacked["a"], 0), rtol=1e-6)


@pytest.mark.parametrize("strategy,k", [("unroll", 3), ("map", 3), ("vmap", 3), ("auto", 3),
                                        ("chunked", 3), ("chunked", 11), ("chunked", 16)])
def test_member_map_strategies_compute_the_same_function(strategy, k):
  stacked = members.stack([_tree(s) for s in range(k)])
  x = jnp.arange(float(k))

  def fn(tree, scale):
    return {"y": jnp.tanh(tree["a"]) * scale, "z": jnp.sum(tree["b"]["c"]) + scale}

  expected = {"y": jnp.tanh(stacked["a"]) * x[:, None, None],
              "z": jnp.sum(stacked["b"]["c"], axis=1) + x}
  got = jax.jit(members.member_map(fn, strategy))(stacked, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected)


def test_chunking_is_few_equal_groups_of_at_most_eight():
  assert members.chunking(5) == (1, 5)
  assert members.chunking(8) == (1, 8)
  assert members.chunking(11) == (2, 6)  # one padding member
  assert members.chunking(20) == (3, 7)  # one padding member
  assert members.chunking(170) == (22, 8)  # 176 - 170 = 6 < 22 groups
  for k in range(1, 200):
    groups, chunk = members.chunking(k)
    assert chunk <= 8 and 0 <= groups * chunk - k < groups


def test_auto_strategy_avoids_vmap():
  assert members.resolve_strategy("auto", 4, "cpu") == "unroll"
  assert members.resolve_strategy("auto", 4, "gpu") == "unroll"
  assert members.resolve_strategy("auto", 32, "gpu") == "map"
  with pytest.raises(ValueError, match="Unknown member strategy"):
    members.resolve_strategy("pmap", 2)


def test_split_groups_pads_with_the_last_member_and_join_undoes_it():
  tree = {"w": jnp.arange(7 * 2, dtype=jnp.float32).reshape(7, 2)}
  groups = members.split_groups(tree, 3)
  assert [members.num_members(g) for g in groups] == [3, 3, 3]
  np.testing.assert_array_equal(groups[2]["w"], tree["w"][np.array([6, 6, 6])])
  np.testing.assert_array_equal(members.join_groups(groups, 7)["w"], tree["w"])
  assert members.split_groups(tree, 7)[0]["w"].shape == (7, 2)
