"""Record transformers' w2v-BERT 2.0 activations for npw2v2's golden tests (golden/data/*w2v_bert*).

Run in the golden environment (torch, transformers 5), from the repository root:

    python golden/record_w2v_bert.py   # rewrites golden/data/{tiny_w2v_bert*,w2v_bert_2_0,w2v_bert_checkpoints}

As golden/record_conformer.py does, but the model's input is filter-bank features: each case's
audio (golden/signals.py's speech-like signals) goes through transformers' SeamlessM4TFeatureExtractor
with facebook/w2v-bert-2.0's preprocessor settings (golden/record_fbank.py's PREPROCESSOR), a list of
items as one padded batch with its frame mask, one item alone. The recorded ``input_values`` are the
extractor's ``input_features`` [B, T, 160] (the name the golden machinery reads, tests/golden.py) and
``attention_mask`` its frame mask; the batch case also keeps the audio (``samples``, ``sample_mask``) so
that tests check npw2v2.core.fbank on it. Then Wav2Vec2BertModel, ...ForCTC,
...ForSequenceClassification, ...ForAudioFrameClassification and ...ForXVector (eval mode, eager
attention) holding npw2v2.random_weights(config, seed): extract_features (the LayerNorm'd features),
every hidden state, last_hidden_state (after the adapter, when there is one) and the head's outputs.

The tiny configurations cover every position scheme (relative_key, clipped within the inputs' few
frames; relative; rotary), depthwise kernels longer than the short item, the adapter with and
without its projection and intermediate_ffn, and each head. w2v_bert_2_0 is facebook/w2v-bert-2.0's
architecture (Wav2Vec2BertConfig's defaults, which are that model's config.json) with random
weights. Besides: a converter fixture, the tiny CTC model as transformers' .bin folder with its
vocabulary and preprocessor_config.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import SeamlessM4TFeatureExtractor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import BASE_LENGTHS, DATA, INPUT_SEED, VOCAB_960H, WEIGHT_SEED, record_family  # noqa: E402
from record_fbank import PREPROCESSOR  # noqa: E402
from record_hubert import build_family_model, save_model  # noqa: E402
from record_xvector import TDNN  # noqa: E402
from signals import speech_like_batch  # noqa: E402

torch.set_num_threads(1)

# Small widths; relative_key offsets clipped at 4 frames left and 2 right, so that the inputs' 1 to 14
# feature vectors reach past both clips; swish as in the published model; kernel 5 > the 1-vector item.
TINY_W2V_BERT = dict(model_type="wav2vec2-bert", architectures=["Wav2Vec2BertModel"], hidden_size=32,
                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, hidden_act="swish",
                     position_embeddings_type="relative_key", left_max_position_embeddings=4,
                     right_max_position_embeddings=2, conv_depthwise_kernel_size=5)
CONFIGS = {
    # like a w2v-bert-2.0 CTC fine-tune: relative_key positions, a CTC head over 32 characters
    "tiny_w2v_bert_ctc": dict(TINY_W2V_BERT, architectures=["Wav2Vec2BertForCTC"], vocab_size=32),
    # the adapter narrowing 32 -> 24 (proj + LayerNorm), two strided layers, the intermediate FFN before it, CTC
    "tiny_w2v_bert_adapter": dict(TINY_W2V_BERT, architectures=["Wav2Vec2BertForCTC"], vocab_size=32,
                                  add_adapter=True, output_hidden_size=24, num_adapter_layers=2,
                                  use_intermediate_ffn_before_adapter=True, conv_depthwise_kernel_size=3),
    # the adapter at the encoder's width (no proj), one layer, GELU in its feed-forward; the bare encoder
    "tiny_w2v_bert_adapter_model": dict(TINY_W2V_BERT, add_adapter=True, num_adapter_layers=1, adapter_act="gelu",
                                        left_max_position_embeddings=8, right_max_position_embeddings=0),
    # projector, mean over valid frames, classifier over a learned mix of every hidden state; the conformer's
    # relative (Transformer-XL) positions, which w2v-BERT's attention also has
    "tiny_w2v_bert_classifier": dict(TINY_W2V_BERT, architectures=["Wav2Vec2BertForSequenceClassification"],
                                     classifier_proj_size=20, id2label={0: "yes", 1: "no", 2: "up"},
                                     use_weighted_layer_sum=True, position_embeddings_type="relative"),
    # rotary positions, three layers, frame by frame; a large layer_norm_eps, which every LayerNorm of
    # w2v-BERT takes (the conformer's block norms do not)
    "tiny_w2v_bert_frame_classifier": dict(TINY_W2V_BERT, architectures=["Wav2Vec2BertForAudioFrameClassification"],
                                           num_hidden_layers=3, position_embeddings_type="rotary", layer_norm_eps=0.05,
                                           id2label={0: "a", 1: "b", 2: "c", 3: "d"}),
    # an x-vector head (golden/record_xvector.py's TDNN), no positions at all, on its longer inputs
    "tiny_w2v_bert_xvector": dict(TINY_W2V_BERT, architectures=["Wav2Vec2BertForXVector"],
                                  position_embeddings_type=None, **TDNN),
    # facebook/w2v-bert-2.0's architecture: Wav2Vec2BertConfig's defaults; weights regenerated by the tests
    "w2v_bert_2_0": dict(model_type="wav2vec2-bert", architectures=["Wav2Vec2BertModel"]),
}
FULL_SIZE = "w2v_bert_2_0"
# Even frame counts, so that an item alone has no half-padded last vector (the extractor masks one,
# which a case without a mask would count): 4840 samples: 28 frames, 14 feature vectors; 600: 2 frames,
# 1 vector; 3217: 18 frames, 9 vectors. The x-vector head's: 26, 17 and 22 vectors; full size: 49 and 27.
TINY_LENGTHS = [4840, 600, 3217]
XVECTOR_LENGTHS = [8680, 5800, 7321]
BASE_STAGES = ("input_values", "attention_mask", "frame_mask", "extract_features", "hidden_states.1",
               "hidden_states.12", "last_hidden_state")
HEAD_OUTPUTS = ("logits", "embeddings")


def extractor() -> SeamlessM4TFeatureExtractor:
    return SeamlessM4TFeatureExtractor(**{k: v for k, v in PREPROCESSOR.items() if k != "feature_extractor_type"})


def features(waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The extractor's input_features [B, T, 160] float32 and attention_mask [B, T] bool of a list of waveforms."""
    out = extractor()(waveforms, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
    return np.ascontiguousarray(out["input_features"], dtype=np.float32), out["attention_mask"].astype(bool)


def feature_cases(lengths: list[int]) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """The cases (features, mask or None) by name, as golden/record.py's padded_cases, and the batch's audio."""
    audio, sample_mask = speech_like_batch(lengths, INPUT_SEED)
    items = [audio[i, :n] for i, n in enumerate(lengths)]
    batch, mask = features(items)
    cases = {"single": (features(items[:1])[0], None), "batch": (batch, mask), "nomask": (batch, None)}
    cases.update({f"alone.{i}": (features([item])[0], None) for i, item in enumerate(items) if i > 0})
    assert all(features([item])[1].all() for item in items), "an item alone with a masked (half-padded) vector"
    return cases, (audio, sample_mask)


@torch.no_grad()
def run_case(model, input_features: np.ndarray, attention_mask: np.ndarray | None) -> dict:
    """Every stage of one forward pass, as float32 NumPy arrays; time-series as [B, T, ...]."""
    base = model.wav2vec2_bert if hasattr(model, "wav2vec2_bert") else model
    x = torch.from_numpy(input_features)
    mask = None if attention_mask is None else torch.from_numpy(attention_mask.astype(np.int64))
    out = base(x, attention_mask=mask, output_hidden_states=True)
    stages = {"input_values": input_features, "extract_features": out.extract_features.numpy(),
              "last_hidden_state": out.last_hidden_state.numpy()}
    stages.update({f"hidden_states.{i}": h.numpy() for i, h in enumerate(out.hidden_states)})
    if attention_mask is not None:
        stages["attention_mask"] = attention_mask
        stages["frame_mask"] = attention_mask
        if base.config.add_adapter:  # the adapter's output frames
            stages["output_frame_mask"] = base._get_feature_vector_attention_mask(
                out.last_hidden_state.shape[1], mask).numpy()
    if model is not base:
        head = model(x, attention_mask=mask)
        stages.update({k: getattr(head, k).numpy() for k in HEAD_OUTPUTS if getattr(head, k, None) is not None})
    return stages


def build_model(name: str):
    return build_family_model(CONFIGS[name], "wav2vec2-bert")


def record_config(name: str) -> dict:
    """Every case of one configuration into golden/data/NAME/; returns its manifest entry."""
    model, weights = build_model(name)
    full_size = name == FULL_SIZE
    lengths = BASE_LENGTHS if full_size else XVECTOR_LENGTHS if name.endswith("xvector") else TINY_LENGTHS
    cases, (audio, sample_mask) = feature_cases(lengths)
    if full_size:
        cases = {k: v for k, v in cases.items() if k in ("single", "batch", "alone.1")}
    tensors = {f"{case}.{stage}": np.ascontiguousarray(value)
               for case, (x, m) in cases.items() for stage, value in run_case(model, x, m).items()
               if not full_size or stage in BASE_STAGES}
    tensors.update({"batch.samples": audio, "batch.sample_mask": sample_mask})
    folder = DATA / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "activations.safetensors"))
    if not full_size:
        save_model(model, weights, folder)
    model.config.architectures = CONFIGS[name]["architectures"]
    model.config.to_json_file(str(folder / "config.json"))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    return {"config": CONFIGS[name], "class": type(model).__name__, "lengths": lengths, "cases": list(cases),
            "hidden_states": len([k for k in tensors if k.startswith("single.hidden_states.")]),
            "weights": f"npw2v2.random_weights(config, seed={WEIGHT_SEED})" if full_size else "model.safetensors"}


def write_checkpoint_fixtures() -> dict:
    """The converter's input: tiny_w2v_bert_ctc (Wav2Vec2BertForCTC) as transformers' .bin folder with its
    vocabulary and facebook/w2v-bert-2.0's preprocessor_config.json."""
    folder = DATA / "w2v_bert_checkpoints" / "hf_bin"
    model, _ = build_model("tiny_w2v_bert_ctc")
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    model.config.to_json_file(str(folder / "config.json"))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB_960H)}))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    return {"hf_bin": "tiny_w2v_bert_ctc", "names": sorted(model.state_dict())}


def main() -> None:
    record_family("w2v-BERT 2.0", "record_w2v_bert", CONFIGS, record_config, "w2v_bert_checkpoints",
                  write_checkpoint_fixtures)


if __name__ == "__main__":
    main()
