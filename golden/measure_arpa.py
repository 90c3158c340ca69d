"""How long npw2v2 takes to read a large ARPA file, and the memory its n-grams take.

    python golden/measure_arpa.py [--ngrams 1000000 3000000]

For each size, writes a synthetic 4-gram ARPA file of about that many n-grams (50,000 words;
1-, 2-, 3- and 4-grams in the proportions 5 : 30 : 35 : 30, random log10 probabilities and
backoffs) into a temporary folder, then reads it in a fresh process: the seconds
npw2v2.io.ngram.read_arpa takes, and (in another process, as tracemalloc slows the reading)
the memory Python allocates for it: what the model holds afterwards, and the peak.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARES = {1: 0.05, 2: 0.30, 3: 0.35, 4: 0.30}
READ = """
import sys, time, tracemalloc
sys.path.insert(0, {root!r})
from npw2v2.io.ngram import read_arpa
if {traced}:
    tracemalloc.start()
start = time.perf_counter()
model = read_arpa({path!r})
seconds = time.perf_counter() - start
held, peak = tracemalloc.get_traced_memory()
print(len(model.ngrams), seconds, held / 1e6, peak / 1e6)
"""


def write_arpa(path: Path, ngrams: int, words: int = 50_000, seed: int = 0) -> None:
    rng = np.random.RandomState(seed)
    vocab = [f"w{i}" for i in range(words)]
    counts = {n: (words + 2 if n == 1 else int(ngrams * share)) for n, share in SHARES.items()}
    with open(path, "w") as f:
        f.write("\\data\\\n" + "".join(f"ngram {n}={c}\n" for n, c in counts.items()) + "\n")
        f.write("\\1-grams:\n-1.5\t<unk>\t0\n-99\t<s>\t-0.5\n")
        for w in vocab:
            f.write(f"{-rng.rand() * 6:.6f}\t{w}\t{-rng.rand():.6f}\n")
        for n in (2, 3, 4):
            f.write(f"\n\\{n}-grams:\n")
            seen = set()
            while len(seen) < counts[n]:
                ids = rng.randint(0, words, (counts[n] - len(seen), n))
                for row in map(tuple, ids):
                    if row in seen:
                        continue
                    seen.add(row)
                    tail = f"\t{-rng.rand():.6f}" if n < 4 else ""
                    f.write(f"{-rng.rand() * 4:.6f}\t{' '.join(vocab[i] for i in row)}{tail}\n")
        f.write("\n\\end\\\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ngrams", type=int, nargs="+", default=[1_000_000, 3_000_000])
    args = parser.parse_args()
    for size in args.ngrams:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "synthetic.arpa"
            write_arpa(path, size)
            megabytes = path.stat().st_size / 1e6
            timed, traced = (subprocess.run([sys.executable, "-c", READ.format(root=str(ROOT), path=str(path),
                                                                               traced=traced)],
                                            capture_output=True, text=True, check=True).stdout.split()
                             for traced in (False, True))
            count, seconds, held, peak = int(timed[0]), float(timed[1]), float(traced[2]), float(traced[3])
            print(f"{count:,} n-grams ({megabytes:.0f} MB of ARPA): read in {seconds:.1f} s; the model holds "
                  f"{held:,.0f} MB ({held * 1e6 / count:.0f} bytes per n-gram), {peak:,.0f} MB at the peak")


if __name__ == "__main__":
    main()
