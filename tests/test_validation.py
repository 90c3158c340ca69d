"""Careless or hostile configs and settings: one clear error naming the file and the key, before
anything is built from an unchecked number (issue 17).

The corpus is built here, in tmp_path: a tiny 2-layer CTC model saved as a Hugging Face folder
or as one converted .safetensors file, with one thing broken at a time.
"""
import dataclasses
import json
import time
import tracemalloc
from pathlib import Path

import pytest
from safetensors.numpy import save_file

import npw2v2
from convert.cli import main as convert_main
from convert.errors import ConversionError
from convert.fairseq import hf_config
from golden import GOLDEN
from npw2v2.core.config import MAX_LAYERS
from npw2v2.io import weights

TINY = npw2v2.Config(conv_dim=(8,) * 7, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                     num_hidden_layers=2, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                     vocab_size=10, architectures=("Wav2Vec2ForCTC",))
TENSORS = npw2v2.random_weights(TINY)
VOCAB = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C", "D", "E"])}
PREPROCESSOR = {"do_normalize": True, "sampling_rate": 16000, "feature_size": 1}
TOKENIZER = {"word_delimiter_token": "|", "pad_token": "<pad>"}
FAIRSEQ_NOPROJ = GOLDEN / "fairseq" / "w2v_noproj_cfg.pt"  # conv width = model width: no post_extract_proj


DROP = object()  # config(key=DROP): the key left out


def config(**changes) -> dict:
    return {k: v for k, v in {**TINY.to_dict(), **changes}.items() if v is not DROP}


def write_json(path, value):
    path.write_text(value if isinstance(value, str) else json.dumps(value))


def hf_folder(tmp_path, cfg=None, vocab=VOCAB, preprocessor=PREPROCESSOR, tokenizer=TOKENIZER, name="model"):
    """A Hugging Face folder of the tiny model; ``cfg`` is written as given (a dict, or raw text)."""
    folder = tmp_path / name
    folder.mkdir()
    write_json(folder / "config.json", config() if cfg is None else cfg)
    save_file(TENSORS, str(folder / "model.safetensors"))
    for file, value in (("vocab.json", vocab), ("preprocessor_config.json", preprocessor),
                        ("tokenizer_config.json", tokenizer)):
        if value is not None:
            write_json(folder / file, value)
    return folder


def single_file(tmp_path, cfg=None, **metadata):
    """One .safetensors file with the config (and any settings) in its metadata, as JSON text."""
    path = tmp_path / "model.safetensors"
    values = {"config": config() if cfg is None else cfg, **metadata}
    save_file(TENSORS, str(path), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()})
    return path


def refused(path, *named) -> str:
    """npw2v2.load's CheckpointError message, which must name the path and each of ``named``."""
    with pytest.raises(npw2v2.CheckpointError) as error:
        npw2v2.load(path)
    message = str(error.value)
    for part in (str(path), *named):
        assert part in message, f"{part!r} not in {message!r}"
    return message


# ---------------------------------------------------------------------------
# The corpus's own valid cases: each bad one below differs from these by one thing


def test_valid_folder_and_file_load(tmp_path):
    model = npw2v2.load(hf_folder(tmp_path))
    assert model.config == TINY and model.sampling_rate == 16000 and model.vocab == VOCAB
    model = npw2v2.load(single_file(tmp_path, vocab=VOCAB, preprocessor={**PREPROCESSOR, "sampling_rate": 8000}))
    assert model.config == TINY and model.sampling_rate == 8000


# ---------------------------------------------------------------------------
# config.json


@pytest.mark.parametrize("text", ["[1, 2]", '"wav2vec2"', "12", "null", "true"],
                         ids=["array", "string", "number", "null", "bool"])
def test_config_that_is_not_an_object(tmp_path, text):
    folder = hf_folder(tmp_path, text)
    message = refused(folder, str(folder / "config.json"), "JSON object")
    assert "\n" not in message


def test_config_nested_too_deeply(tmp_path):
    folder = hf_folder(tmp_path, "[" * 100_000 + "]" * 100_000)
    refused(folder, str(folder / "config.json"), "nested too deeply")


