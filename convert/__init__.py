"""Checkpoint converter: public wav2vec 2.0 checkpoints to one self-contained .safetensors file.

Not yet written; see the converter issue. It may import npw2v2; npw2v2 never imports it.
"""
