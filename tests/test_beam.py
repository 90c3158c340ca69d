"""The beam search and its language models against pyctcdecode and KenLM, recorded by
golden/record_ctcdecode.py in an environment of their own (numpy < 2), and against direct formulas."""
import gzip
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

import npw2v2
from golden import GOLDEN
from npw2v2.app import beam
from npw2v2.app.cli import BUNDLED_LM, DEFAULT_MODEL
from npw2v2.app.beam import Hotwords, LMScorer, alphabet, beam_search, log_softmax
from npw2v2.io.ngram import LanguageModelError, NGramModel, load_ngram_model, read_arpa, read_lm_folder

CTCDECODE = GOLDEN / "ctcdecode"
MANIFEST = json.loads((CTCDECODE / "manifest.json").read_text())
RECORDED = json.loads((CTCDECODE / "decoded.json").read_text())
ARPAS = {"letters": CTCDECODE / "letters.arpa", "digits": BUNDLED_LM}  # the LMs the recordings used
CASES = [(name, setting) for name in ("letters", "digits") for setting in MANIFEST["settings"]]


@pytest.fixture(scope="module")
def logits():
    return load_file(str(CTCDECODE / "logits.safetensors"))


def decoder_options(setting: dict, arpa) -> dict:
    """pyctcdecode's build_ctcdecoder / decode_beams arguments as beam_search's."""
    options = dict(setting)
    lm_options = {k: options.pop(k) for k in ("alpha", "beta", "unk_score_offset") if k in options}
    if "lm_score_boundary" in options:
        lm_options["score_boundary"] = options.pop("lm_score_boundary")
    hotwords = Hotwords(options.pop("hotwords", ()), options.pop("hotword_weight", beam.HOTWORD_WEIGHT))
    lm = LMScorer(read_arpa(arpa), **lm_options) if options.pop("lm") else None
    return dict(options, lm=lm, hotwords=hotwords)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