# (key, how to set a bad value into the config dict)
def _element(key, index):
    def put(d, value):
        values = list(d[key])
        values[index] = value
        d[key] = values
    return put


def _plain(key):
    def put(d, value):
        d[key] = value
    return put


BAD_KEYS = {
    "num_hidden_layers": _plain("num_hidden_layers"),
    "hidden_size": _plain("hidden_size"),
    "num_attention_heads": _plain("num_attention_heads"),
    "intermediate_size": _plain("intermediate_size"),
    "vocab_size": _plain("vocab_size"),
    "conv_stride[0]": _element("conv_stride", 0),
    "conv_kernel[2]": _element("conv_kernel", 2),
    "num_conv_pos_embeddings": _plain("num_conv_pos_embeddings"),
}
BAD_VALUES = {"string": "12", "float": 12.5, "whole_float": 16.0, "null": None, "bool": True, "negative": -4,
              "zero": 0, "billion": 10**9}


def bad_config(key, kind) -> dict:
    d = config()
    BAD_KEYS[key](d, BAD_VALUES[kind])
    return d


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
@pytest.mark.parametrize("key", sorted(BAD_KEYS))
def test_bad_value_in_config_json(tmp_path, key, kind):
    """Each kind of bad value, for each key: one line naming config.json and the key, no traceback."""
    folder = hf_folder(tmp_path, bad_config(key, kind))
    start = time.perf_counter()
    if key == "num_hidden_layers" and kind == "zero":  # an encoder without layers is valid: the tensors disagree
        refused(folder, "config says num_hidden_layers 0, the file holds 2 encoder layers")
    else:
        assert "\n" not in refused(folder, str(folder / "config.json"), key)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("kind", ["string", "null", "zero", "billion"])
@pytest.mark.parametrize("key", ["num_hidden_layers", "conv_stride[0]", "vocab_size"])
def test_bad_value_in_file_metadata(tmp_path, key, kind):
    """The same configs in a converted file's metadata: the file and the key named."""
    path = single_file(tmp_path, bad_config(key, kind))
    refused(path, "config", key)


@pytest.mark.parametrize("changes, named", [
    ({"conv_kernel": [10, 3, 3, 3, 3, 2]}, "same length"),
    ({"conv_dim": [8] * 8}, "same length"),
    ({"conv_stride": "5,2,2,2,2,2,2"}, "conv_stride must be a list"),
    ({"conv_dim": None}, "conv_dim must be a list"),
    ({"conv_kernel": [10, "3", 3, 3, 3, 2, 2]}, "conv_kernel[1]"),
    ({"conv_stride": []}, "conv_stride must be a list of 1 to"),
    ({"hidden_size": 17}, "hidden_size 17 is not divisible by num_attention_heads 2"),
    ({"num_conv_pos_embedding_groups": 3}, "num_conv_pos_embedding_groups 3"),
    ({"layer_norm_eps": "1e-5"}, "layer_norm_eps"),
    ({"layer_norm_eps": 0}, "layer_norm_eps"),
    ({"do_stable_layer_norm": "false"}, "do_stable_layer_norm must be true or false"),
    ({"feat_extract_norm": None}, "feat_extract_norm"),
    ({"architectures": "Wav2Vec2ForCTC"}, "architectures must be a list of strings"),
    ({"num_labels": 10**9, "id2label": DROP}, "num_labels must be at most"),
    ({"num_labels": "3", "id2label": DROP}, "num_labels must be a whole number"),
    ({"conv_stride": [1000] * 7, "conv_kernel": [1000] * 7}, "receptive field"),
], ids=lambda v: None if isinstance(v, dict) else v.split(" ")[0])
def test_inconsistent_or_mistyped_config(tmp_path, changes, named):
    folder = hf_folder(tmp_path, config(**changes))
    refused(folder, str(folder / "config.json"), named)


