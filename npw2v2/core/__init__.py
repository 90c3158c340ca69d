"""The core: wav2vec 2.0 as pure functions of arrays and a config.

It imports NumPy (CuPy only through ``backend``) and nothing above it: no files, no audio,
no printing. In the order a forward pass meets them:

    config         Config: the config.json keys inference needs
    lengths        sample and frame lengths, masks
    layers         the generic operations, reference versions (conv1d, layer_norm, gelu, attention, ...)
    fast           faster versions of the expensive ones, each tested against its reference
    threads        element-wise work in cache-sized blocks, over threads (for fast)
    ops            the two paths: REFERENCE and FAST
    conv_encoder   the convolutional feature encoder (reference version)
    transformer    feature projection, positional conv, transformer layers
    hubert, data2vec_audio, wavlm   what each family member does differently
    conformer      Wav2Vec2-Conformer's encoder: conformer blocks, relative or rotary positions
    adapters       the down-sampling adapter and MMS's attention adapters
    heads          CTC, pretraining, classifiers
    wav2vec2       the whole forward pass, and the padded batch item by item
    params         which tensors a config needs, random weights, the nested parameter dict
    backend        the array module of an array (NumPy, CuPy), erf
    trace          how a forward pass shows its stages

A model of the family that differs from wav2vec 2.0 (HuBERT, WavLM, the conformer) is a
new file here beside wav2vec2.py, reusing these blocks and writing only its own.
"""
