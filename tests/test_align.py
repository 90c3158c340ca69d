"""npw2v2.app.align: forced alignment against torchaudio's recorded paths (golden/record_align.py),
batches against items alone, blocks of back-pointers against keeping them all, bad inputs, and
the bundled model's clips against its greedy decoding."""
import json

import numpy as np
import pytest

import npw2v2
from golden import GOLDEN
from npw2v2.app import align, ctc, pipeline
from npw2v2.app.align import AlignmentError, forced_align, tokenize
from npw2v2.app.cli import DEFAULT_MODEL, EXAMPLES
from npw2v2.io import audio

RECORDED = GOLDEN / "align"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}}


def cases(name: str) -> dict[str, dict[str, np.ndarray]]:
    """The recorded cases of one file: {case: {log_probs, targets, path, scores}}."""
    with np.load(RECORDED / name) as data:
        found = {}
        for key in data.files:
            case, field = key.split("/")
            found.setdefault(case, {})[field] = data[key]
    return found


RANDOM = cases("random.npz")
BUNDLED = cases("bundled.npz")


@pytest.fixture(scope="module")
def bundled():
    return npw2v2.load(DEFAULT_MODEL)


def test_the_recordings_are_torchaudios_and_cover_ties_repeats_and_tight_fits():
    versions = json.loads((RECORDED / "versions.json").read_text())
    assert versions["versions"]["torchaudio"] and versions["command"] == "python golden/record_align.py"
    assert len(RANDOM) >= 150 and len(BUNDLED) == len(list(EXAMPLES.glob("*.flac")))
    tight = repeats = ties = 0
    for case in RANDOM.values():
        targets, T = case["targets"], len(case["log_probs"])
        repeats += bool((targets[1:] == targets[:-1]).any())
        tight += T == align.needed_frames(targets)
        ties += len(np.unique(case["log_probs"])) < case["log_probs"].size // 2
    assert tight >= 20 and repeats >= 40 and ties >= 40, (tight, repeats, ties)


@pytest.mark.parametrize("name", sorted(RANDOM), ids=str)
def test_random_paths_are_torchaudios(name):
    case = RANDOM[name]
    paths, scores = forced_align(case["log_probs"][None], case["targets"][None])
    np.testing.assert_array_equal(paths[0], case["path"])
    np.testing.assert_allclose(scores[0], case["scores"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BUNDLED), ids=str)
def test_the_bundled_models_paths_are_torchaudios(name):
    case = BUNDLED[name]
    paths, scores = forced_align(case["log_probs"][None], case["targets"][None])
    np.testing.assert_array_equal(paths[0], case["path"])
    np.testing.assert_allclose(scores[0], case["scores"], rtol=0, atol=1e-6)


def test_the_recorded_emissions_are_the_bundled_models_today(bundled):
    """So the recorded paths stay those of what npw2v2 computes now."""
    for name, case in BUNDLED.items():
        x = audio.load(EXAMPLES / f"{name}.flac", bundled.sampling_rate, bundled.config.receptive_field)
        log_probs = align.log_softmax(bundled(audio.normalize(x[None])).logits[0])
        np.testing.assert_allclose(log_probs, case["log_probs"], rtol=0, atol=1e-4)


def padded(names, rng, pad_frames=3, pad_tokens=2):
    """The recorded cases as one padded batch; the padding holds random numbers, not -inf, so
    any padding that leaks into a path shows."""
    chosen = [RANDOM[n] for n in names]
    T = max(len(c["log_probs"]) for c in chosen) + pad_frames
    L = max(len(c["targets"]) for c in chosen) + pad_tokens
    V = max(c["log_probs"].shape[1] for c in chosen)
    log_probs = rng.normal(size=(len(chosen), T, V)).astype(np.float64)
    targets = rng.integers(1, 2, (len(chosen), L))
    for b, c in enumerate(chosen):
        t, v = c["log_probs"].shape
        log_probs[b, :t, :v] = c["log_probs"]
        log_probs[b, :t, v:] = -np.inf  # tokens this item's vocabulary lacks
        targets[b, :len(c["targets"])] = c["targets"]
    frames = [len(c["log_probs"]) for c in chosen]
    return log_probs, targets, frames, [len(c["targets"]) for c in chosen]


