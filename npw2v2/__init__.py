"""npw2v2: wav2vec 2.0 in pure NumPy.

>>> import npw2v2
>>> model = npw2v2.load("model.safetensors")            # doctest: +SKIP
>>> out = model(input_values, attention_mask=mask)      # doctest: +SKIP
"""
from . import _openblas  # noqa: F401  (first: it must act before NumPy is loaded)
from .config import BASE, LARGE, Config
from .model import Output, Wav2Vec2, forward
from .weights import CheckpointError, from_tensors, load, random_weights

__all__ = ["BASE", "LARGE", "CheckpointError", "Config", "Output", "Wav2Vec2", "forward",
           "from_tensors", "load", "random_weights"]
__version__ = "0.1.0"
