"""The bundled model (golden/train_tiny.py): spoken digits, checked against PyTorch and the truth.

Its stage-by-stage check against transformers running the same file is in test_golden.py (tiny_digits).
"""
import json

import numpy as np
import pytest

import npw2v2
from golden import GOLDEN, model
from npw2v2.app.cli import BUNDLED_LM, DEFAULT_MODEL, EXAMPLES, main
from npw2v2.app.metrics import word_error_rate

HELD_OUT = GOLDEN / "tiny_digits"


@pytest.fixture(scope="module")
def bundled():
    return npw2v2.load(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def held_out():
    return json.loads((HELD_OUT / "held_out.json").read_text())


@pytest.fixture(scope="module")
def ours(bundled, held_out):
    paths = [HELD_OUT / "held_out" / item["file"] for item in held_out]
    return [r.text for r in bundled.transcribe(paths, batch_size=16)]


def test_held_out_transcripts_are_pytorchs(held_out, ours):
    assert len(held_out) >= 300
    different = [(i["file"], i["pytorch"], o) for i, o in zip(held_out, ours) if i["pytorch"] != o]
    assert not different, different[:5]


def test_held_out_word_error_rate_is_pytorchs_and_at_most_5_percent(held_out, ours):
    manifest = json.loads((HELD_OUT / "manifest.json").read_text())
    wer = word_error_rate([i["text"] for i in held_out], ours)
    assert wer == pytest.approx(manifest["held_out_wer_pytorch"], abs=1e-12)
    assert wer <= 0.05, f"WER {100 * wer:.2f}%"


def test_held_out_voices_never_trained_on():
    manifest = json.loads((HELD_OUT / "manifest.json").read_text())
    assert not set(manifest["train_variants"]) & set(manifest["test_variants"])


def test_examples_are_transcribed_by_default(capsys):
    assert main(["transcribe", "--examples", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list(EXAMPLES.glob("*.flac"))) >= 3
    for line in lines:
        path, _, text = line.split("\t")
        spoken = path.rsplit("/", 1)[-1].split(".")[0].replace("-", " ").upper()
        assert text == spoken, line


def test_the_golden_recordings_check_the_bundled_model(bundled):
    """tiny_digits's golden cases run the very file that ships, and the repository holds it once."""
    checked = model("tiny_digits")
    assert checked.metadata == bundled.metadata
    np.testing.assert_array_equal(checked.params["lm_head"]["weight"], bundled.params["lm_head"]["weight"])
    assert sorted(p.name for p in HELD_OUT.glob("*.safetensors")) == ["activations.safetensors"]


# ---------------------------------------------------------------------------
# Long recordings: a minute or more of digit strings with pauses (golden/long_digits.py)

LONG = GOLDEN / "long_digits"


@pytest.fixture(scope="module")
def long_set():
    recordings = json.loads((LONG / "recordings.json").read_text())
    return [LONG / r["file"] for r in recordings], [r["text"] for r in recordings]


@pytest.fixture(scope="module")
def long_manifest():
    return json.loads((LONG / "manifest.json").read_text())


def test_the_long_recordings_are_long_and_held_out(long_set, long_manifest):
    import soundfile as sf

    manifest = json.loads((HELD_OUT / "manifest.json").read_text())
    assert long_manifest["test_variants"] == manifest["test_variants"]  # voices the model never trained on
    assert all(sf.info(str(f)).duration >= 60 for f in long_set[0]) and len(long_set[0]) >= 5
    assert sum(len(t.split()) for t in long_set[1]) >= 500


def test_long_recordings_greedy_word_error_rate_is_the_recorded_one(bundled, long_set, long_manifest):
    """43.6% before the model trained on pauses; issue 21 asks for 5% or less (3.16% today)."""
    files, truth = long_set
    measured = long_manifest["measured"]
    texts = [r.text for r in bundled.transcribe(files, chunk_seconds=measured["chunk_seconds"])]
    wer = word_error_rate(truth, texts)
    assert wer == pytest.approx(measured["greedy"]["wer"], abs=1e-12)  # what the README quotes
    assert wer <= 0.05, f"WER {100 * wer:.2f}%"


def test_long_recordings_with_the_bundled_lm_do_better_still(bundled, long_set, long_manifest):
    files, truth = long_set
    measured = long_manifest["measured"]
    assert bundled.language_model == str(BUNDLED_LM)
    texts = [r.text for r in bundled.transcribe(files, chunk_seconds=measured["chunk_seconds"],
                                                 lm=bundled.language_model)]
    wer = word_error_rate(truth, texts)
    assert wer == pytest.approx(measured["lm"]["wer"], abs=1e-12)
    assert wer < measured["greedy"]["wer"] and wer <= 0.01


def test_the_readme_quotes_the_long_recordings_rates(long_manifest):
    readme = (GOLDEN.parents[1] / "README.md").read_text()
    measured = long_manifest["measured"]
    for name in ("greedy", "lm"):
        assert f"**{100 * measured[name]['wer']:.2f}%**" in readme, name
    held_out = json.loads((HELD_OUT / "manifest.json").read_text())["held_out_wer_pytorch"]
    assert f"**{100 * held_out:.2f}%**" in readme