def test_config_from_dict_refuses_a_non_dict():
    for value in ([1, 2], "x", None, 3):
        with pytest.raises(ValueError, match="config: must be a JSON object"):
            npw2v2.Config.from_dict(value)


def test_valid_configs_are_unchanged():
    """Defaults and real shapes pass; a JSON list becomes the same tuple; an encoder may have no layers."""
    assert npw2v2.Config() == npw2v2.BASE
    xls_r_2b = {"hidden_size": 1920, "num_hidden_layers": 48, "num_attention_heads": 16, "intermediate_size": 7680}
    assert npw2v2.Config.from_dict(xls_r_2b).num_hidden_layers == 48
    assert npw2v2.Config.from_dict({"num_hidden_layers": 0}).num_hidden_layers == 0
    assert npw2v2.Config.from_dict({"architectures": None}).architectures == ()
    assert dataclasses.replace(TINY, num_hidden_layers=3).num_hidden_layers == 3


# ---------------------------------------------------------------------------
# The tensors win over the config's counts


def test_a_billion_layers_for_a_file_of_two_fails_fast_without_allocating(tmp_path):
    folder = hf_folder(tmp_path, config(num_hidden_layers=10**9))
    npw2v2.load(hf_folder(tmp_path, name="warm"))  # imports and caches out of the measurement
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(folder, str(folder / "config.json"), "num_hidden_layers", "1000000000")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 1
    assert peak < 3_000_000, f"{peak:,} bytes"


def test_the_most_layers_a_config_may_claim_are_checked_against_the_file(tmp_path, monkeypatch):
    """Within the bound, the file's 2 layers win: no table of expected tensors is built from the claim."""
    def not_called(*args, **kwargs):
        raise AssertionError("expected_shapes built from a count the tensors contradict")

    monkeypatch.setattr(weights, "expected_shapes", not_called)
    path = single_file(tmp_path, config(num_hidden_layers=MAX_LAYERS))
    message = refused(path, f"config says num_hidden_layers {MAX_LAYERS}, the file holds 2 encoder layers")
    assert "\n" not in message


def test_a_layer_or_two_beyond_the_file_lists_every_missing_tensor(tmp_path):
    """A truncated file: the count first, then each missing tensor."""
    message = refused(single_file(tmp_path, config(num_hidden_layers=3)),
                      "config says num_hidden_layers 3, the file holds 2 encoder layers",
                      "missing: encoder.layers.2.attention.q_proj.weight")
    assert message.index("config says") < message.index("missing:")


def test_conv_layers_and_widths_are_read_from_the_tensors(tmp_path):
    refused(single_file(tmp_path, config(conv_dim=[8] * 60, conv_kernel=[1] * 60, conv_stride=[1] * 60)),
            "config says len(conv_dim) 60, the file holds 7 conv layers")
    (tmp_path / "model.safetensors").unlink()
    refused(single_file(tmp_path, config(hidden_size=32)),
            "config says hidden_size 32, the file's encoder.layer_norm.weight has 16 entries")


# ---------------------------------------------------------------------------
# Settings: preprocessor_config.json, vocab.json, tokenizer_config.json


@pytest.mark.parametrize("rate", [0, -16000, "16k", 1e9, 10**9, 999, None, True, 16000.0])
def test_bad_sampling_rate(tmp_path, rate):
    folder = hf_folder(tmp_path, preprocessor={**PREPROCESSOR, "sampling_rate": rate})
    refused(folder, str(folder / "preprocessor_config.json"), "sampling_rate")


@pytest.mark.parametrize("preprocessor, named", [
    ({**PREPROCESSOR, "do_normalize": "yes"}, "do_normalize"),
    ([16000], "JSON object"),
])
def test_bad_preprocessor(tmp_path, preprocessor, named):
    folder = hf_folder(tmp_path, preprocessor=preprocessor)
    refused(folder, str(folder / "preprocessor_config.json"), named)


@pytest.mark.parametrize("rate", [0, "16k", 1e9])
def test_bad_sampling_rate_in_file_metadata(tmp_path, rate):
    refused(single_file(tmp_path, preprocessor={**PREPROCESSOR, "sampling_rate": rate}), "preprocessor",
            "sampling_rate")


