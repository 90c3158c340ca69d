"""MMS: languages switched at run time, from adapter files or bundled by the converter, against
transformers' load_adapter recordings (golden/data/tiny_mms)."""
import shutil

import numpy as np
import pytest

import npw2v2
from convert.cli import main as convert
from golden import GOLDEN, golden_error, recorded_case

MMS = GOLDEN / "tiny_mms"
MMS_BIN = GOLDEN / "checkpoints" / "hf_mms_bin"  # the same model as .bin files, adapters as adapter.LANG.bin
LANGUAGES = ["eng", "fra", "deu"]


def assert_speaks(model, language: str):
    """Every recorded case of the language: logits and last hidden state, padded batch against alone too."""
    for case in ("single", "batch", "alone.1", "alone.2"):
        ref = recorded_case("tiny_mms", f"{language}.{case}")
        out = model(ref["input_values"], ref.get("attention_mask"))
        for stage in ("last_hidden_state", "logits"):
            err = golden_error(getattr(out, stage), ref[stage], out.frame_mask)
            assert err <= 1e-4, f"{language} {case} {stage}: {err:.2e}"
    batch = model(recorded_case("tiny_mms", f"{language}.batch")["input_values"],
                  recorded_case("tiny_mms", f"{language}.batch")["attention_mask"])
    alone = recorded_case("tiny_mms", f"{language}.alone.1")["logits"]
    assert golden_error(batch.logits[1:2, :alone.shape[1]], alone) <= 1e-4


def test_folder_starts_in_english_and_switches_from_adapter_files():
    model = npw2v2.load(MMS)
    assert model.language == "eng" and model.languages == sorted(LANGUAGES)
    assert_speaks(model, "eng")
    for language in ("fra", "deu", "eng", "fra"):  # back and forth: nothing of the previous language stays
        model.set_language(language)
        assert model.language == language
        assert model.vocab == {t: i for i, t in enumerate(recorded_vocabulary(language))}
        assert model.config.vocab_size == len(model.vocab)
        assert_speaks(model, language)


def recorded_vocabulary(language: str) -> list[str]:
    import json

    vocab = json.loads((MMS / "vocab.json").read_text())[language]
    return sorted(vocab, key=vocab.get)


def test_converter_bundles_languages_from_bin_files(tmp_path, capsys):
    out = tmp_path / "mms.safetensors"
    assert convert([str(MMS_BIN), str(out), "--languages", "all"]) == 0
    assert "bundled the adapters and CTC heads of 2 languages: deu, fra" in capsys.readouterr().out
    lonely = tmp_path / "alone" / "mms.safetensors"  # no adapter files beside it
    lonely.parent.mkdir()
    shutil.move(out, lonely)
    model = npw2v2.load(lonely)
    assert model.languages == ["deu", "eng", "fra"]
    for language in ("deu", "eng", "fra"):
        model.set_language(language)
        assert_speaks(model, language)


def test_bin_adapter_file_needs_the_converter(tmp_path):
    folder = tmp_path / "mms"
    shutil.copytree(MMS, folder)
    (folder / "adapter.deu.safetensors").unlink()
    shutil.copy(MMS_BIN / "adapter.deu.bin", folder / "adapter.deu.bin")
    model = npw2v2.load(folder)
    with pytest.raises(npw2v2.CheckpointError, match=f"{folder / 'adapter.deu.bin'}: a PyTorch file.*npw2v2-convert"):
        model.set_language("deu")


def test_unknown_language_and_wrong_adapter_are_named(tmp_path):
    model = npw2v2.load(MMS)
    with pytest.raises(npw2v2.CheckpointError, match="no weights for language 'xyz'; this model has: deu, eng, fra"):
        model.set_language("xyz")
    folder = tmp_path / "mms"
    shutil.copytree(MMS, folder)
    shutil.copy(GOLDEN / "tiny_ctc" / "model.safetensors", folder / "adapter.ita.safetensors")
    model = npw2v2.load(folder)
    with pytest.raises(npw2v2.CheckpointError, match="adapter.ita.safetensors: the tensors do not match"):
        model.set_language("ita")
    assert model.language == "eng"  # a failed switch leaves the model as it was
    assert_speaks(model, "eng")
    with pytest.raises(ValueError, match="no language adapters"):
        npw2v2.load(GOLDEN / "tiny_ctc").set_language("fra")


def test_language_switch_changes_the_transcript_vocabulary():
    model = npw2v2.load(MMS)
    x = 0.3 * recorded_case("tiny_mms", "eng.single")["input_values"][0]  # below full scale
    for language in LANGUAGES:
        model.set_language(language)
        (result,) = model.transcribe([x])
        assert set(result.text) <= set("".join(recorded_vocabulary(language)[5:])) | {" "}
        assert result.frame_tokens.max() < len(recorded_vocabulary(language))


def test_cli_language_option(tmp_path, capsys):
    import soundfile as sf

    from npw2v2.app.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, 0.3 * recorded_case("tiny_mms", "eng.single")["input_values"][0], 16000)
    assert main(["transcribe", str(wav), "--model", str(MMS), "--language", "fra", "-f", "json"]) == 0
    assert main(["transcribe", str(wav), "--model", str(MMS), "--language", "xyz"]) == 2
    assert "no weights for language 'xyz'" in capsys.readouterr().err
    assert main(["transcribe", str(wav), "--model", str(GOLDEN / "tiny_ctc"), "--language", "fra"]) == 2
    assert "--language needs an MMS model" in capsys.readouterr().err


def test_padded_batch_matches_alone_in_every_language():
    """The adapters and heads act frame by frame: a batch item is its lone self in each language."""
    model = npw2v2.load(MMS)
    rng = np.random.RandomState(0)
    lengths = [5200, 400, 2900]
    x = np.zeros((3, 5200), np.float32)
    for row, n in zip(x, lengths):
        row[:n] = rng.standard_normal(n)
    mask = np.arange(5200)[None] < np.array(lengths)[:, None]
    for language in LANGUAGES:
        model.set_language(language)
        batched = model(x, mask).logits
        for i, n in enumerate(lengths):
            alone = model(x[i:i + 1, :n]).logits
            assert golden_error(batched[i:i + 1, :alone.shape[1]], alone) < 1e-5


def test_converter_refuses_a_wrong_adapter_and_languages_for_fairseq(tmp_path, capsys):
    folder = tmp_path / "mms"
    shutil.copytree(MMS_BIN, folder)
    shutil.copy(GOLDEN / "checkpoints" / "hf_bin" / "pytorch_model.bin", folder / "adapter.deu.bin")  # a whole model
    out = tmp_path / "out.safetensors"
    assert convert([str(folder), str(out), "--languages", "deu"]) == 1
    err = capsys.readouterr().err
    assert "language deu: missing: encoder.layers.0.adapter_layer.norm.weight" in err and not out.exists()
    assert convert([str(folder), str(out), "--languages", "xyz"]) == 1
    assert "no adapter file for xyz (adapter.LANG.safetensors or .bin; found: deu, fra)" in capsys.readouterr().err
    fairseq = GOLDEN / "fairseq" / "w2v_pretrained_cfg.pt"
    assert convert([str(fairseq), str(out), "--languages", "fra"]) == 1
    assert "--languages bundles MMS adapter files from a Hugging Face model folder" in capsys.readouterr().err