@pytest.mark.parametrize("name,setting", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_every_utterance_decodes_as_pyctcdecode_decodes_it(logits, name, setting):
    """Same best transcript, word frames and number of beams; scores to KenLM's float32 sums."""
    labels = alphabet(MANIFEST["vocabulary"])
    options = decoder_options(MANIFEST["settings"][setting], ARPAS[name])
    recorded = RECORDED["decoded"][name][setting]
    different, worst = [], 0.0
    for i, ref in enumerate(recorded):
        hypotheses = beam_search(log_softmax(logits[f"{name}.{i}"].astype(np.float32)), labels, **options)
        best = hypotheses[0]
        ours = (best.text, [[w, *frames] for w, frames in best.words], len(hypotheses),
                [h.text for h in hypotheses[1:3]])
        if ours != (ref["text"], ref["words"], ref["beams"], [r[0] for r in ref["runners_up"]]):
            different.append((i, ours[0], ref["text"]))
        pairs = [(best.logit_score, ref["logit_score"]), (best.score, ref["score"])]
        pairs += [(h.score, r[2]) for h, r in zip(hypotheses[1:3], ref["runners_up"])]
        worst = max([worst] + [relative(a, b) for a, b in pairs])
    assert not different, f"{len(different)} of {len(recorded)} differ, e.g. {different[:3]}"
    assert worst < 1e-6  # KenLM sums its log10 scores in float32


@pytest.mark.parametrize("name", ["letters", "digits"])
def test_arpa_scores_are_kenlms(name):
    model = read_arpa(ARPAS[name])
    for query in RECORDED["kenlm"][name]:
        context, ours = model.begin_sentence(), []
        for word in query["words"] + ["</s>"]:
            score, context = model.score(context, word)
            ours.append(score)
        np.testing.assert_allclose(ours, query["log10"], rtol=1e-6, atol=1e-6)  # KenLM sums in float32
        assert [w in model for w in query["words"]] == query["known"]


TINY_ARPA = """\\data\\
ngram 1=5
ngram 2=3
ngram 3=1

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.7\t</s>
-0.6\tone\t-0.3
-0.8\ttwo\t-0.2

\\2-grams:
-0.3\t<s> one\t-0.1
-0.4\tone two
-0.2\ttwo </s>

\\3-grams:
-0.05\t<s> one two

\\end\\
"""


def test_backoff_follows_the_arpa_definition(tmp_path):
    path = tmp_path / "tiny.arpa.gz"
    with gzip.open(path, "wt") as f:
        f.write(TINY_ARPA)
    model = read_arpa(path)
    assert model.order == 3 and "one" in model and "<unk>" not in model and "three" not in model
    start = model.begin_sentence()
    assert model.score(start, "one")[0] == -0.3  # listed bigram
    assert model.score(("<s>", "one"), "two")[0] == -0.05  # listed trigram
    assert model.score(("one", "two"), "</s>")[0] == pytest.approx(-0.2)  # "one two" has no backoff: 0, then "two </s>"
    assert model.score(("<s>", "one"), "one")[0] == pytest.approx(-0.1 + -0.3 + -0.6)  # backoff(<s> one), backoff(one), p(one)
    assert model.score(("two",), "three") == (pytest.approx(-0.2 + -1.0), ("two", "<unk>"))  # unknown: <unk>
    assert model.unigrams == ["<s>", "one", "two"]  # those with a backoff weight, <unk> aside (pyctcdecode)


@pytest.mark.parametrize("change,message", [
    (lambda t: t.replace("\\data\\\n", ""), "not an ARPA file"),
    (lambda t: t.replace("\\end\\\n", ""), "ends before"),
    (lambda t: t.replace("ngram 2=3", "ngram 2=4"), "announces 4 2-grams, the file lists 3"),
    (lambda t: t.replace("-0.4\tone two", "-0.4x\tone two"), r"tiny\.arpa:15: '-0.4x' is not a log10 probability"),
    (lambda t: t.replace("-0.4\tone two", "0.4\tone two"), "is not a log10 probability"),
    (lambda t: t.replace("-0.4\tone two", "-0.4\tone"), r":15: a 2-gram line needs"),
])
def test_a_damaged_arpa_file_is_refused_with_its_line(tmp_path, change, message):
    path = tmp_path / "tiny.arpa"
    path.write_text(change(TINY_ARPA))
    with pytest.raises(LanguageModelError, match=message):
        read_arpa(path)


def test_a_kenlm_binary_needs_kenlm_or_says_so(tmp_path):
    path = tmp_path / "lm.bin"
    path.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0")
    try:
        import kenlm  # noqa: F401
    except ImportError:
        with pytest.raises(LanguageModelError, match="needs the kenlm module"):
            load_ngram_model(path)
    with pytest.raises(LanguageModelError, match="no such language model file"):
        load_ngram_model(tmp_path / "missing.arpa")


def test_a_hugging_face_language_model_folder_is_read_as_is(tmp_path):
    folder = tmp_path / "repo" / "language_model"
    folder.mkdir(parents=True)
    (folder / "5gram.arpa").write_text(TINY_ARPA)
    (folder / "unigrams.txt").write_text("one\ntwo\n\n")
    (folder / "attrs.json").write_text('{"alpha": 0.7, "beta": 2, "unk_score_offset": -10.0, "score_boundary": true}')
    found = read_lm_folder(tmp_path / "repo")
    assert found.model_path.name == "5gram.arpa" and found.unigrams == ["one", "two"]
    assert found.attrs == {"alpha": 0.7, "beta": 2.0, "unk_score_offset": -10.0, "score_boundary": True}
    (folder / "attrs.json").write_text('{"alpha": "high"}')
    with pytest.raises(LanguageModelError, match="alpha must be a number"):
        read_lm_folder(folder)
    (folder / "other.bin").write_bytes(b"")
    with pytest.raises(LanguageModelError, match="holds one .arpa or KenLM .bin file; found 5gram.arpa, other.bin"):
        read_lm_folder(folder)


def test_the_lm_share_of_a_word_and_of_a_word_part():
    model = NGramModel({("<unk>",): (-2.0, 0.0), ("<s>",): (-99.0, 0.0), ("</s>",): (-1.0, 0.0),
                        ("yes",): (-0.5, 0.0), ("yesterday",): (-1.5, 0.0)}, 1, unigrams=["yes", "yesterday"])
    lm = LMScorer(model, alpha=2.0, beta=0.25, unk_score_offset=-7.0)
    assert lm.word(lm.start(), "yes")[0] == pytest.approx(2.0 * -0.5 * math.log(10) + 0.25)
    assert lm.word(lm.start(), "yes", last=True)[0] == pytest.approx(2.0 * (-0.5 - 1.0) * math.log(10) + 0.25)
    assert lm.word(lm.start(), "no")[0] == pytest.approx(2.0 * (-2.0 - 7.0) * math.log(10) + 0.25)
    assert lm.partial("yest") == 0 and lm.partial("ye") == 0  # starts a known word
    assert lm.partial("yo") == -7.0 and lm.partial("xxxxxxxxx") == -7.0 * 9 / 6  # longer than 6: more


def test_hotwords_count_whole_words_and_credit_a_start():
    hotwords = Hotwords(["zephyr quokka", " ", "zed"], weight=4.0)
    assert hotwords.words == ["quokka", "zed", "zephyr"]
    assert hotwords.score("a zephyr and a quokka zephyrs") == 8.0  # "zephyrs" is not a whole "zephyr"
    assert "ze" in hotwords and "zo" not in hotwords
    assert hotwords.partial("ze") == pytest.approx(4.0 * 2 / 3)  # the shortest hotword it starts: zed
    assert hotwords.partial("zep") == pytest.approx(4.0 * 3 / 6) and hotwords.partial("x") == 0
    assert not Hotwords() and Hotwords().score("anything") == 0


def test_the_alphabet_of_a_wav2vec2_vocabulary():
    assert alphabet(["<pad>", "<s>", "</s>", "<unk>", "|", "A", "'"]) == ["", "<s>", "</s>", "⁇", " ", "A", "'"]
    assert alphabet(["_", "a", " "]) == ["", "a", " "]
    with pytest.raises(ValueError, match="no CTC blank"):
        alphabet(["a", "b", "|"])
    with pytest.raises(ValueError, match="sub-word"):
        alphabet(["<pad>", "▁the", "s"])


def test_a_clear_frame_by_frame_path_is_read_as_greedy_decoding_reads_it():
    labels = ["", " ", "A", "B"]
    path = [2, 2, 0, 2, 1, 3, 0, 0, 3]  # A A - A | B - - B: "AA BB"
    logits = np.full((len(path), 4), -20.0, np.float32)
    logits[np.arange(len(path)), path] = 0.0
    (best, *_) = beam_search(log_softmax(logits), labels)
    assert best.text == "AA BB" and best.words == [("AA", (0, 4)), ("BB", (5, 9))]
    with pytest.raises(ValueError, match=r"must be \[T, 4\]"):
        beam_search(log_softmax(logits[:, :3]), labels)


# ---------------------------------------------------------------------------
# In transcribe: the model's own logits, the command line


@pytest.fixture(scope="module")
def bundled():
    from npw2v2.app.cli import DEFAULT_MODEL

    return npw2v2.load(DEFAULT_MODEL)


def test_transcribe_with_the_lm_gives_pyctcdecodes_transcripts_of_the_held_out_clips(bundled):
    """The model's logits computed here (not the recorded float16 ones): the same text for at least 99 of 100."""
    held_out = json.loads((GOLDEN / "tiny_digits" / "held_out.json").read_text())[:100]
    files = [GOLDEN / "tiny_digits" / "held_out" / item["file"] for item in held_out]
    ours = [r.text for r in bundled.transcribe(files, lm=BUNDLED_LM)]
    theirs = [r["text"] for r in RECORDED["decoded"]["digits"]["lm"]]
    assert sum(a == b for a, b in zip(ours, theirs)) >= 99
    assert ours != [r.text for r in bundled.transcribe(files)]  # the LM changed something (greedy: 90 right, LM: 96)


def test_a_long_input_is_decoded_once_over_all_its_windows_frames(bundled, tmp_path):
    import soundfile as sf

    from npw2v2.app.beam import BeamDecoder
    from npw2v2.app.cli import EXAMPLES
    from npw2v2.core.lengths import frame_lengths

    clips = [sf.read(p, dtype="float32")[0] for p in sorted(EXAMPLES.glob("*.flac"))]
    pause = np.zeros(4000, np.float32)
    signal = np.concatenate([x for clip in clips for x in (clip, pause)])
    sf.write(tmp_path / "long.flac", signal, 16000)
    seen = []

    class Watched(BeamDecoder):
        def decode(self, logits):
            seen.append(np.array(logits))
            return super().decode(logits)

    decoder = bundled.beam_decoder(BUNDLED_LM, beam_width=20)
    watched = Watched(decoder.labels, decoder.lm, decoder.hotwords, beam_width=20)
    whole = bundled.transcribe([tmp_path / "long.flac"], decoder=watched, chunk_seconds=60, timestamps=True)[0]
    windowed = bundled.transcribe([tmp_path / "long.flac"], decoder=watched, chunk_seconds=2, timestamps=True)[0]
    frames = int(frame_lengths([len(signal)], bundled.config)[0])
    assert [x.shape for x in seen] == [(frames, 32), (frames, 32)]  # one search over the input's every frame
    assert np.mean(seen[0].argmax(-1) == seen[1].argmax(-1)) > 0.9  # 2 s windows see most of what the whole sees
    seconds = len(signal) / 16000  # 5.7 s; the last clip ends 0.25 s before
    assert whole.words[-1].end > seconds - 1 and windowed.words[-1].end > seconds - 1  # the whole input's clock
    assert whole.chars is None  # the beam search gives word times only


def test_transcribe_lm_on_the_command_line(capsys):
    from npw2v2.app.cli import main

    assert main(["transcribe", "--examples", "--lm", str(BUNDLED_LM), "--alpha", "0.8",
                 "--hotwords", "SEVEN", "-f", "json", "--timestamps"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["EIGHT", "NINE ONE", "SEVEN SIX THREE ONE", "ZERO EIGHT THREE SEVEN"]
    assert [w["word"] for w in lines[1]["words"]] == ["NINE", "ONE"] and 0 < lines[1]["words"][0]["start"] < 0.5


@pytest.mark.parametrize("arguments,message", [
    (["--beta", "2"], "--alpha and --beta weigh a language model: give --lm"),
    (["--hotword-weight", "5"], "--hotword-weight weighs hotwords: give --hotwords"),
    (["--lm", "missing.arpa"], "missing.arpa: no such language model file"),
    (["--lm", str(CTCDECODE / "manifest.json")], "kenlm"),  # neither ARPA nor, without kenlm, a binary
])
def test_transcribe_lm_mistakes_are_one_line(capsys, arguments, message):
    from npw2v2.app.cli import main

    try:
        import kenlm  # noqa: F401
        if "kenlm" in message:
            pytest.skip("kenlm is installed: it reads (or refuses) the file itself")
    except ImportError:
        pass
    assert main(["transcribe", "--examples", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------
# The language model a model comes with: npw2v2-convert --lm, transcribe --lm alone


def convert_with_lm(tmp_path, *lm_arguments, src=None, name="m.safetensors"):
    from convert.cli import main as convert_main

    out = tmp_path / "out" / name
    out.parent.mkdir(exist_ok=True)
    status = convert_main([str(src or GOLDEN / "tiny_ctc"), str(out), *lm_arguments])
    return status, out


def test_the_converter_copies_an_lm_beside_the_model_and_names_it(tmp_path):
    status, out = convert_with_lm(tmp_path, "--lm", str(CTCDECODE / "letters.arpa"))
    assert status == 0
    model = npw2v2.load(out)
    assert model.metadata["language_model"] == "letters.arpa"
    assert model.language_model == str(out.parent / "letters.arpa")
    assert (out.parent / "letters.arpa").read_bytes() == (CTCDECODE / "letters.arpa").read_bytes()
    assert convert_with_lm(tmp_path, "--lm", str(CTCDECODE / "letters.arpa"))[0] == 0  # the same file again: fine


def test_the_converter_brings_a_hugging_face_folders_language_model(tmp_path):
    import shutil

    src = tmp_path / "repo"
    shutil.copytree(GOLDEN / "tiny_ctc", src)
    (src / "language_model").mkdir()
    shutil.copy(CTCDECODE / "letters.arpa", src / "language_model")
    (src / "language_model" / "attrs.json").write_text('{"alpha": 0.7, "beta": 2.0}')
    status, out = convert_with_lm(tmp_path, src=src)
    assert status == 0
    model = npw2v2.load(out)
    assert model.language_model == str(out.parent / "language_model")
    assert (out.parent / "language_model" / "attrs.json").is_file()
    assert npw2v2.load(src).language_model == str(src / "language_model")  # the folder itself, loaded as it is
    lm = beam.load_lm(model.language_model)
    assert (lm.alpha, lm.beta) == (0.7, 2.0)


def test_the_converter_names_a_hub_id_without_copying(tmp_path):
    status, out = convert_with_lm(tmp_path, "--lm", "patrickvonplaten/wav2vec2-base-100h-with-lm")
    assert status == 0
    assert npw2v2.load(out).language_model == "patrickvonplaten/wav2vec2-base-100h-with-lm"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize("make,message", [
    (lambda d: "missing.arpa", "--lm missing.arpa: no such file or folder"),
    (lambda d: str(CTCDECODE / "manifest.json"), "not a language model file"),
    (lambda d: str(d), "a language model folder holds one .arpa or KenLM .bin file; found none"),
    (lambda d: (d / "out" / "letters.arpa").write_text("other") and str(CTCDECODE / "letters.arpa"),
     "letters.arpa exists and holds something else"),
])
def test_the_converter_refuses_a_bad_lm_and_writes_nothing(tmp_path, capsys, make, message):
    (tmp_path / "out").mkdir()
    status, out = convert_with_lm(tmp_path, "--lm", make(tmp_path))
    err = capsys.readouterr().err
    assert status == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_a_model_file_finds_the_arpa_of_its_name_beside_it(tmp_path):
    import shutil

    shutil.copy(DEFAULT_MODEL, tmp_path / "digits.safetensors")
    assert npw2v2.load(tmp_path / "digits.safetensors").language_model is None
    shutil.copy(BUNDLED_LM, tmp_path / "digits.arpa")
    assert npw2v2.load(tmp_path / "digits.safetensors").language_model == str(tmp_path / "digits.arpa")
    assert npw2v2.load(DEFAULT_MODEL).language_model == str(BUNDLED_LM)


@pytest.mark.parametrize("name", ["../letters.arpa", "/etc/passwd", "a/b/c", ".."])
def test_a_model_files_lm_name_elsewhere_is_refused(tmp_path, capsys, name):
    """The metadata is untrusted: it may name a file beside the model or a hub id, nothing else."""
    from safetensors.numpy import save_file

    from npw2v2.app.cli import main
    from npw2v2.io.weights import CheckpointError, read_safetensors

    tensors, metadata = read_safetensors(DEFAULT_MODEL)
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={**metadata, "language_model": name})
    with pytest.raises(CheckpointError, match="language_model in the metadata must be a plain name"):
        npw2v2.load(tmp_path / "m.safetensors").language_model
    assert main(["transcribe", "--examples", "-m", str(tmp_path / "m.safetensors"), "--lm"]) == 2
    err = capsys.readouterr().err
    assert "language_model in the metadata must be a plain name" in err and len(err.strip().splitlines()) == 1


def test_transcribe_lm_alone_is_the_models_own(capsys):
    from npw2v2.app.cli import main

    assert main(["transcribe", "--examples", "-f", "json", "--lm", "--beam-width", "7"]) == 0
    alone = capsys.readouterr().out
    assert main(["transcribe", "--examples", "-f", "json", "--lm", str(BUNDLED_LM), "--beam-width", "7"]) == 0
    assert alone == capsys.readouterr().out and alone.count('"text"') == 4


def test_transcribe_lm_alone_with_a_model_without_one_is_one_line(capsys, tmp_path):
    from npw2v2.app.cli import main

    assert main(["transcribe", "--examples", "-m", str(GOLDEN / "tiny_ctc"), "--lm"]) == 2
    err = capsys.readouterr().err
    assert "comes with no language model (npw2v2-convert --lm gives it one)" in err
    assert len(err.strip().splitlines()) == 1
