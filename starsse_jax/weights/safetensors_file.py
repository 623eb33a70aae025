"""The ``.safetensors`` format, read and written with numpy alone (no torch, no extra package).

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N
bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian tensor bytes, offsets relative to the end of the header.
"""
from __future__ import annotations

import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from starsse_jax.weights.errors import UnreadableWeightsError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


# The format's own reference implementation refuses headers above 100 MB.
MAX_HEADER_BYTES = 100_000_000


def _entries(path: str, header, data_bytes: int) -> list[tuple[str, np.dtype, tuple, int, int]]:
  """(name, dtype, shape, begin, end) of every tensor, after checking that each one's declared
  shape fits its byte range and the range lies inside the data."""
  if not isinstance(header, dict):
    raise UnreadableWeightsError(path, "its header is not a JSON object")
  out = []
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if not (isinstance(info, dict) and isinstance(info.get("shape"), list)
            and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
            and all(isinstance(x, int) and x >= 0 for x in info["shape"] + info["data_offsets"])):
      raise UnreadableWeightsError(path, f"tensor {name!r} has a malformed entry in the header "
                                   f"({str(info)[:120]})")
    if info.get("dtype") not in _DTYPES:
      raise UnreadableWeightsError(path, f"tensor {name!r} has unsupported dtype "
                                   f"{info.get('dtype')}")
    dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
    shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
    need = math.prod(shape) * dtype.itemsize
    if end > data_bytes or begin > end:
      raise UnreadableWeightsError(path, f"tensor {name!r} spans bytes {begin}..{end} of the data "
                                   f"but only {data_bytes} are there; the file is truncated")
    if end - begin != need:
      raise UnreadableWeightsError(path, f"tensor {name!r} declares shape {list(shape)} of "
                                   f"{info['dtype']} ({need} bytes) over {end - begin} bytes; the "
                                   "header is damaged or crafted")
    out.append((name, dtype, shape, begin, end))
  return out


def read(path: str) -> dict[str, np.ndarray]:
  """All tensors of a ``.safetensors`` file as numpy arrays (in file order). Every declared size
  is checked against the file before anything is allocated."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    raw_len = f.read(8)
    if len(raw_len) < 8:
      raise UnreadableWeightsError(path, f"{size} bytes is too short for a .safetensors header")
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len > size - 8:
      raise UnreadableWeightsError(path, f"the header claims {header_len} bytes but the file has "
                                   f"{size}; it is truncated or not a .safetensors file")
    if header_len > MAX_HEADER_BYTES:
      raise UnreadableWeightsError(path, f"the header claims {header_len} bytes, more than the "
                                   f"format's limit of {MAX_HEADER_BYTES}")
    try:
      header = json.loads(f.read(header_len))
    except ValueError as e:
      raise UnreadableWeightsError(path, f"its header is not valid JSON ({e})") from e
    entries = _entries(path, header, size - 8 - header_len)
    body = f.read()
  return {name: np.frombuffer(body, dtype, math.prod(shape), begin).reshape(shape).copy()
          for name, dtype, shape, begin, end in entries}


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
  """Writes ``tensors`` (name -> array) as a ``.safetensors`` file."""
  header, chunks, offset = {}, [], 0
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  for name, array in tensors.items():
    array = np.asarray(array, order="C")  # (ascontiguousarray would make a scalar 1-D)
    if array.dtype not in _NAMES:
      raise ValueError(f"Tensor {name!r}: dtype {array.dtype} cannot be stored in .safetensors.")
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)) + encoded)
    for data in chunks:
      f.write(data)
