"""Files from outside are hostile until read: opening one never runs its code, and a file that lies
about its sizes is refused before anything large is allocated.

Malicious checkpoints are written byte for byte as ``torch.save`` lays them out (``torch_format``),
with payloads that would create a marker file if anything executed them; each payload is first
shown to be live (plain ``pickle.loads`` runs it), then read by the library, with torch importable
(Debian's python3-torch, put on the path of a subprocess) and without.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import torch_format as tf
from starsse_jax import npz_file
from starsse_jax.weights import formats, safetensors_file
from starsse_jax.weights.errors import WeightsError

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_DIR = os.environ.get("STARSSE_TORCH_DIR", "/usr/lib/python3/dist-packages/torch")


def _payloads(marker):
  return {
      "os.system": tf.Payload("os", "system", f"touch {marker}"),
      "posix.system": tf.Payload("posix", "system", f"touch {marker}"),
      "builtins.eval": tf.Payload("builtins", "eval", f"open({str(marker)!r}, 'w').close()"),
      "builtins.exec": tf.Payload("builtins", "exec", f"open({str(marker)!r}, 'w').close()"),
      "subprocess.call": tf.Payload("subprocess", "call", ["touch", str(marker)]),
      "pathlib.Path.touch": tf.Payload("pathlib", "Path", str(marker)),
  }


def _malicious_files(directory, marker):
  """{file name: how it was made}: every payload at the top level and nested in a state_dict,
  in the zip and the legacy format."""
  made = {}
  for name, payload in _payloads(marker).items():
    weight = tf.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    for where, obj in (("top", payload),
                       ("nested", {"state_dict": {"conv1.weight": weight, "evil": payload}}),
                       ("beside", {"state_dict": {"conv1.weight": weight}, "args": payload})):
      for fmt, write in (("zip", tf.write_zip), ("legacy", tf.write_legacy)):
        path = os.path.join(directory, f"{name}-{where}-{fmt}.pth")
        write(path, obj)
        made[os.path.basename(path)] = (name, where, fmt)
  return made


def test_payloads_are_live_when_unpickled_plainly(tmp_path):
  """The payloads are real: plain pickle runs them (so the test below could fail)."""
  marker = tmp_path / "ran"
  for name, payload in _payloads(marker).items():
    if name == "pathlib.Path.touch":
      continue  # builds a Path without touching it: only a GLOBAL outside the allow-list
    data, _ = tf.dumps(payload)
    pickle.loads(data)
    assert marker.exists(), name
    marker.unlink()


READ_ALL = textwrap.dedent("""
    import json, os, sys
    from starsse_jax.weights import formats
    from starsse_jax.weights.errors import WeightsError
    outcome = {}
    for name in sorted(os.listdir(sys.argv[1])):
      try:
        sd = formats.read_state_dict(os.path.join(sys.argv[1], name))
        outcome[name] = "read " + ",".join(sorted(sd))
      except WeightsError as e:
        outcome[name] = "error " + str(e)
    print(json.dumps(outcome))