@pytest.mark.parametrize("block", [None, 1, 5])
def test_a_padded_batch_gives_each_item_torchaudios_path(block):
    rng = np.random.default_rng(0)
    names = sorted(name for name in RANDOM if RANDOM[name]["log_probs"].dtype == np.float32)
    for first in range(0, len(names), 24):
        group = names[first:first + 24]
        rng.shuffle(group)  # unsorted lengths: the aligner sorts and restores the order
        log_probs, targets, frames, lengths = padded(group, rng)
        paths, scores = forced_align(log_probs.astype(np.float32), targets, frames, lengths, block=block)
        for b, name in enumerate(group):
            np.testing.assert_array_equal(paths[b, :frames[b]], RANDOM[name]["path"], err_msg=name)
            np.testing.assert_allclose(scores[b, :frames[b]], RANDOM[name]["scores"], rtol=0, atol=1e-6)
            assert (paths[b, frames[b]:] == 0).all() and (scores[b, frames[b]:] == 0).all()


def test_a_batch_equals_its_items_one_by_one():
    rng = np.random.default_rng(1)
    names = sorted(RANDOM)[::3]
    log_probs, targets, frames, lengths = padded(names, rng)
    log_probs = log_probs.astype(np.float32)
    paths, scores = forced_align(log_probs, targets, frames, lengths)
    for b in range(len(names)):
        alone, alone_scores = forced_align(log_probs[b:b + 1, :frames[b]], targets[b:b + 1, :lengths[b]])
        np.testing.assert_array_equal(paths[b, :frames[b]], alone[0])
        np.testing.assert_array_equal(scores[b, :frames[b]], alone_scores[0])


@pytest.mark.parametrize("block", [1, 2, 7, 64])
def test_blocks_of_back_pointers_give_the_path_of_keeping_them_all(block):
    for name in sorted(RANDOM)[-12:]:  # the long cases among them
        case = RANDOM[name]
        paths, _ = forced_align(case["log_probs"][None], case["targets"][None], block=block)
        np.testing.assert_array_equal(paths[0], case["path"])


def test_block_length_keeps_everything_within_the_budget_and_about_2_sqrt_t_beyond():
    assert align._block_length(1000, 100) == 1000
    T = 180_000  # an hour of 20 ms frames
    K = align._block_length(T, 100_001)
    assert K == 849 and 4 * T / K + K < 1700  # bytes a state: checkpoints plus one block


