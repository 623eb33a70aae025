"""A disk that fills during a save: the previous checkpoint stays valid, the partial save is
removed, the error says how to continue, and once there is space again the run resumes.

The disk is a small tmpfs where this machine lets the tests mount one (root, as in CI), and an
injected ENOSPC in orbax's save.
"""
import contextlib
import errno
import os
import subprocess

import jax
import numpy as np
from orbax.checkpoint._src.handlers.json_checkpoint_handler import JsonCheckpointHandler
import pytest

from conftest import synthetic_transfer, tiny_config
from starsse_jax import build, checkpoint, members, models, resume


@contextlib.contextmanager
def small_disk(path, kind, monkeypatch):
  """(directory, fill, free): ``fill()`` leaves no room, ``free()`` gives it back. ``'tmpfs'``: a
  1 MB tmpfs filled by a file, where this machine lets the tests mount one (root, as in CI);
  ``'injected'`` (and ``'tmpfs'`` where mounting is refused): orbax's write of the metadata file
  fails with ENOSPC in the middle of the save, as on a full disk."""
  os.makedirs(path)
  filler = os.path.join(path, "filler")
  if kind == "tmpfs" and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path],
                                        capture_output=True).returncode == 0:
    def fill():
      stat = os.statvfs(path)
      with open(filler, "wb") as f:
        f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - 4096, 0))

    try:
      yield path, fill, lambda: os.remove(filler)
    finally:
      subprocess.run(["umount", path], check=True)
    return
  full = {"on": False}
  write = JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def failing_write(self, x, directory):  # the metadata file of the save in flight
    if full["on"]:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await write(self, x, directory)

  monkeypatch.setattr(JsonCheckpointHandler, "_save_fn", failing_write)
  yield path, lambda: full.update(on=True), lambda: full.update(on=False)


def _template():
  config = tiny_config()
  data = synthetic_transfer()
  trainer = build.make_trainer(config, models.build_model(config.model, 3), data, config.finetune)
  v = trainer.init_variables(0, data.image_shape)
  return {**v, "opt_state": trainer.tx.init(v["params"])}


@pytest.mark.parametrize("kind", ["tmpfs", "injected"])
def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, kind):
  template = _template()
  stacked = members.stack([template, template])
  later = jax.tree.map(lambda x: x + 1, stacked)
  with small_disk(str(tmp_path / "disk"), kind, monkeypatch) as (disk, fill, free):
    directory = os.path.join(disk, "ck")
    resume.RunCheckpointer(directory, template).save(resume.Progress(0, 2, None, stacked,
                                                                     [[{"step": 2}]]))
    fill()
    with pytest.raises(checkpoint.DiskFullError, match=(
        r"No space left on the device while saving checkpoint 4 in .*ck; the partial save is "
        r"discarded and checkpoint 2 is intact.*rerun the same command to resume")):
      resume.RunCheckpointer(directory, template).save(resume.Progress(0, 4, None, later,
                                                                       [[{"step": 4}]]))
    progress = resume.RunCheckpointer(directory, template).restore()
    assert progress.step == 2 and progress.histories == [[{"step": 2}]]
    jax.tree.map(np.testing.assert_array_equal, progress.states, stacked)
    free()  # the user made room: the rerun saves and resumes from the new point
    resume.RunCheckpointer(directory, template).save(resume.Progress(0, 4, None, later,
                                                                     [[{"step": 4}]]))
    progress = resume.RunCheckpointer(directory, template).restore()
    assert progress.step == 4
    jax.tree.map(np.testing.assert_array_equal, progress.states, later)
