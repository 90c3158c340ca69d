"""npw2v2: wav2vec 2.0 in pure NumPy.

>>> import npw2v2
>>> model = npw2v2.load("model.safetensors")            # doctest: +SKIP
>>> out = model(input_values, attention_mask=mask)      # doctest: +SKIP

Three layers, each importing only those below it:

    npw2v2.core   the model as pure functions of arrays and a config (NumPy only)
    npw2v2.io     weights, MMS languages and audio from files
    npw2v2.app    the model object, the pipeline, decoding, the command line and its tools

The names below are loaded on first use, so ``import npw2v2.core.layers`` loads the core alone.
"""
import importlib

from . import _openblas  # noqa: F401  (first: it must act before NumPy is loaded)

_PUBLIC = {
    "BASE": "core.config", "LARGE": "core.config", "Config": "core.config",
    "Output": "core.wav2vec2", "forward": "core.wav2vec2",
    "random_weights": "core.params",
    "CheckpointError": "io.weights",
    "Wav2Vec2": "app.model", "from_tensors": "app.model", "load": "app.model",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'npw2v2' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