""")


@pytest.mark.parametrize("with_torch", [False, True])
def test_malicious_checkpoints_never_execute(tmp_path, with_torch):
  files, marker = tmp_path / "files", tmp_path / "marker"
  files.mkdir()
  made = _malicious_files(str(files), marker)
  env = dict(os.environ)
  if with_torch:
    if not os.path.isdir(TORCH_DIR):
      pytest.fail(f"torch not found at {TORCH_DIR}: install Debian's python3-torch (the test "
                  "command does) or set STARSSE_TORCH_DIR")
    (tmp_path / "site").mkdir()
    os.symlink(TORCH_DIR, tmp_path / "site" / "torch")
    env["PYTHONPATH"] = f"{os.path.dirname(HERE)}{os.pathsep}{tmp_path / 'site'}"
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]  # torch really is importable there
  else:
    env["PYTHONPATH"] = os.path.dirname(HERE)
  proc = subprocess.run([sys.executable, "-c", READ_ALL, str(files)], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  outcome = json.loads(proc.stdout.strip().splitlines()[-1])
  assert not marker.exists()
  assert set(outcome) == set(made)
  for name, result in outcome.items():
    _, where, _ = made[name]
    if where == "beside":  # the payload outside the state_dict is an inert placeholder
      assert result == "read conv1.weight", (name, result)
    else:  # no state_dict of tensors: one clear error naming the file
      assert result.startswith("error ") and name in result and "state_dict" in result, result


def test_legacy_file_written_like_torch_reads_like_zip(tmp_path):
  state = {"a.weight": tf.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4)),
           "a.num": tf.Tensor(np.array(7, dtype=np.int64)),
           "b.t": tf.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), size=(4, 3),
                            stride=(1, 4))}
  tf.write_legacy(tmp_path / "x.pth", {"state_dict": state, "epoch": 3})
  tf.write_zip(tmp_path / "y.pth", {"state_dict": state, "epoch": 3})
  a = formats.read_state_dict(str(tmp_path / "x.pth"))
  b = formats.read_state_dict(str(tmp_path / "y.pth"))
  assert list(a) == list(b) == ["a.weight", "a.num", "b.t"]
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  np.testing.assert_array_equal(a["b.t"], np.arange(12).reshape(3, 4).T)
  assert a["a.num"].shape == () and a["a.num"] == 7


def _lying_files(d):
  """{file name: text the error must contain}."""
  cases = {}

  def safetensors(name, header, body=b"\0" * 16, declared_len=None):
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(encoded) if declared_len is None else declared_len
    (d / name).write_bytes(struct.pack("<Q", length) + encoded + body)

  safetensors("huge_shape.safetensors", {"conv1.weight": {
      "dtype": "F32", "shape": [100000, 100000, 7, 7], "data_offsets": [0, 16]}})
  cases["huge_shape.safetensors"] = "'conv1.weight' declares shape [100000, 100000, 7, 7]"
  safetensors("past_end.safetensors", {"w": {
      "dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 1 << 32]}})
  cases["past_end.safetensors"] = "spans bytes 0..4294967296 of the data but only 16"
  safetensors("header_gb.safetensors", {"w": {"dtype": "F32", "shape": [4],
                                             "data_offsets": [0, 16]}}, declared_len=5 << 30)
  cases["header_gb.safetensors"] = "the header claims 5368709120 bytes"
  safetensors("not_json.safetensors", b"{\"w\": [1, 2", body=b"")
  cases["not_json.safetensors"] = "not valid JSON"
  safetensors("bad_entry.safetensors", {"w": {"dtype": "F32", "shape": "big",
                                              "data_offsets": [0, 16]}})
  cases["bad_entry.safetensors"] = "malformed entry"
  # A torch zip whose storage entry claims 4 GB in a file of about 1 kB.
  tf.write_zip(d / "zip_claims_4gb.pth", {"w": tf.Tensor(np.ones(4, np.float32))})
  with zipfile.ZipFile(d / "zip_claims_4gb.pth") as z:
    storage = next(n for n in z.namelist() if "/data/" in n)
  tf.set_zip_entry_size(d / "zip_claims_4gb.pth", storage, 0xFFFFFFF0)
  cases["zip_claims_4gb.pth"] = "claims 4294967280 bytes"
  # Tensors larger than their storages, in both formats; a storage read as far bigger.
  big = lambda: {"state_dict": {"w": tf.Tensor(np.ones(4, np.float32), size=(100000, 100000),
                                               stride=(100000, 1))}}
  tf.write_zip(d / "short_storage_zip.pth", big())
  cases["short_storage_zip.pth"] = "storage is shorter than its tensor"
  tf.write_legacy(d / "short_storage_legacy.pth", big())
  cases["short_storage_legacy.pth"] = "storage is shorter than its tensor"
  tf.write_zip(d / "storage_claims_more_zip.pth", {"w": tf.Tensor(np.ones(4, np.float32),
                                                                  numel=1 << 34)})
  cases["storage_claims_more_zip.pth"] = "its tensors need 68719476736"
  tf.write_legacy(d / "storage_claims_more_legacy.pth", {"w": tf.Tensor(np.ones(4, np.float32),
                                                                        numel=1 << 34)})
  cases["storage_claims_more_legacy.pth"] = "declares 17179869184 elements"
  tf.write_legacy(d / "zero_stride.pth", {"w": tf.Tensor(np.ones(4, np.float32),
                                                         size=(1 << 20, 1 << 20), stride=(0, 0))})
  cases["zero_stride.pth"] = "storage is shorter than its tensor"
  # One storage named by many tensors: more than the file's size several times over.
  views = [tf.Tensor(np.ones(1 << 16, np.float32)) for _ in range(100)]
  for view in views:
    view.storage = views[0].storage
  tf.write_zip(d / "shared_storage.pth", {f"w{i}": view for i, view in enumerate(views)})
  cases["shared_storage.pth"] = "add up to more than"
  # npz: object arrays, and a member whose .npy header declares far more than it holds.
  np.savez(d / "objects.npz", w=np.array([{"a": 1}], dtype=object))
  cases["objects.npz"] = "holds Python objects"
  with zipfile.ZipFile(d / "npy_lies.npz", "w") as z:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (100000, 100000, 7)})
    z.writestr("w.npy", buffer.getvalue() + b"\0" * 64)
  cases["npy_lies.npz"] = "declares shape (100000, 100000, 7)"
  return cases


def test_files_that_lie_about_their_size_are_refused(tmp_path):
  for name, expected in _lying_files(tmp_path).items():
    with pytest.raises(WeightsError) as e:
      formats.read_state_dict(str(tmp_path / name))
    assert name in str(e.value) and expected in str(e.value), (name, str(e.value))


CAPPED = textwrap.dedent("""
    import json, os, resource, sys
    from starsse_jax.weights import formats
    from starsse_jax.weights.errors import WeightsError
    names = sorted(os.listdir(sys.argv[1]))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
      used = int(f.read().split()[0]) * resource.getpagesize()
    # From here on, 512 MB more address space at most: any large allocation fails.
    resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), hard))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = {}
    for name in names:
      try:
        formats.read_state_dict(os.path.join(sys.argv[1], name))
        outcome[name] = "read"
      except WeightsError as e:
        outcome[name] = "refused"
      except MemoryError:
        outcome[name] = "MemoryError"
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
    print(json.dumps({"outcome": outcome, "peak_rss_growth_kb": grew}))
