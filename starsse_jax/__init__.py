"""starsse_jax: ensembles and model soups for transfer learning (StarSSE, SSE, DE, FGE) in JAX.

Imported pre-trained weights: ``starsse_jax.weights``; data sources: ``starsse_jax.sources``;
the shipped configs by name: ``starsse_jax.configs.load("starsse")``.

The names below are imported when first used, so that loading a config (``configs``,
``configlib``) imports no JAX.
"""
import importlib

from starsse_jax import configs

# Public name -> the module that defines it.
_LAZY = {
    "Ensemble": "starsse_jax.evaluation", "evaluate": "starsse_jax.evaluation",
    "make_soups": "starsse_jax.evaluation", "finetune": "starsse_jax.api",
    "import_checkpoints": "starsse_jax.inputs", "pretrain": "starsse_jax.api",
    "run": "starsse_jax.api", "base_config": "starsse_jax.configlib",
    "validate": "starsse_jax.configlib", "load_transfer_data": "starsse_jax.data",
    "from_arrays": "starsse_jax.data", "METHODS": "starsse_jax.methods",
    "build_plan": "starsse_jax.methods",
}

__all__ = sorted(_LAZY) + ["configs"]
__version__ = "0.1.0"


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'starsse_jax' has no attribute {name!r}")
