"""npw2v2.app.ctc: greedy CTC decoding of hand-made frame tokens and logits, checked against expected
text and times and against a naive frame-by-frame decoder written here."""
import numpy as np
import pytest

from npw2v2.app import ctc

SPF = 0.02  # seconds per frame (320 samples at 16 kHz)
# Hugging Face order: <pad> (the blank) is 0, "|" the word delimiter.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'"]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]


def ids(frames: str, vocab=VOCAB, blank: str = "<pad>") -> list[int]:
    """Frame tokens from a string, one character a frame; "_" is the blank."""
    return [vocab.index(blank if c == "_" else c) for c in frames]


def naive_decode(tokens, vocab, blank, spf, delimiter="|"):
    """Reference greedy CTC, frame by frame: (text, [(char, start, end)], [(word, start, end)])."""
    runs, previous = [], None
    for frame, token in enumerate(tokens):
        if token != blank:
            if token == previous:
                runs[-1][2] = frame + 1
            else:
                runs.append([token, frame, frame + 1])
        previous = token
    chars, words, word = [], [], []
    for token, first, end in runs:
        symbol = vocab[token]
        if symbol in ("<s>", "</s>", "<pad>", "<unk>"):
            continue
        if symbol == delimiter:
            if word:
                words.append(word)
            word = []
            continue
        chars.append((symbol, first * spf, end * spf))
        word.append(chars[-1])
    if word:
        words.append(word)
    words = [("".join(c[0] for c in w), w[0][1], w[-1][2]) for w in words]
    return " ".join(w[0] for w in words), chars, words


def spans(items):
    return [(s.text, s.start, s.end) for s in items]


def same_spans(found, expected):
    """Span lists equal: same texts, times equal to float rounding."""
    found = spans(found)
    return [t for t, _, _ in found] == [t for t, _, _ in expected] and np.allclose(
        [(a, b) for _, a, b in found], [(a, b) for _, a, b in expected], rtol=0, atol=1e-9)


def assert_matches_naive(tokens, vocab=VOCAB, blank=0, spf=SPF):
    decoded = ctc.decode(tokens, vocab, blank, spf)
    text, chars, words = naive_decode(list(tokens), vocab, blank, spf)
    assert decoded.text == text
    assert same_spans(decoded.chars, chars), (spans(decoded.chars), chars)
    assert same_spans(decoded.words, words), (spans(decoded.words), words)
    return decoded


# ---------------------------------------------------------------------------
# best_tokens


def test_best_tokens_is_argmax_over_last_axis():
    """best_tokens picks the largest logit of each frame, for [T, V] and [B, T, V]."""
    logits = np.full((4, 5), -1.0)
    logits[[0, 1, 2, 3], [3, 0, 4, 3]] = 2.0
    np.testing.assert_array_equal(ctc.best_tokens(logits), [3, 0, 4, 3])

    batch = np.random.default_rng(0).standard_normal((2, 7, 9))
    np.testing.assert_array_equal(ctc.best_tokens(batch), batch.argmax(axis=-1))
    np.testing.assert_array_equal(ctc.best_tokens(batch.tolist()), batch.argmax(axis=-1))


def test_logits_to_text():
    """One-hot-ish logits of "HH_EE_LL_LL_OO" decode to HELLO through best_tokens."""
    frames = ids("HH_EE_LL_LL_OO")
    logits = np.random.default_rng(1).uniform(-1, 0, (len(frames), len(VOCAB)))
    logits[np.arange(len(frames)), frames] = 3.0

    assert ctc.decode(ctc.best_tokens(logits), VOCAB, 0, SPF).text == "HELLO"


# ---------------------------------------------------------------------------
# decode: text


@pytest.mark.parametrize("frames,text", [
    ("HH_EE_LL_LL_OO", "HELLO"),  # a blank between two runs of L keeps the double letter
    ("HHEELLLLOO", "HELO"),  # without it the runs merge
    ("___H____I___", "HI"),
    ("HEL_LO|WORLD", "HELLO WORLD"),
    ("||_HE|||_|WE|_|", "HE WE"),  # many, leading and trailing delimiters: single spaces, none at the ends
    ("A|B|C", "A B C"),
    ("DON'T", "DON'T"),
    ("L|L", "L L"),
    ("______", ""),
    ("||||", ""),
    ("", ""),
])
def test_decode_text(frames, text):
    """Runs collapse, blanks go, "|" separates words; same as the naive decoder."""
    decoded = assert_matches_naive(ids(frames))
    assert decoded.text == text


