"""Errors of weight import: each names the file and what to do."""


class WeightsError(ValueError):
  """Pre-trained weights cannot be used as given; the message says why and how to fix it."""


class UnreadableWeightsError(WeightsError):
  """A weight file is missing, truncated or not in a format this library reads."""

  def __init__(self, path: str, why: str):
    super().__init__(
        f"Cannot read pre-trained weights from {path!r}: {why}. Check the path and re-download or "
        "re-export the file (.safetensors, .npz, or a PyTorch .pth/.pth.tar/.pt).")
    self.path = path
