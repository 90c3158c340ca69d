"""The npw2v2 command line: parsing and printing only; the work is done by the library."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import BASE, LARGE, CheckpointError, from_tensors, load, random_weights

SAMPLING_RATE = 16000  # what every published wav2vec 2.0 checkpoint expects
BUILT_IN = {"base": BASE, "large": LARGE}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="npw2v2", description="wav2vec 2.0 in pure NumPy")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run one padded batch through a model and show how lengths become frames",
        description="Run one padded batch of noise through a model (by default the wav2vec2-base "
                    "architecture with random weights: nothing to download) and show the shapes, "
                    "the frames of each input, and that each input gets the same result as alone.")
    demo.add_argument("--model", help="a .safetensors file or Hugging Face folder, or 'base' / 'large' "
                                      "for that architecture with random weights (default: base)", default="base")
    demo.add_argument("--seconds", type=float, nargs="+", default=[1.3, 2.7], help="input lengths (default: 1.3 2.7)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except (CheckpointError, ValueError) as e:
        print(f"npw2v2: error: {e}", file=sys.stderr)
        return 2


def load_model(name: str, seed: int):
    if name in BUILT_IN:
        cfg = BUILT_IN[name]
        return from_tensors(random_weights(cfg, seed=seed), cfg), f"{name} architecture, random weights (seed {seed})"
    return load(name), name


def run_demo(args) -> int:
    model, description = load_model(args.model, args.seed)
    lengths = [round(s * SAMPLING_RATE) for s in args.seconds]
    rng = np.random.RandomState(args.seed)
    x = np.zeros((len(lengths), max(lengths)), dtype=np.float32)  # [B, S], right-padded with zeros
    for i, n in enumerate(lengths):
        x[i, :n] = rng.standard_normal(n)
    mask = np.arange(x.shape[1])[None, :] < np.array(lengths)[:, None]  # [B, S], True = real audio

    print(f"model: {description}\n  {model!r}")
    start = time.perf_counter()
    out = model(x, attention_mask=mask)
    seconds = time.perf_counter() - start
    frames = out.frame_mask.shape[1]
    print(f"batch: {len(lengths)} inputs padded to {x.shape[1]} samples; 1 frame per "
          f"{model.config.frame_stride} samples after the first {model.config.receptive_field}")
    print(f"  {'item':>4} {'seconds':>8} {'samples':>8} {'frames':>7} {'padding frames':>15}")
    for i, (n, t) in enumerate(zip(lengths, out.frame_lengths)):
        print(f"  {i:>4} {n / SAMPLING_RATE:>8.2f} {n:>8} {t:>7} {frames - t:>15}")
    print(f"  input_values       {list(x.shape)}  [B, S]")
    print(f"  extract_features   {list(out.extract_features.shape)}  [B, T, C]  conv features")
    print(f"  last_hidden_state  {list(out.last_hidden_state.shape)}  [B, T, D]  transformer output")
    if out.logits is not None:
        print(f"  logits             {list(out.logits.shape)}  [B, T, V]  CTC head")
    print(f"forward pass: {seconds:.2f} s")
    worst = max(_difference_from_alone(model, x, lengths, out, i) for i in range(len(lengths)))
    print(f"largest difference between an item in the batch and the item alone: {worst:.1e}")
    return 0


def _difference_from_alone(model, x, lengths, batched, i) -> float:
    alone = model(x[i:i + 1, :lengths[i]]).last_hidden_state[0]  # [T_i, D]
    return float(np.abs(batched.last_hidden_state[i, :len(alone)] - alone).max())


if __name__ == "__main__":
    sys.exit(main())