@pytest.mark.parametrize("vocab, named", [
    (["<pad>", "A"], "JSON object"),
    ('"abc"', "JSON object"),
    ({}, "JSON object"),
    ({**VOCAB, "F": 10}, "token 'F' has id 10, but the CTC head has 10 outputs"),
    ({**VOCAB, "F": 10**9}, "'F'"),
    ({**VOCAB, "F": -1}, "'F'"),
    ({**VOCAB, "F": "5"}, "'F'"),
    ({**VOCAB, "F": 5.0}, "'F'"),
    ({"eng": VOCAB, "fra": {**VOCAB, "É": "x"}}, "language 'fra': token 'É'"),
    ({"eng": {**VOCAB, "F": 12}, "fra": VOCAB}, "language 'eng': token 'F' has id 12"),
    ({"eng": {}}, "language 'eng'"),
], ids=["array", "string", "empty", "beyond_head", "billion", "negative", "string_id", "float_id",
        "nested_bad_id", "nested_beyond_head", "nested_empty"])
def test_bad_vocab(tmp_path, vocab, named):
    folder = hf_folder(tmp_path, vocab=vocab)
    refused(folder, str(folder / "vocab.json"), named)


def test_bad_vocab_in_file_metadata(tmp_path):
    refused(single_file(tmp_path, vocab={**VOCAB, "F": 10}), "vocab in the metadata", "CTC head has 10 outputs")


def test_nested_vocab_within_the_head_loads(tmp_path):
    model = npw2v2.load(hf_folder(tmp_path, vocab={"eng": VOCAB, "fra": {"<pad>": 0, "X": 40}}))
    assert model.vocab == VOCAB


@pytest.mark.parametrize("delimiter", [None, 5, ["|"]])
def test_bad_word_delimiter(tmp_path, delimiter):
    folder = hf_folder(tmp_path, tokenizer={**TOKENIZER, "word_delimiter_token": delimiter})
    refused(folder, str(folder / "tokenizer_config.json"), "word_delimiter_token")


def test_bad_settings_json_in_file_metadata(tmp_path):
    refused(single_file(tmp_path, tokenizer="{not json"), "tokenizer", "not JSON")


# ---------------------------------------------------------------------------
# The command lines


def convert(capsys, *args) -> tuple[int, str]:
    code = convert_main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_error_line(stderr: str, prog: str, *named) -> None:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    for part in named:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"


@pytest.mark.parametrize("key, kind", [("num_hidden_layers", "string"), ("num_hidden_layers", "billion"),
                                       ("hidden_size", "null"), ("conv_stride[0]", "zero"),
                                       ("vocab_size", "float"), ("num_conv_pos_embeddings", "negative")])
def test_converter_refuses_a_bad_config_in_one_line(tmp_path, capsys, key, kind):
    folder = hf_folder(tmp_path, bad_config(key, kind))
    out = tmp_path / "out.safetensors"
    code, stderr = convert(capsys, folder, out)
    assert code == 1
    assert_one_error_line(stderr, "npw2v2-convert", str(folder), key)
    assert not out.exists()


@pytest.mark.parametrize("files, named", [
    ({"cfg": "[1, 2]"}, "JSON object"),
    ({"cfg": "[" * 100_000 + "]" * 100_000}, "nested too deeply"),
    ({"preprocessor": {**PREPROCESSOR, "sampling_rate": 0}}, "preprocessor_config.json: sampling_rate"),
    ({"vocab": {**VOCAB, "F": 10}}, "vocab.json: token 'F' has id 10"),
    ({"tokenizer": {"word_delimiter_token": 5}}, "tokenizer_config.json: word_delimiter_token"),
], ids=["config_array", "config_deep", "sampling_rate", "vocab", "delimiter"])
def test_converter_refuses_bad_settings_in_one_line(tmp_path, capsys, files, named):
    folder = hf_folder(tmp_path, **files)
    out = tmp_path / "out.safetensors"
    code, stderr = convert(capsys, folder, out)
    assert code == 1
    assert_one_error_line(stderr, "npw2v2-convert", str(folder), named)
    assert not out.exists()


