"""Record pyctcdecode's beam search on fixed logits, for npw2v2's beam search tests (tests/test_beam.py).

pyctcdecode pins numpy < 2 and needs kenlm compiled, so it gets an environment of its own:

    python3.11 -m venv /work/venv-ctcdecode
    /work/venv-ctcdecode/bin/pip install "numpy<2" pyctcdecode kenlm scipy safetensors soundfile
    /work/venv-ctcdecode/bin/python golden/record_ctcdecode.py   # rewrites golden/data/ctcdecode/ (2 min)

Two sets of logits over the bundled model's 32-token vocabulary (wav2vec2-base-960h's):

- ``letters``: 120 made-up utterances, sentences of a word chain spelled frame by frame, each
  letter held 1 to 3 frames with blanks between, in Gaussian noise, some letters confused with
  others and some words the LM does not know; the LM (``letters.arpa``, a 3-gram written here
  from 2000 sentences of the same chain) has to fix them;
- ``digits``: the bundled model's own logits (npw2v2, this environment) on the first 100
  held-out clips of golden/data/tiny_digits, with a 3-gram LM of random digit strings, written
  here into npw2v2/bundled/digits.arpa: the LM shipped with the bundled model.

Logits are stored as float16 and read back as float32 by both decoders, so they see the same
numbers. For each set and each of the SETTINGS, pyctcdecode's ``build_ctcdecoder`` (ARPA through
kenlm) and ``decode_beams``: the best beam (text, word frames, logit score, combined score), the
next two (text and scores) and how many beams it ended with, into ``decoded.json``; with KenLM's own
``BaseScore`` of 200 random word sequences per LM, unknown words among them (``kenlm``).
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from pyctcdecode import build_ctcdecoder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import npw2v2  # noqa: E402

OUT = ROOT / "golden" / "data" / "ctcdecode"
BUNDLED_LM = ROOT / "npw2v2" / "bundled" / "digits.arpa"
SEED = 2024
VOCAB = npw2v2.load(ROOT / "npw2v2" / "bundled" / "digits.safetensors").id_to_token  # <pad> <s> </s> <unk> | E T A ...
WORDS = ("THE OF AND TO IN IS YOU THAT IT HE WAS FOR ON ARE AS WITH HIS THEY AT BE THIS HAVE FROM OR ONE HAD BY "
         "WORD BUT NOT WHAT ALL WERE WE WHEN YOUR CAN SAID THERE USE EACH WHICH SHE DO HOW THEIR IF WILL UP OTHER "
         "ABOUT OUT MANY THEN THEM THESE SO SOME HER WOULD MAKE LIKE HIM INTO TIME HAS LOOK TWO MORE WRITE GO SEE "
         "NUMBER NO WAY COULD PEOPLE MY THAN FIRST WATER BEEN CALL WHO OIL ITS NOW FIND LONG DOWN DAY DID GET COME "
         "MADE MAY PART").split()
UNKNOWN_WORDS = ["ZEPHYR", "QUOKKA", "JINX", "VEX"]  # not in the LM; two of them are hotwords below
DIGITS = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()
SETTINGS = {
    "no_lm": dict(lm=False),
    "lm": dict(lm=True),  # pyctcdecode's defaults: alpha 0.5, beta 1.5, unk -10, beam 100, prune -10, min logp -5
    "lm_weighted": dict(lm=True, alpha=1.2, beta=-0.5, unk_score_offset=-4.0, lm_score_boundary=False),
    "hotwords": dict(lm=True, hotwords=["ZEPHYR QUOKKA"], hotword_weight=8.0),
    "hotwords_no_lm": dict(lm=False, hotwords=["QUOKKA", "THE WATER"]),
    "narrow": dict(lm=True, beam_width=6, beam_prune_logp=-4.0, token_min_logp=-2.5, prune_history=True),
}


# ---------------------------------------------------------------------------
# Sentences and an n-gram LM in ARPA form


def word_chain(words: list[str], rng: np.random.RandomState):
    """A random Markov chain over words: each word has 4 successors, with their probabilities."""
    return {w: (rng.choice(len(words), 4, replace=False), rng.dirichlet(np.ones(4))) for w in words}


def sentences(words: list[str], chain, count: int, rng: np.random.RandomState, shortest=3, longest=9):
    out = []
    for _ in range(count):
        word = words[rng.randint(len(words))]
        sentence = [word]
        for _ in range(rng.randint(shortest, longest + 1) - 1):
            successors, p = chain[word]
            word = words[successors[rng.choice(4, p=p)]]
            sentence.append(word)
        out.append(sentence)
    return out


def write_arpa(corpus: list[list[str]], order: int, path: Path, discount: float = 0.5) -> None:
    """A backoff n-gram model of the corpus, as KenLM's lmplz lays it out.

    Absolute discounting (Katz-style backoff): seen n-grams get (count - discount) / count(context),
    the mass freed goes to the shorter context through the context's backoff weight, chosen so each
    context's probabilities sum to 1; unigrams by count, <unk> given one count. Every n-gram below
    the top order but those ending in </s> carries a backoff weight.
    """
    counts = [Counter() for _ in range(order + 1)]
    for sentence in corpus:
        tokens = ["<s>"] + sentence + ["</s>"]
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                gram = tuple(tokens[i:i + n])
                if gram != ("<s>",):
                    counts[n][gram] += 1
    counts[1][("<unk>",)] += 1
    total = sum(counts[1].values())
    logp = {gram: math.log10(c / total) for gram, c in counts[1].items()}
    logp[("<s>",)] = -99.0
    prob = {gram: c / total for gram, c in counts[1].items()}
    backoff = {}
    for n in range(2, order + 1):
        by_context = defaultdict(list)
        for gram, c in counts[n].items():
            by_context[gram[:-1]].append((gram, c))
        for context, grams in by_context.items():
            context_count = sum(c for _, c in grams)
            seen = 0.0
            lower = 0.0
            for gram, c in grams:
                p = (c - discount) / context_count
                prob[gram], logp[gram] = p, math.log10(p)
                seen += p
                lower += lower_probability(gram[1:], prob, backoff)
            backoff[context] = (1 - seen) / (1 - lower)
    lines = ["\\data\\"] + [f"ngram {n}={len([g for g in logp if len(g) == n])}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in sorted(g for g in logp if len(g) == n):
            entry = f"{logp[gram]:.6f}\t{' '.join(gram)}"
            if n < order and gram[-1] != "</s>":
                entry += f"\t{math.log10(backoff.get(gram, 1.0)):.6f}"
            lines.append(entry)
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines))


def lower_probability(gram: tuple, prob: dict, backoff: dict) -> float:
    """P(gram[-1] | gram[:-1]) by backoff, from what has been estimated so far."""
    if gram in prob:
        return prob[gram]
    return backoff.get(gram[:-1], 1.0) * lower_probability(gram[1:], prob, backoff)


# ---------------------------------------------------------------------------
# Logits


def spelled_logits(sentence: list[str], rng: np.random.RandomState) -> np.ndarray:
    """[T, V] logits that spell the sentence frame by frame, noisy, with some letters confused."""
    index = {t: i for i, t in enumerate(VOCAB)}
    letters = [i for t, i in index.items() if t.isalpha() and len(t) == 1]
    path = [0] * rng.randint(1, 4)
    text = "|".join(sentence)
    if rng.rand() < 0.3:
        text += "|"  # a word delimiter before the end, as models often emit
    for ch in text:
        path += [index[ch]] * rng.randint(1, 4) + [0] * rng.randint(0, 3)
    path += [0] * rng.randint(1, 4)
    logits = rng.randn(len(path), len(VOCAB)).astype(np.float32) * 1.5
    for t, token in enumerate(path):
        if token != 0 and VOCAB[token] != "|" and rng.rand() < 0.12:  # a confusion: another letter as likely
            logits[t, letters[rng.randint(len(letters))]] += 6.0 + rng.rand()
        logits[t, token] += 6.0 + rng.rand()
    return logits


def letters_set(rng: np.random.RandomState):
    chain = word_chain(WORDS, rng)
    corpus = sentences(WORDS, chain, 2000, rng)
    write_arpa(corpus, 3, OUT / "letters.arpa")
    utterances = sentences(WORDS, chain, 120, rng)
    for i in range(0, 120, 6):  # a word the LM does not know in every sixth
        utterances[i][rng.randint(len(utterances[i]))] = UNKNOWN_WORDS[(i // 6) % len(UNKNOWN_WORDS)]
    return [spelled_logits(s, rng) for s in utterances], [" ".join(s) for s in utterances]


def digits_set(rng: np.random.RandomState):
    corpus = [[DIGITS[d] for d in rng.randint(0, 10, rng.randint(1, 9))] for _ in range(3000)]
    write_arpa(corpus, 3, BUNDLED_LM)  # shipped with the bundled model: its own LM (transcribe --lm)
    folder = ROOT / "golden" / "data" / "tiny_digits"
    held_out = json.loads((folder / "held_out.json").read_text())[:100]
    model = npw2v2.load(ROOT / "npw2v2" / "bundled" / "digits.safetensors")
    logits = []
    for item in held_out:
        x = npw2v2.io.audio.load(folder / "held_out" / item["file"], model.sampling_rate, model.config.receptive_field)
        x = npw2v2.io.audio.normalize(x[None]) if model.do_normalize else x[None]
        logits.append(np.asarray(model(x).logits[0]))
    return logits, [item["text"] for item in held_out]


# ---------------------------------------------------------------------------
# kenlm and pyctcdecode


def kenlm_scores(arpa: Path, words: list[str], rng: np.random.RandomState, count: int = 200) -> list[dict]:
    """KenLM's own log10 scores of random word sequences (some words unknown to it), word by word
    from the start of a sentence and then </s>, and whether it knows each word."""
    import kenlm

    model = kenlm.Model(str(arpa))
    queries = []
    for _ in range(count):
        sentence = [words[i] for i in rng.randint(0, len(words), rng.randint(1, 7))]
        state, scores = kenlm.State(), []
        model.BeginSentenceWrite(state)
        for word in sentence + ["</s>"]:
            after = kenlm.State()
            scores.append(model.BaseScore(state, word, after))
            state = after
        queries.append({"words": sentence, "log10": scores, "known": [w in model for w in sentence]})
    return queries



def decode(logits: list[np.ndarray], arpa: Path, setting: dict) -> list[dict]:
    options = dict(setting)
    use_lm = options.pop("lm")
    build = {k: options.pop(k) for k in ("alpha", "beta", "unk_score_offset", "lm_score_boundary") if k in options}
    decoder = build_ctcdecoder(VOCAB, str(arpa) if use_lm else None, **build)
    results = []
    for x in logits:
        beams = decoder.decode_beams(x, **options)
        (text, _, frames, logit, combined) = beams[0]
        results.append({"beams": len(beams), "text": text, "words": [[w, *f] for w, f in frames],
                        "logit_score": logit, "score": combined,
                        "runners_up": [[t, lo, co] for t, _, _, lo, co in beams[1:3]]})
    return results


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(SEED)
    sets = {"letters": letters_set(rng), "digits": digits_set(rng)}
    stored, decoded, texts = {}, {}, {}
    scores = {"letters": kenlm_scores(OUT / "letters.arpa", WORDS + UNKNOWN_WORDS + ["<s>", "</s>", "<unk>"], rng),
              "digits": kenlm_scores(BUNDLED_LM, DIGITS + ["TEN"], rng)}
    for name, (logits, spoken) in sets.items():
        logits = [x.astype(np.float16) for x in logits]
        stored.update({f"{name}.{i}": x for i, x in enumerate(logits)})
        texts[name] = spoken
        as_read = [x.astype(np.float32) for x in logits]
        arpa = BUNDLED_LM if name == "digits" else OUT / f"{name}.arpa"
        decoded[name] = {setting: decode(as_read, arpa, options) for setting, options in SETTINGS.items()}
    save_file(stored, str(OUT / "logits.safetensors"))
    (OUT / "decoded.json").write_text(json.dumps({"spoken": texts, "decoded": decoded, "kenlm": scores}) + "\n")
    manifest = {"command": "/work/venv-ctcdecode/bin/python golden/record_ctcdecode.py", "seed": SEED,
                "versions": {p: version(p) for p in ("pyctcdecode", "kenlm", "numpy")} | {"python": sys.version.split()[0]},
                "vocabulary": VOCAB, "settings": SETTINGS}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT}: {sorted(p.name for p in OUT.iterdir())}")


if __name__ == "__main__":
    main()