""")


def test_lying_files_are_refused_before_any_large_allocation(tmp_path):
  files = tmp_path / "files"
  files.mkdir()
  cases = _lying_files(files)
  env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
  proc = subprocess.run([sys.executable, "-c", CAPPED, str(files)], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["outcome"] == {name: "refused" for name in cases}
  assert report["peak_rss_growth_kb"] < 64 * 1024  # nothing large was ever touched


def test_npz_reader_reads_plain_arrays_and_names_the_problem(tmp_path):
  np.savez(tmp_path / "ok.npz", a=np.arange(5), b=np.ones((2, 3), np.float32))
  arrays = npz_file.load(str(tmp_path / "ok.npz"))
  assert list(arrays) == ["a", "b"] and arrays["b"].shape == (2, 3)
  np.savez_compressed(tmp_path / "ok_compressed.npz", a=np.zeros(1000))
  assert npz_file.load(str(tmp_path / "ok_compressed.npz"))["a"].sum() == 0
  (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
  with pytest.raises(npz_file.NpzError, match="truncated or not an .npz"):
    npz_file.load(str(tmp_path / "junk.npz"))


def test_safetensors_reader_still_reads_what_it_writes(tmp_path):
  tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(3, np.int64),
             "e": np.zeros((0, 4), np.float16)}
  safetensors_file.write(str(tmp_path / "t.safetensors"), tensors)
  back = safetensors_file.read(str(tmp_path / "t.safetensors"))
  assert list(back) == list(tensors)
  for k in tensors:
    assert back[k].shape == tensors[k].shape and back[k].dtype == tensors[k].dtype
    np.testing.assert_array_equal(back[k], tensors[k])


def test_memory_cap_itself_works():
  """The cap used above does stop a large allocation (so its test could fail)."""
  script = ("import resource, numpy as np\n"
            "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), "
            "resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
            "try:\n  np.ones(1 << 30)\nexcept MemoryError:\n  print('capped')\n")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
  assert proc.stdout.strip() == "capped", proc.stderr[-2000:]
