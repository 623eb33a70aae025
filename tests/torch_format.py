"""Writes PyTorch checkpoint files without torch, byte for byte as ``torch.save`` lays them out,
with whatever the pickle should name: the tests' way to make malicious and lying files.

    write_zip(path, {"state_dict": {"w": Tensor(np.ones(3))}, "x": Payload("os", "system", "ls")})
    write_legacy(path, ...)   # PyTorch's pre-1.6 format

``Tensor(array, size=..., stride=..., numel=...)`` pickles as torch's ``_rebuild_tensor_v2`` over
a storage; the optional arguments make it lie about its layout. ``Payload(module, name, *args)``
pickles as a call of ``module.name(*args)``: what a malicious checkpoint does.
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
            np.dtype(np.uint8): "ByteStorage", np.dtype(np.float16): "HalfStorage"}
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class Global:
  """A reference to ``module.name``, written as pickle's GLOBAL opcode without importing it."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle only checks that a reduce function is callable
    raise AssertionError("never called")


class Payload:
  def __init__(self, module, name, *args):
    self.call = (Global(module, name), args)

  def __reduce__(self):
    return self.call


class _Storage:
  def __init__(self, key, array, numel=None):
    self.key, self.array = key, array
    self.numel = array.size if numel is None else numel


class Tensor:
  _count = 0

  def __init__(self, array, size=None, stride=None, offset=0, numel=None):
    array = np.array(array, order="C")  # (ascontiguousarray makes a scalar 1-D)
    Tensor._count += 1
    self.storage = _Storage(str(Tensor._count), array.reshape(-1), numel)
    self.size = tuple(array.shape) if size is None else tuple(size)
    self.stride = (tuple(int(s // array.itemsize) for s in array.strides) if stride is None
                   else tuple(stride))
    self.offset = offset

  def __reduce__(self):
    return (Global("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


class _Writer(pickle._Pickler):  # pylint: disable=protected-access
  """The pure-Python pickler, writing ``Global`` as GLOBAL and storages as persistent ids."""

  def __init__(self, file, storages):
    super().__init__(file, protocol=2)
    self.storages = storages

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, Global):
      self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
      return
    super().save(obj, save_persistent_id)

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      self.storages[obj.key] = obj
      return ("storage", Global("torch", _STORAGE[obj.array.dtype]), obj.key, "cpu", obj.numel)
    return None


def dumps(obj):
  """(pickle bytes, {key: storage}) of ``obj``."""
  buffer, storages = io.BytesIO(), {}
  _Writer(buffer, storages).dump(obj)
  return buffer.getvalue(), storages


def write_zip(path, obj, name="archive"):
  data, storages = dumps(obj)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{name}/data.pkl", data)
    z.writestr(f"{name}/byteorder", "little")
    for key, storage in storages.items():
      z.writestr(f"{name}/data/{key}", storage.array.astype(storage.array.dtype.newbyteorder("<"))
                 .tobytes())
    z.writestr(f"{name}/version", "3\n")


def write_legacy(path, obj, stored_numel=None):
  data, storages = dumps(obj)
  with open(path, "wb") as f:
    for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                         "type_sizes": {"short": 2, "int": 4, "long": 4}}):
      pickle.dump(header, f, protocol=2)
    f.write(data)
    keys = sorted(storages)
    pickle.dump(keys, f, protocol=2)
    for key in keys:
      array = storages[key].array
      numel = storages[key].numel if stored_numel is None else stored_numel
      f.write(struct.pack("<q", numel) + array.astype(array.dtype.newbyteorder("<")).tobytes())


def set_zip_entry_size(path, entry, size):
  """Rewrites the uncompressed size that the central directory records for ``entry``."""
  raw = bytearray(open(path, "rb").read())
  name = entry.encode()
  end = raw.rindex(b"PK\x05\x06")  # end of central directory: where the directory starts
  at = struct.unpack("<I", raw[end + 16:end + 20])[0]
  while True:
    at = raw.index(b"PK\x01\x02", at)
    name_len = struct.unpack("<H", raw[at + 28:at + 30])[0]
    if raw[at + 46:at + 46 + name_len] == name:
      raw[at + 24:at + 28] = struct.pack("<I", size)
      break
    at += 4
  open(path, "wb").write(bytes(raw))