def test_converter_output_of_a_valid_folder_still_loads(tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    code, stderr = convert(capsys, hf_folder(tmp_path), out)
    assert code == 0, stderr
    assert npw2v2.load(out).config == TINY


def test_npw2v2_cli_prints_one_error_line(tmp_path, capsys):
    """The brief's case: config.json an array beside a real model file."""
    from npw2v2.app.cli import main

    folder = hf_folder(tmp_path, "[1, 2]")
    code = main(["transcribe", str(Path(npw2v2.__file__).parent / "bundled" / "examples" / "eight.flac"),
                 "-m", str(folder)])
    assert code != 0
    assert_one_error_line(capsys.readouterr().err, "npw2v2", str(folder / "config.json"), "JSON object")


# ---------------------------------------------------------------------------
# fairseq: the configuration derived from a checkpoint's args/cfg


@pytest.mark.parametrize("option, value, named", [
    ("encoder_layers", "12", "encoder_layers must be a whole number"),
    ("encoder_layers", None, "encoder_layers must be a whole number"),
    ("encoder_layers", 12.0, "encoder_layers must be a whole number"),
    ("encoder_layers", 10**9, ("num_hidden_layers must be at most 1000 (far beyond any published model), got "
                               "1000000000 (from fairseq's encoder_layers)")),
    ("encoder_embed_dim", 0, "hidden_size must be a whole number >= 1, got 0 (from fairseq's encoder_embed_dim)"),
    ("encoder_attention_heads", 5, "(from fairseq's encoder_embed_dim, encoder_attention_heads)"),
    ("conv_pos", -3, "num_conv_pos_embeddings must be a whole number >= 1, got -3 (from fairseq's conv_pos)"),
    ("logit_temp", "hot", "logit_temp must be a number"),
    ("conv_feature_layers", "[(512, 10, 0)]", ("conv_stride[0] must be a whole number >= 1, got 0 "
                                               "(from fairseq's conv_feature_layers)")),
])
def test_fairseq_config_is_checked(option, value, named):
    model = {"encoder_embed_dim": 768, "encoder_layers": 12, option: value}
    with pytest.raises(ConversionError) as error:
        hf_config(model, None)
    assert named in str(error.value)


def test_fairseq_checkpoint_with_a_bad_config_is_one_line(tmp_path, capsys, monkeypatch):
    """A real fairseq file whose configuration says 10**9 layers: the source and the option named."""
    from convert import fairseq

    state = fairseq.load_torch_file(FAIRSEQ_NOPROJ)
    state["cfg"]["model"]["encoder_layers"] = 10**9
    monkeypatch.setattr(fairseq, "load_torch_file", lambda path: state)
    code, stderr = convert(capsys, FAIRSEQ_NOPROJ, tmp_path / "out.safetensors")
    assert code == 1
    assert_one_error_line(stderr, "npw2v2-convert", str(FAIRSEQ_NOPROJ), "num_hidden_layers", "encoder_layers")


def test_fairseq_identity_projection_is_not_built_from_the_config(tmp_path, capsys, monkeypatch):
    """Conv and model widths claimed equal and huge: no identity of that size; the shapes are refused."""
    from convert import fairseq

    state = fairseq.load_torch_file(FAIRSEQ_NOPROJ)
    state["cfg"]["model"].update(encoder_embed_dim=60_000, conv_feature_layers="[(60000, 10, 5)] + [(60000, 3, 2)] * 6")
    monkeypatch.setattr(fairseq, "load_torch_file", lambda path: state)
    tracemalloc.start()
    try:
        code, stderr = convert(capsys, FAIRSEQ_NOPROJ, tmp_path / "out.safetensors")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert code == 1
    assert "config says hidden_size 60000" in stderr and "Traceback" not in stderr
    assert peak < 100_000_000, f"{peak:,} bytes"
