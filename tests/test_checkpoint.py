import jax.numpy as jnp
import numpy as np
import pytest

from starsse_jax import checkpoint, members


def _vars(width=3, classes=2):
  return {"params": {"conv": {"kernel": jnp.ones((3, 3, 1, width))},
                     "head": {"kernel": jnp.zeros((width, classes)), "bias": jnp.zeros(classes)}},
          "batch_stats": {"bn": {"mean": jnp.arange(width, dtype=jnp.float32)}}}


def test_save_restore_round_trip(tmp_path):
  stacked = members.stack([_vars(), _vars()])
  checkpoint.save(str(tmp_path / "ck"), 0, stacked, {"note": "x"})
  assert checkpoint.exists(str(tmp_path / "ck"))
  restored, meta = checkpoint.restore(str(tmp_path / "ck"))
  assert meta == {"note": "x"}
  checkpoint.check_matches(_vars(), restored, "ck", leading_axes=1)
  np.testing.assert_array_equal(restored["batch_stats"]["bn"]["mean"][1], [0, 1, 2])


def test_mismatch_names_first_differing_leaf():
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"leaf \['batch_stats'\]\['bn'\]\['mean'\] is float32\[4\] in the "
                           r"checkpoint but the model expects float32\[3\]"):
    checkpoint.check_matches(_vars(3), _vars(4), "ck")
  extra = _vars()
  extra["params"]["block"] = {"kernel": jnp.ones(2)}
  with pytest.raises(checkpoint.CheckpointMismatchError, match="that the model does not"):
    checkpoint.check_matches(_vars(), extra, "ck")
  with pytest.raises(checkpoint.CheckpointMismatchError, match="is missing from the checkpoint"):
    checkpoint.check_matches(extra, _vars(), "ck")


def test_with_new_head_keeps_body_and_replaces_head():
  pre = _vars(classes=5)
  fresh = _vars(classes=2)
  fresh["params"]["head"]["bias"] = jnp.full(2, 7.0)
  fresh["params"]["conv"]["kernel"] = jnp.zeros((3, 3, 1, 3))
  out = checkpoint.with_new_head(pre, fresh)
  np.testing.assert_array_equal(out["params"]["conv"]["kernel"], pre["params"]["conv"]["kernel"])
  np.testing.assert_array_equal(out["params"]["head"]["bias"], [7.0, 7.0])
  with pytest.raises(checkpoint.CheckpointMismatchError):
    checkpoint.with_new_head(_vars(width=4), fresh)