def test_special_tokens_never_reach_the_text():
    """<s>, </s>, <pad>, <unk> are dropped, wherever they are, and never appear in chars or words."""
    tokens = [VOCAB.index(t) for t in ["<s>", "H", "<unk>", "I", "|", "</s>", "Y", "<pad>", "O", "<s>", "</s>"]]

    decoded = assert_matches_naive(tokens)

    assert decoded.text == "HI YO"
    assert not any(s in decoded.text for s in SPECIAL) and "<" not in decoded.text
    assert all(c.text not in SPECIAL for c in decoded.chars + decoded.words)


def test_empty_input_gives_no_text_and_no_words():
    """No frames at all: text "", no chars, no words (list or empty int array)."""
    for tokens in ([], np.zeros(0, dtype=np.int64)):
        decoded = ctc.decode(tokens, VOCAB, 0, SPF)
        assert (decoded.text, decoded.chars, decoded.words) == ("", [], [])


# ---------------------------------------------------------------------------
# decode: times


def test_char_and_word_times():
    """A char spans first frame * 0.02 s to (last frame + 1) * 0.02 s; a word its first to last char."""
    decoded = ctc.decode(ids("__HH_EE|_WW__E"), VOCAB, 0, SPF)

    assert decoded.text == "HE WE"
    assert same_spans(decoded.chars, [("H", 0.04, 0.08), ("E", 0.10, 0.14), ("W", 0.18, 0.22), ("E", 0.26, 0.28)])
    assert same_spans(decoded.words, [("HE", 0.04, 0.14), ("WE", 0.18, 0.28)])


def test_times_scale_with_seconds_per_frame():
    """seconds_per_frame is used as given (here 0.05 s)."""
    decoded = ctc.decode(ids("_AB"), VOCAB, 0, 0.05)

    assert same_spans(decoded.words, [("AB", 0.05, 0.15)])


# ---------------------------------------------------------------------------
# decode: other blanks and vocabularies


def test_fairseq_vocab_with_s_as_blank():
    """fairseq order, <s> = 0 is the blank: it splits runs (double L) and never shows."""
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "|", "E", "H", "L", "O"]
    tokens = ids("HH_EE_LL_LL_OO|_|", vocab, blank="<s>")

    decoded = assert_matches_naive(tokens, vocab, blank=0)

    assert decoded.text == "HELLO"


@pytest.mark.parametrize("blank", [4, 2])
def test_blank_other_than_zero(blank):
    """A blank that is an ordinary symbol at id 2 or 4 is dropped; id 0 is then a letter and kept."""
    vocab = ["A", "L", "-", "|", "_"]
    symbol = vocab[blank]
    tokens = [vocab.index(c) for c in "AA_LL_LL|_A_".replace("_", symbol)]

    decoded = assert_matches_naive(tokens, vocab, blank=blank)

    assert decoded.text == "ALL A"
    assert symbol not in decoded.text


def test_random_frames_match_naive_decoder():
    """Many random frame sequences rich in blanks, repeats, delimiters and specials: same as naive."""
    rng = np.random.default_rng(2)
    weights = np.ones(len(VOCAB))
    weights[[0, 4]] = 8  # plenty of blanks and delimiters
    weights /= weights.sum()
    for _ in range(300):
        length = rng.integers(0, 40)
        tokens = rng.choice(len(VOCAB), size=length, p=weights)
        tokens = np.repeat(tokens, rng.integers(1, 4, size=length))  # runs
        decoded = assert_matches_naive(tokens)
        assert decoded.text == decoded.text.strip() and "  " not in decoded.text


def test_token_runs_report_first_and_end_frames():
    """token_runs gives (token, first frame, last frame + 1) of every non-blank run."""
    assert ctc.token_runs(ids("_AA__B|BB_"), blank=0) == [
        (VOCAB.index("A"), 1, 3), (VOCAB.index("B"), 5, 6), (4, 6, 7), (VOCAB.index("B"), 7, 9)]


def test_ids_without_symbol_are_dropped():
    """Ids the vocabulary does not name (lm_head wider than vocab.json) add no chars, words or spaces."""
    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B"]
    decoded = ctc.decode([5, 4, 9, 4, 6], vocab, 0, SPF)  # A | <id 9> | B

    assert decoded.text == "A B"
    assert all(s.text for s in decoded.chars + decoded.words)
