"""Record transformers' x-vector heads for npw2v2's golden tests (golden/data/*xvector*).

Run in the golden environment (torch, transformers 5):

    python golden/record_xvector.py    # rewrites golden/data/{tiny_*xvector*,xvector_checkpoints}

As golden/record_hubert.py does, with its record_activations (the stage names of golden/record.py,
plus ``embeddings``, the x-vector head's speaker embeddings, and its ``logits``): Wav2Vec2ForXVector,
Data2VecAudioForXVector and WavLMForXVector (eval mode, eager attention) holding
npw2v2.random_weights(config, seed).
The inputs are longer than the other heads' (27, 17 and 21 frames): the TDNN layers take up to 14
frames off, and a shorter input's dilated frames must reach its padding in the batch, where
transformers' count of valid TDNN frames (no dilation) takes them in.
golden/record_unispeech.py records UniSpeech-SAT's x-vector with build_model from here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import DATA, TINY, WEIGHT_SEED, record_family  # noqa: E402
from record_data2vec_audio import DATA2VEC  # noqa: E402
from record_hubert import build_family_model, record_activations, save_model  # noqa: E402
from record_wavlm import CONFIGS as WAVLM_CONFIGS  # noqa: E402


XVECTOR_LENGTHS = [9000, 5800, 7321]  # 27, 17 and 21 frames
# transformers' TDNN shape (kernels 5, 3, 3, 1, 1; dilations 1, 2, 3, 1, 1: 14 frames off, where
# transformers counts 8), narrow
TDNN = dict(tdnn_dim=[8, 8, 8, 8, 16], tdnn_kernel=[5, 3, 3, 1, 1], tdnn_dilation=[1, 2, 3, 1, 1],
            xvector_output_dim=6)
CONFIGS = {
    # like wav2vec2-base-superb-sv: group norm, post-LN, the last hidden state
    "tiny_xvector": dict(TINY, architectures=["Wav2Vec2ForXVector"], feat_extract_norm="group", **TDNN),
    # a learned mix of every hidden state of a pre-LN model; three TDNN layers of other widths, kernels
    # and dilations (9 frames off, 5 in transformers' count); 3 speakers for the loss's weights
    "tiny_xvector_weighted": dict(TINY, architectures=["Wav2Vec2ForXVector"], feat_extract_norm="layer",
                                  do_stable_layer_norm=True, conv_bias=True, use_weighted_layer_sum=True,
                                  tdnn_dim=[12, 8, 10], tdnn_kernel=[3, 3, 2], tdnn_dilation=[2, 1, 3],
                                  xvector_output_dim=5, id2label={0: "ann", 1: "bob", 2: "cy"}),
    # data2vec-audio's encoder (its stack of positional convs) under the same head
    "tiny_data2vec_audio_xvector": dict(DATA2VEC, model_type="data2vec-audio",
                                        architectures=["Data2VecAudioForXVector"], num_conv_pos_embeddings=2,
                                        conv_pos_kernel_size=5, **TDNN),
    # WavLM's relative position bias (tiny_wavlm's encoder: 16 buckets up to 10 frames), as wavlm-base-plus-sv
    "tiny_wavlm_xvector": dict(WAVLM_CONFIGS["tiny_wavlm"], model_type="wavlm", architectures=["WavLMForXVector"],
                               **TDNN),
}
HEAD_STAGES = ("logits", "embeddings")


def build_model(config: dict):
    return build_family_model(config, config.get("model_type", "wav2vec2"))


def record_model(name: str, config: dict, full_size: bool = False, base_stages=(), lengths=None) -> dict:
    """Every case of one configuration into golden/data/NAME/ (a tiny one with its model.safetensors
    and config.json, as transformers saves them); returns its manifest entry."""
    model, weights = build_model(config)
    folder, lengths, cases = record_activations(name, model, weights, full_size, base_stages, lengths)
    if not full_size:
        save_model(model, weights, folder)
    model.config.to_json_file(str(folder / "config.json"))
    return {"config": config, "class": type(model).__name__, "lengths": lengths, "cases": list(cases),
            "weights": f"npw2v2.random_weights(config, seed={WEIGHT_SEED})" if full_size else "model.safetensors"}


def record_config(name: str) -> dict:
    return record_model(name, CONFIGS[name], lengths=XVECTOR_LENGTHS)


def write_checkpoint_fixture() -> dict:
    """tiny_xvector as transformers' PyTorch .bin state dict (wav2vec2. prefix, the loss's
    objective.weight), for the converter."""
    model, _ = build_model(CONFIGS["tiny_xvector"])
    folder = DATA / "xvector_checkpoints" / "hf_bin"
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    model.config.to_json_file(str(folder / "config.json"))
    return {"model": "tiny_xvector", "layouts": ["hf_bin"]}


def main() -> None:
    record_family("x-vector", "record_xvector", CONFIGS, record_config, "xvector_checkpoints",
                  write_checkpoint_fixture)


if __name__ == "__main__":
    main()
