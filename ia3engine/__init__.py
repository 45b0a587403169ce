"""ia3engine: (IA)^3 tuning as a pure library, compatible with PEFT's on-disk format.

Names are imported lazily so that `import ia3engine` (and the CLI's start-up) stays fast.
"""

from importlib import import_module

_EXPORTS = {
    "IA3Config": "config",
    "preview_targets": "targets",
    "IA3Model": "model",
    "get_ia3_model": "model",
    "load_ia3_model": "model",
    "IA3Trainer": "hf_trainer",
    "TrainSpec": "training.spec",
    "train": "training.run",
    "TrainResult": "training.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ia3engine' has no attribute {name!r}")
    return getattr(import_module(f"ia3engine.{_EXPORTS[name]}"), name)
