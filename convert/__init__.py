"""npw2v2-convert: public wav2vec 2.0 checkpoints to one self-contained .safetensors file, without PyTorch.

Installed as the package ``npw2v2_convert`` (this folder, ``convert/``, in the repository).
It imports npw2v2's core and I/O layers; npw2v2 never imports it. A checkpoint is
untrusted input: torch_pickle reads PyTorch's pickles with an allowlist of inert stand-ins.
"""
