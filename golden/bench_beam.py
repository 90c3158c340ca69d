"""Time npw2v2's beam search against pyctcdecode's on the same logits and LM, in one process.

Run in pyctcdecode's environment (golden/README.md; npw2v2 is imported from this checkout):

    /work/venv-ctcdecode/bin/python golden/bench_beam.py [--rounds 5]

For each set of golden/data/ctcdecode/ (120 noisy letter utterances; the bundled model's logits
on 100 held-out clips) and each of three settings (no LM; the set's 3-gram ARPA (the digits': the
bundled model's LM) with pyctcdecode's defaults; the same with a beam of 20), both decoders decode
every utterance, taking turns set by
set, the order alternating from round to round. Prints the median over the rounds of the total
seconds, the seconds per second of audio (20 ms frames) and the ratio npw2v2 / pyctcdecode, and
checks that the transcripts are the same. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from pyctcdecode import build_ctcdecoder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from npw2v2.app.beam import LMScorer, alphabet, beam_search, log_softmax  # noqa: E402
from npw2v2.io.ngram import read_arpa  # noqa: E402

DATA = ROOT / "golden" / "data" / "ctcdecode"
SETTINGS = {"no LM": (False, {}), "LM": (True, {}), "LM, beam 20": (True, {"beam_width": 20})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    manifest = json.loads((DATA / "manifest.json").read_text())
    logits = load_file(str(DATA / "logits.safetensors"))
    labels = alphabet(manifest["vocabulary"])
    print(f"npw2v2 beam search against pyctcdecode {version('pyctcdecode')} (kenlm {version('kenlm')}), "
          f"numpy {np.__version__}, Python {sys.version.split()[0]}; medians of {args.rounds} rounds")
    for name in ("letters", "digits"):
        inputs = [logits[k].astype(np.float32) for k in sorted(logits, key=lambda k: int(k.split(".")[1]))
                  if k.startswith(name + ".")]
        audio_seconds = sum(len(x) for x in inputs) * 0.02
        arpa = DATA / "letters.arpa" if name == "letters" else ROOT / "npw2v2" / "bundled" / "digits.arpa"
        ours_lm, theirs_lm = LMScorer(read_arpa(arpa)), build_ctcdecoder(manifest["vocabulary"], str(arpa))
        plain = build_ctcdecoder(manifest["vocabulary"], None)
        for setting, (use_lm, options) in SETTINGS.items():
            def ours():
                return [beam_search(log_softmax(x), labels, ours_lm if use_lm else None, **options)[0].text
                        for x in inputs]

            def theirs():
                decoder = theirs_lm if use_lm else plain
                return [decoder.decode_beams(x, **options)[0][0] for x in inputs]

            times = {"npw2v2": [], "pyctcdecode": []}
            for r in range(args.rounds):
                order = [("npw2v2", ours), ("pyctcdecode", theirs)]
                for engine, run in order if r % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    texts = run()
                    times[engine].append(time.perf_counter() - start)
                    if engine == "npw2v2":
                        ours_texts = texts
                    else:
                        theirs_texts = texts
            same = sum(a == b for a, b in zip(ours_texts, theirs_texts))
            a, b = statistics.median(times["npw2v2"]), statistics.median(times["pyctcdecode"])
            print(f"{name} ({len(inputs)} inputs, {audio_seconds:.0f} s of audio), {setting}: "
                  f"npw2v2 {a:.2f} s ({a / audio_seconds * 1000:.1f} ms per audio second), "
                  f"pyctcdecode {b:.2f} s ({b / audio_seconds * 1000:.1f} ms), ratio {a / b:.2f}; "
                  f"same transcripts {same}/{len(inputs)}")


if __name__ == "__main__":
    main()