def naive_path(log_probs, targets, choose, end_on_blank):
    """A loop over every frame and state, with the tie rule as a function: choose(x0, x1, x2) -> 0, 1 or 2
    (stay, from the state before, skip a blank); end_on_blank(a_blank, a_token) -> the final blank?"""
    T, S = len(log_probs), 2 * len(targets) + 1
    label = [0 if s % 2 == 0 else int(targets[s // 2]) for s in range(S)]
    a = np.full(S, -np.inf, log_probs.dtype)
    a[:2] = log_probs[0, label[:2]]
    back = np.zeros((T, S), int)
    for t in range(1, T):
        new = np.full(S, -np.inf, log_probs.dtype)
        for s in range(S):
            x1 = a[s - 1] if s else -np.inf
            x2 = a[s - 2] if s % 2 and s > 1 and label[s] != label[s - 2] else -np.inf
            back[t, s] = choose(a[s], x1, x2)
            new[s] = (a[s], x1, x2)[back[t, s]] + log_probs[t, label[s]]
        a = new
    s = S - 1 if end_on_blank(a[S - 1], a[S - 2]) else S - 2
    path = []
    for t in range(T - 1, -1, -1):
        path.append(label[s])
        s -= back[t, s]
    return path[::-1]


def torchaudios_rule(x0, x1, x2):
    return 2 if x2 > x1 and x2 > x0 else 1 if x1 > x0 and x1 > x2 else 0


RULES = {  # other ways to break ties, each a plausible implementation
    "the largest, staying on ties": (lambda x0, x1, x2: 2 if x2 > max(x0, x1) else int(x1 > x0), np.greater),
    "the largest, advancing on ties": (lambda x0, x1, x2: 2 if x2 >= max(x0, x1) else int(x1 >= x0), np.greater),
    "torchaudio's, ending on the blank on ties": (torchaudios_rule, np.greater_equal),
}


def test_the_recordings_pin_torchaudios_tie_breaking_and_no_other():
    """A loop with torchaudio's rule gives every recorded path; each other rule misses some of them,
    so a change of tie-breaking in npw2v2 fails test_random_paths_are_torchaudios."""
    small = [c for c in RANDOM.values() if c["log_probs"].size * len(c["targets"]) < 40_000]
    assert len(small) > 200
    for c in small:
        assert naive_path(c["log_probs"], c["targets"], torchaudios_rule, np.greater) == c["path"].tolist()
    for name, (choose, end) in RULES.items():
        missed = sum(naive_path(c["log_probs"], c["targets"], choose, end) != c["path"].tolist() for c in small)
        assert missed >= 3, f"{name}: the recordings tell it from torchaudio's in {missed} cases"


def test_when_every_path_ties_the_last_token_lasts_longest():
    """All frames equally likely: read back from the end, each state stays as long as it can, and
    the path ends on the last token, not the final blank (what torchaudio 2.9 gives for these)."""
    log_probs = np.full((1, 6, 4), -np.log(4), np.float32)
    assert forced_align(log_probs, [[1, 2]])[0][0].tolist() == [1, 2, 2, 2, 2, 2]
    assert forced_align(log_probs, [[1, 1]])[0][0].tolist() == [1, 0, 1, 1, 1, 1]


def test_impossible_inputs_name_the_item():
    log_probs = np.log(np.full((3, 5, 4), 0.25, np.float32))
    with pytest.raises(AlignmentError, match=r"item 1: 4 tokens, 1 of them repeating .* need at least 5 frames; it "
                                             r"has 4"):
        forced_align(log_probs, [[1, 2, 0, 0], [1, 1, 2, 3], [1, 0, 0, 0]], [5, 4, 5], [2, 4, 1])
    with pytest.raises(AlignmentError, match=r"item 2: 4 tokens, 2 of them .* need at least 6 frames; it has 5"):
        forced_align(log_probs, [[1, 2, 1, 1], [1, 1, 2, 3], [2, 2, 2, 3]])
    with pytest.raises(AlignmentError, match="item 0: an empty transcript"):
        forced_align(log_probs, [[1], [1], [1]], target_lengths=[0, 1, 1])
    with pytest.raises(AlignmentError, match=r"item 2: token ids \[0\] are not tokens .* besides the blank"):
        forced_align(log_probs, [[1], [1], [0]])
    with pytest.raises(AlignmentError, match=r"item 1: token ids \[4\] are not tokens of a 4-token"):
        forced_align(log_probs, [[1], [4], [1]])
    with pytest.raises(AlignmentError, match="item 0: 6 frames, outside 1 .. 5"):
        forced_align(log_probs, [[1], [1], [1]], frame_lengths=[6, 5, 5])
    with pytest.raises(AlignmentError, match="blank 4 is not a token id"):
        forced_align(log_probs, [[1], [1], [1]], blank=4)


def test_text_is_folded_to_the_vocabulary_and_words_get_the_delimiter():
    spelled = tokenize("  Hello,   world! ", VOCAB)
    assert spelled.words == ["HELLO", "WORLD"]
    letters = {i: c for c, i in VOCAB.items()}
    assert "".join(letters[i] for i in spelled.tokens) == "HELLO|WORLD"
    assert spelled.word_of.tolist() == [0] * 5 + [-1] + [1] * 5
    assert tokenize("don't — stop", VOCAB).words == ["DON'T", "STOP"]  # the dash alone is no word
    assert tokenize("don\u2019t", VOCAB).words == ["DON'T"]  # a typographic apostrophe is the vocabulary's
    accented = {**VOCAB, "É": len(VOCAB)}
    assert tokenize("cafe\u0301", accented).words == ["CAFÉ"]  # e and a combining accent: one character
    lower = {c.lower(): i for c, i in VOCAB.items()}
    assert tokenize("ABC", lower).words == ["abc"]


def test_text_the_vocabulary_cannot_spell_is_refused_with_the_characters():
    with pytest.raises(AlignmentError, match=r"clip.wav: the model's vocabulary cannot spell '7', 'é'"):
        tokenize("7 cafés at 7", VOCAB, name="clip.wav")
    with pytest.raises(AlignmentError, match="x: an empty transcript"):
        tokenize(" ?! ", VOCAB, name="x")


def test_without_a_delimiter_in_the_vocabulary_words_still_get_their_times():
    vocab = {c: i for c, i in VOCAB.items() if c != "|"}
    spelled = tokenize("ab c", vocab)
    assert len(spelled.tokens) == 3 and spelled.word_of.tolist() == [0, 0, 1]


def test_spans_are_the_runs_of_the_path():
    id_to_token = [c for c, _ in sorted(VOCAB.items(), key=lambda kv: kv[1])]
    spelled = tokenize("AB A", VOCAB)  # A B | A: states 1, 3, 5, 7
    states = np.array([0, 1, 1, 2, 3, 5, 6, 7, 8])
    scores = np.log(np.array([1, .5, .7, 1, .9, .8, 1, .6, 1], np.float32))
    chars, words, score = align.spans(states, scores, spelled, id_to_token, 0.02)
    assert [(c.text, c.start, c.end) for c in chars] == [("A", 0.02, 0.06), ("B", 0.08, 0.1), ("A", 0.14, 0.16)]
    assert [c.score for c in chars] == pytest.approx([0.6, 0.9, 0.6])
    assert [(w.text, w.start, w.end) for w in words] == [("AB", 0.02, 0.1), ("A", 0.14, 0.16)]
    assert words[0].score == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert score == pytest.approx((0.5 + 0.7 + 0.9 + 0.8 + 0.6) / 5)


def spoken(path) -> str:
    return path.stem.replace("-", " ").upper()


def test_the_bundled_examples_align_to_their_words(bundled):
    files = sorted(EXAMPLES.glob("*.flac"))
    results = align.align(bundled, files, [spoken(f).lower() + "." for f in files], batch_size=3)
    for f, r in zip(files, results):
        assert r.text == spoken(f) and [w.text for w in r.words] == spoken(f).split()
        assert all(0 <= w.start < w.end <= r.seconds + 0.02 for w in r.words)
        assert all(a.end <= b.start for a, b in zip(r.words, r.words[1:]))
        assert 0.8 < r.score <= 1 and len(r.frame_tokens) == len(r.frame_scores)


def test_long_inputs_run_in_windows_and_in_blocks(bundled, monkeypatch):
    """Windows of 1 s (far shorter than the clips) and back-pointers in blocks: the same words,
    each boundary within a frame of the whole clip's (the windows' emissions differ a little)."""
    files = sorted(EXAMPLES.glob("*.flac"))
    texts = [spoken(f) for f in files]
    whole = align.align(bundled, files, texts)
    monkeypatch.setattr(align, "PTR_BUDGET", 0)
    windowed = align.align(bundled, files, texts, chunk_seconds=1.0)
    for a, b in zip(whole, windowed):
        assert [w.text for w in a.words] == [w.text for w in b.words]
        for x, y in zip(a.words, b.words):
            assert abs(x.start - y.start) <= 0.0201 and abs(x.end - y.end) <= 0.0201


def test_held_out_word_times_are_within_a_frame_of_greedy_decodings(bundled):
    """Where greedy decoding already spells the truth, aligning the truth puts each word where greedy
    decoding puts it, give or take a frame at each end."""
    held_out = GOLDEN / "tiny_digits"
    chosen = [i for i in json.loads((held_out / "held_out.json").read_text()) if i["pytorch"] == i["text"]][:120]
    files = [held_out / "held_out" / i["file"] for i in chosen]
    greedy = bundled.transcribe(files, batch_size=16, timestamps=True)
    aligned = align.align(bundled, files, [i["text"] for i in chosen], batch_size=16)
    off = [max(abs(g.start - a.start), abs(g.end - a.end))
           for gr, al in zip(greedy, aligned) for g, a in zip(gr.words, al.words)]
    assert len(off) > 250 and max(off) <= 0.0201, max(off)


def test_align_refuses_mismatched_lists_and_names_the_input(bundled):
    clip = EXAMPLES / "eight.flac"
    with pytest.raises(AlignmentError, match="2 inputs and 1 transcripts"):
        align.align(bundled, [clip, clip], ["EIGHT"])
    with pytest.raises(AlignmentError, match=r"input 1 \(.*eight.flac\): the model's vocabulary cannot spell '8'"):
        align.align(bundled, [clip, clip], ["EIGHT", "8"])
    with pytest.raises(AlignmentError, match=r"input 0 \(.*eight.flac\): 137 tokens need at least 137 frames; it has 22"):
        align.align(bundled, [clip], ["EIGHT " * 23])


def test_greedy_decoding_and_alignment_share_the_window_machinery(bundled):
    """transcribe's long path and align's read the same windows (pipeline.window_logits)."""
    clip = EXAMPLES / "seven-six-three-one.flac"
    item = pipeline.prepare([clip], bundled.sampling_rate, bundled.config.receptive_field, 16000)[0]
    chunk, stride = pipeline.chunking(bundled, 1.0)
    logits = np.concatenate(list(pipeline.window_logits(bundled, item, bundled.sampling_rate, chunk, stride)))
    result = bundled.transcribe([clip], chunk_seconds=1.0)[0]
    np.testing.assert_array_equal(ctc.best_tokens(logits), result.frame_tokens)


def test_the_model_object_aligns_one_pair_or_lists(bundled):
    clip = EXAMPLES / "nine-one.flac"
    one = bundled.align(clip, "nine one")
    assert isinstance(one, align.Alignment) and [w.text for w in one.words] == ["NINE", "ONE"]
    x = audio.load(clip, bundled.sampling_rate, bundled.config.receptive_field)
    both = bundled.align([clip, x], ["nine one", "Nine, one!"])
    assert [w.start for w in both[1].words] == [w.start for w in one.words] == [w.start for w in both[0].words]
    assert both[1].source == "<array>"


def test_alignments_are_written_as_json_srt_textgrid_and_audacity_labels(bundled):
    from npw2v2.app.writers import render_alignment

    r = bundled.align(EXAMPLES / "nine-one.flac", "nine one")
    record = json.loads(render_alignment(r, "json", chars=True))
    assert [w["word"] for w in record["words"]] == ["NINE", "ONE"] and len(record["chars"]) == 7
    assert set(record["words"][0]) == {"word", "start", "end", "score"} and "chars" not in json.loads(
        render_alignment(r, "json"))
    assert render_alignment(r, "srt").splitlines()[2] == "NINE ONE"
    labels = [line.split("\t") for line in render_alignment(r, "audacity").splitlines()]
    assert [(float(a), float(b), t) for a, b, t in labels] == [(w.start, w.end, w.text) for w in r.words]
    grid = render_alignment(r, "textgrid", chars=True)
    assert grid.startswith('File type = "ooTextFile"\nObject class = "TextGrid"') and "size = 2" in grid
    tiers = grid.split("item [")[2:]
    assert [t.split('name = "')[1].split('"')[0] for t in tiers] == ["words", "chars"]
    texts = [line.split('"')[1] for line in tiers[0].splitlines() if "text =" in line]
    assert [t for t in texts if t] == ["NINE", "ONE"] and "" in texts  # silences are empty intervals
    bounds = [float(line.split("=")[1]) for line in tiers[0].splitlines() if "min =" in line or "max =" in line][2:]
    assert bounds[0] == 0 and all(a == b for a, b in zip(bounds[1::2], bounds[2::2]))  # no gaps, no overlaps


def test_a_star_lets_the_transcript_cover_part_of_the_audio(bundled):
    """The last two words of a clip: with <star> they land where the whole transcript puts them, and
    the words left out go to the <star>."""
    clip = EXAMPLES / "seven-six-three-one.flac"
    whole = bundled.align(clip, "seven six three one")
    part = bundled.align(clip, "three one", star=True)
    assert [w.text for w in part.words] == ["THREE", "ONE"] and len(part.chars) == 8
    for x, y in zip(whole.words[2:], part.words):
        assert abs(x.start - y.start) <= 0.0201
    assert abs(whole.words[2].end - part.words[0].end) <= 0.0201
    # the last word's end borders the clip's trailing silence, which a <star> at the end may take: a few frames
    assert 0 <= whole.words[3].end - part.words[1].end <= 0.0601
    star = bundled.config.vocab_size
    assert part.frame_tokens[0] == star and part.frame_tokens[-1] == star
    left_out = part.frame_tokens[:round(whole.words[1].end / 0.02)]  # SEVEN SIX's frames
    assert (left_out == star).mean() > 0.8


# ---------------------------------------------------------------------------
# npw2v2 align


def cli(*argv) -> int:
    from npw2v2.app.cli import main

    return main(["align", *map(str, argv)])


@pytest.fixture
def transcripts(tmp_path):
    """A transcript file for each example clip, and a manifest of them all (relative paths)."""
    lines = []
    for clip in sorted(EXAMPLES.glob("*.flac")):
        (tmp_path / f"{clip.stem}.txt").write_text(spoken(clip).title() + ".\n")
        lines.append(f"{clip}\t{clip.stem}.txt")
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_cli_aligns_a_pair_to_json_lines(transcripts, capsys):
    clip = EXAMPLES / "nine-one.flac"
    assert cli(clip, transcripts / "nine-one.txt") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == "NINE ONE" and [w["word"] for w in record["words"]] == ["NINE", "ONE"]
    assert cli(clip, transcripts / "nine-one.txt", "--chars", "-f", "audacity") == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 7


@pytest.mark.parametrize("fmt,suffix", [("json", "json"), ("srt", "srt"), ("textgrid", "TextGrid"),
                                        ("audacity", "txt")])
def test_cli_writes_a_file_per_pair_of_a_manifest(transcripts, fmt, suffix, capsys):
    out = transcripts / "out"
    assert cli("--manifest", transcripts / "pairs.tsv", "-f", fmt, "-o", out) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{c.stem}.{suffix}" for c in EXAMPLES.glob("*.flac"))
    assert "SEVEN" in (out / f"seven-six-three-one.{suffix}").read_text()
    assert f"wrote {len(written)} files" in capsys.readouterr().err


@pytest.mark.parametrize("argv,status,message", [
    ([], 2, "give AUDIO TEXT_FILE, or --manifest"),
    ([EXAMPLES / "eight.flac"], 2, "give its transcript's file after it"),
    (["--manifest", "{tmp}/pairs.tsv", "-f", "srt"], 2, "--format srt writes one file per input: give --output DIR"),
    ([EXAMPLES / "eight.flac", "{tmp}/eight.txt", "-f", "srt", "--chars"], 2, "--chars has no place in --format srt"),
    (["--manifest", "{tmp}/bad.tsv"], 2, "bad.tsv, line 2: want AUDIO<TAB>TEXT_FILE"),
    (["--manifest", "{tmp}/missing.tsv"], 2, "missing.tsv"),
    # a pair that cannot be aligned: its error, exit status 1 (as transcribe's unreadable files)
    ([EXAMPLES / "eight.flac", "{tmp}/missing.txt"], 1, "missing.txt"),
    ([EXAMPLES / "eight.flac", "{tmp}/digits.txt"], 1, "cannot spell '8'"),
    ([EXAMPLES / "eight.flac", "{tmp}/binary.txt"], 1, "binary.txt: not UTF-8 text"),
    ([EXAMPLES / "eight.flac", "{tmp}/long.txt"], 1, r"need at least 137 frames; it has 22"),
    (["{tmp}/no.flac", "{tmp}/digits.txt"], 1, "cannot spell '8'"),  # the text is checked before the audio
])
def test_cli_mistakes_are_one_line(transcripts, capsys, argv, status, message):
    (transcripts / "digits.txt").write_text("8\n")
    (transcripts / "binary.txt").write_bytes(b"\xff\xfe\x00")
    (transcripts / "long.txt").write_text("eight " * 23)
    (transcripts / "bad.tsv").write_text(f"{EXAMPLES / 'eight.flac'}\teight.txt\njust one field\n")
    assert cli(*[str(a).replace("{tmp}", str(transcripts)) for a in argv]) == status
    out = capsys.readouterr()
    assert len(out.err.strip().splitlines()) == 1 and out.err.startswith("npw2v2: error: ")
    assert message in out.err, out.err
    assert out.out == ""


def test_cli_a_manifests_bad_pairs_are_reported_and_the_rest_written(transcripts, capsys):
    (transcripts / "nine-one.txt").write_text("nine one 9\n")
    (transcripts / "eight.txt").unlink()
    out = transcripts / "out"
    assert cli("--manifest", transcripts / "pairs.tsv", "-o", out) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "eight.txt" in err[0] and "nine-one.flac): the model's vocabulary cannot spell '9'" in err[1]
    assert err[2].endswith(f"wrote 2 files to {out}")
    assert sorted(p.name for p in out.iterdir()) == ["seven-six-three-one.json", "zero-eight-three-seven.json"]


def test_align_keeps_going_past_bad_inputs_when_asked(bundled, tmp_path):
    clips = [EXAMPLES / "eight.flac", tmp_path / "missing.flac", EXAMPLES / "nine-one.flac", EXAMPLES / "eight.flac"]
    results = align.align(bundled, clips, ["eight", "eight", "nine one", "eight " * 23], errors="keep")
    assert [r.error is None for r in results] == [True, False, True, False]
    assert "missing.flac" in results[1].error and "need at least 137 frames" in results[3].error
    assert [w.text for w in results[2].words] == ["NINE", "ONE"] and results[1].words == []


def test_cli_segment_cuts_a_file_per_line_that_transcribes_to_the_line(transcripts, bundled, capsys):
    clip = EXAMPLES / "zero-eight-three-seven.flac"
    (transcripts / "lines.txt").write_text("Zero eight,\n\n  three\n…\nseven.\n")
    folder = transcripts / "cuts"
    assert cli(clip, transcripts / "lines.txt", "--segment", folder) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"zero-eight-three-seven-00{n}.{s}" for n in (1, 2, 3) for s in ("txt", "wav")]
    lines = [(folder / f"zero-eight-three-seven-00{n}.txt").read_text() for n in (1, 2, 3)]
    assert lines == ["ZERO EIGHT\n", "THREE\n", "SEVEN\n"]
    heard = bundled.transcribe(sorted(folder.glob("*.wav")))
    assert [r.text + "\n" for r in heard] == lines
    whole = audio.info(clip)
    cuts = [audio.info(p) for p in sorted(folder.glob("*.wav"))]
    assert all(c.rate == whole.rate for c in cuts) and sum(c.frames for c in cuts) < whole.frames


def test_line_spans_skip_lines_without_words(bundled):
    result = bundled.align(EXAMPLES / "seven-six-three-one.flac", "seven six\n?\nthree one")
    lines = align.line_spans(bundled, result, "seven six\n?\nthree one")
    assert [(s.text, s.start, s.end) for s in lines] == [
        ("SEVEN SIX", result.words[0].start, result.words[1].end), ("THREE ONE", result.words[2].start,
                                                                    result.words[3].end)]
    padded = align.line_spans(bundled, result, "seven six\n?\nthree one", pad=0.2)
    assert padded[0].start == max(0, lines[0].start - 0.2) and padded[1].end == min(result.seconds, lines[1].end + 0.2)
    assert padded[0].end == padded[1].start == (lines[0].end + lines[1].start) / 2  # the gap is narrower than 0.4 s


def test_bad_log_probabilities_and_lengths_name_the_item():
    log_probs = np.log(np.full((2, 5, 4), 0.25, np.float32))
    with pytest.raises(AlignmentError, match=r"item 1: 3 tokens, outside 1 .. 2 \(the targets' columns\)"):
        forced_align(log_probs, [[1, 2], [1, 2]], target_lengths=[2, 3])
    log_probs[1, 2, 3] = np.nan
    with pytest.raises(AlignmentError, match="item 1: log-probabilities hold NaN or"):
        forced_align(log_probs, [[1], [1]])
    forced_align(log_probs, [[1], [1]], frame_lengths=[5, 2])  # the NaN is past item 1's frames


def test_a_token_the_model_never_allows_fails_that_input_alone(bundled, monkeypatch):
    """forced_align returns torchaudio's path whatever it scores; align refuses a path of -inf."""
    log_probs = np.log(np.full((1, 5, 4), 0.25, np.float32))
    log_probs[0, :, 2] = -np.inf
    paths, scores = forced_align(log_probs, [[1, 2]])
    assert np.isneginf(scores).any()
    real_log_softmax = align.log_softmax

    def never_e(logits):  # the bundled model, made unable to say E
        out = real_log_softmax(logits)
        out[..., bundled.vocab["E"]] = -np.inf
        return out

    monkeypatch.setattr(align, "log_softmax", never_e)
    results = align.align(bundled, [EXAMPLES / "nine-one.flac", EXAMPLES / "eight.flac"], ["nine one", "eight"],
                          errors="keep")
    assert [r.error for r in results] == [f"input {i} ({EXAMPLES / f}): the aligned path has a log-probability of -inf"
                                          for i, f in enumerate(["nine-one.flac", "eight.flac"])]


def test_progress_hears_of_each_input_and_each_window(bundled):
    heard = []
    files = [EXAMPLES / "eight.flac", EXAMPLES / "seven-six-three-one.flac"]
    align.align(bundled, files, ["eight", "seven six three one"], chunk_seconds=1.0,
                progress=lambda done, total, detail=None: heard.append((done, total, detail)))
    assert heard[-1] == (2, 2, None) and (1, 2, None) in heard
    assert any(detail and detail.startswith("seven-six-three-one.flac: window 1/") for _, _, detail in heard)
