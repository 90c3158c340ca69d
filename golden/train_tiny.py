"""Train the bundled model: a tiny wav2vec 2.0 CTC recogniser of spoken digits, from scratch.

    python golden/train_tiny.py --minutes 30          # needs torch, transformers, espeak-ng

Data: digit strings of 1 to 7 digits, spoken as the words ZERO ... NINE by Debian's espeak-ng
in several English accents and voice variants, at speeds 120-220 and pitches 20-80,
resampled to 16 kHz, with random gain and light noise. The held-out test set uses voice
variants that never appear in training. The architecture is transformers' Wav2Vec2ForCTC
(layer-norm conv encoder, pre-LN transformer), trained with CTC, no masking or dropout.

Writes npw2v2/bundled/digits.safetensors (the best checkpoint, converted by npw2v2-convert from
the Hugging Face folder transformers saves, which is not kept) and golden/data/tiny_digits/ (the
held-out test set as FLAC files with their texts, PyTorch's transcripts of them, and a
training log). ``--init npw2v2/bundled/digits.safetensors`` continues from the bundled model.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from npw2v2.app.metrics import word_error_rate  # noqa: E402
from npw2v2.app.torch_bridge import transformers_model  # noqa: E402
from npw2v2.io.weights import read_safetensors  # noqa: E402

sys.path.insert(0, str(ROOT / "golden"))
from digits_data import (ACCENTS, RATE, TEST_VARIANTS, TRAIN_VARIANTS, degrade, paused_jobs,  # noqa: E402
                         perturb_speed, synthesize, synthesize_paused, utterances)

OUT = ROOT / "golden" / "data" / "tiny_digits"
BUNDLED = ROOT / "npw2v2" / "bundled" / "digits.safetensors"
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]  # wav2vec2-base-960h's layout
MODEL = dict(
    vocab_size=len(VOCAB), hidden_size=144, num_hidden_layers=3, num_attention_heads=4, intermediate_size=576,
    conv_dim=[64] * 7, conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
    num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4, architectures=["Wav2Vec2ForCTC"],
    pad_token_id=0, bos_token_id=1, eos_token_id=2, ctc_loss_reduction="mean", ctc_zero_infinity=True,
    hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
    final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0,
)
PREPROCESSOR = {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
                "sampling_rate": RATE}


# ---------------------------------------------------------------------------
# Batches


def labels(text: str) -> list[int]:
    return [VOCAB.index("|" if c == " " else c) for c in text]


def normalize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def batch(audio: list[np.ndarray], texts: list[str]):
    """Padded, normalised inputs with their attention mask, and padded labels (-100)."""
    n = max(len(a) for a in audio)
    x = np.zeros((len(audio), n), np.float32)
    mask = np.zeros((len(audio), n), np.int64)
    for i, a in enumerate(audio):
        x[i, :len(a)], mask[i, :len(a)] = normalize(a), 1
    ids = [labels(t) for t in texts]
    y = np.full((len(ids), max(map(len, ids))), -100, np.int64)
    for i, t in enumerate(ids):
        y[i, :len(t)] = t
    return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(y)


# ---------------------------------------------------------------------------
# Evaluation


def greedy(logits: torch.Tensor, length: int) -> str:
    ids = logits[:length].argmax(-1).tolist()
    out, previous = [], None
    for i in ids:
        if i != previous and i != 0:
            out.append(VOCAB[i])
        previous = i
    return " ".join("".join(out).replace("|", " ").split())


@torch.no_grad()
def transcribe(model, audio: list[np.ndarray]) -> list[str]:
    model.eval()
    texts = []
    for i in range(0, len(audio), 16):
        x, mask, _ = batch(audio[i:i + 16], ["ONE"] * len(audio[i:i + 16]))
        logits = model(x, attention_mask=mask).logits
        frames = model._get_feat_extract_output_lengths(mask.sum(-1))
        texts += [greedy(lg, int(n)) for lg, n in zip(logits, frames)]
    model.train()
    return texts


def wer(model, audio, texts) -> float:
    return word_error_rate(texts, transcribe(model, audio))


# ---------------------------------------------------------------------------
# Training


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--train", type=int, default=6000, help="training utterances")
    parser.add_argument("--test", type=int, default=320, help="held-out utterances")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-wer", type=float, default=0.02, help="stop early below this held-out WER")
    parser.add_argument("--init", type=Path, help="continue from this model file (a previous run's bundled model)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--speed-perturb", action="store_true",
                        help="also play training clips 10%% faster or slower, at random")
    parser.add_argument("--paused", type=int, default=0,
                        help="also train on this many recordings of digit strings with pauses (every other step)")
    parser.add_argument("--paused-seconds", type=float, nargs=2, default=(4.0, 16.0),
                        help="their lengths (the validation set's: up to twice as long)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="optimizer steps over which the learning rate rises from 0 (a continued run's fresh "
                             "AdamW otherwise takes full-size steps at once)")
    parser.add_argument("--decay", action="store_true",
                        help="lower the learning rate linearly to 0 by the end of the time budget")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between held-out evaluations")
    parser.add_argument("--validate", type=int, default=24,
                        help="held-out paused recordings that choose the best checkpoint with the held-out clips")
    return parser.parse_args()


def paused_sets(args, rng: np.random.RandomState):
    """Training and validation recordings with pauses (clean training audio: degraded per step)."""
    if not args.paused:
        return [], [], [], []
    low, high = args.paused_seconds
    train_jobs = paused_jobs(args.paused, TRAIN_VARIANTS, args.seed + 2, (low, high))
    valid_jobs = paused_jobs(args.validate, TEST_VARIANTS, args.seed + 3, (low, 2 * high))
    valid_audio = [degrade(x, rng) for x in synthesize_paused(valid_jobs)]
    return train_jobs, synthesize_paused(train_jobs), valid_audio, [j["text"] for j in valid_jobs]


def main() -> None:
    args = arguments()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    start = time.time()
    train_jobs = utterances(args.train, TRAIN_VARIANTS, args.seed)
    test_jobs = utterances(args.test, TEST_VARIANTS, args.seed + 1)
    train_audio, test_audio = synthesize(train_jobs), synthesize(test_jobs)
    rng = np.random.RandomState(args.seed)
    test_audio = [degrade(x, rng) for x in test_audio]
    test_texts = [j["text"] for j in test_jobs]
    paused_train_jobs, paused_train_audio, valid_audio, valid_texts = paused_sets(args, rng)
    print(f"synthesised {len(train_audio)} + {len(test_audio)} utterances and {len(paused_train_audio)} + "
          f"{len(valid_audio)} recordings with pauses in {time.time() - start:.0f} s", flush=True)

    if args.init:
        model = transformers_model(Wav2Vec2ForCTC, MODEL, read_safetensors(args.init)[0]).train()
    else:
        model = Wav2Vec2ForCTC(Wav2Vec2Config(**MODEL)).train()
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    log, best, step, train_start = [], (math.inf, None), 0, time.time()

    def lr_factor(updates: int) -> float:
        warm = min(1.0, (updates + 1) / args.warmup) if args.warmup else 1.0
        left = max(0.0, 1.0 - (time.time() - train_start) / (60 * args.minutes)) if args.decay else 1.0
        return warm * left

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    def evaluate(loss) -> float:
        """Held-out WER (clips and paused recordings, all words together); keeps the best checkpoint."""
        nonlocal best
        texts, heard = test_texts + valid_texts, transcribe(model, test_audio + valid_audio)
        error = word_error_rate(texts, heard)
        log.append({"step": step, "minutes": round((time.time() - train_start) / 60, 1), "loss": round(loss, 4),
                    "held_out_wer": round(word_error_rate(test_texts, heard[:len(test_texts)]), 4)})
        if valid_texts:
            log[-1]["paused_wer"] = round(word_error_rate(valid_texts, heard[len(test_texts):]), 4)
        print(json.dumps(log[-1]), flush=True)
        if error < best[0]:
            best = (error, {k: v.clone() for k, v in model.state_dict().items()})
        return error

    def train_on(clips: list[np.ndarray], texts: list[str]) -> float:
        x, mask, y = batch([degrade(c, rng) for c in clips], texts)
        loss = model(x, attention_mask=mask, labels=y).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        return loss.item()

    done, loss = False, math.nan
    if args.init:
        evaluate(loss)  # the starting point is a candidate too: a continued run never ends worse
    while not done:
        order = list(range(len(train_audio)))
        random.Random(step).shuffle(order)
        for i in range(0, len(order) - 7, 8):
            chosen = order[i:i + 8]
            clips = [perturb_speed(train_audio[k], rng) if args.speed_perturb else train_audio[k] for k in chosen]
            loss, step = train_on(clips, [train_jobs[k]["text"] for k in chosen]), step + 1
            if paused_train_audio:  # four recordings with pauses after every batch of clips
                chosen = rng.choice(len(paused_train_audio), 4, replace=False)
                train_on([paused_train_audio[k] for k in chosen], [paused_train_jobs[k]["text"] for k in chosen])
            out_of_time = time.time() - train_start > 60 * args.minutes
            if step % args.eval_every == 0 or out_of_time:
                done = evaluate(loss) <= args.target_wer or out_of_time
                if done:
                    break
    model.load_state_dict(best[1])
    save(model, test_audio, test_texts, test_jobs, log, args)


def bundle_examples(held_out: list[dict], count: int = 4) -> None:
    """Copy a few held-out clips into the package as examples, named by what they say.

    Chosen in order among the clips PyTorch transcribes correctly (the README says so), with
    different voices.
    """
    import shutil

    folder = BUNDLED.parent / "examples"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    voices = set()
    for item in held_out:
        if item["pytorch"] == item["text"] and item["voice"] not in voices and len(voices) < count:
            voices.add(item["voice"])
            shutil.copyfile(OUT / "held_out" / item["file"], folder / f"{item['text'].lower().replace(' ', '-')}.flac")


def save(model, test_audio, test_texts, test_jobs, log, args) -> None:
    """The best checkpoint as a Hugging Face folder, the held-out set, PyTorch's transcripts, the bundle."""
    import shutil

    model.eval()
    earlier, not_kept = [], []
    if args.init and (OUT / "manifest.json").is_file():  # keep the history of a continued run
        previous = json.loads((OUT / "manifest.json").read_text())
        earlier = previous.get("earlier_runs", []) + [{k: previous[k] for k in ("command", "log")}]
        not_kept = previous.get("not_kept", [])  # runs whose model was not kept, added by hand with why
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "held_out").mkdir(parents=True)
    names = []
    for i, x in enumerate(test_audio):
        name = f"{i:03d}.flac"
        sf.write(OUT / "held_out" / name, x, RATE, subtype="PCM_16")
        names.append(name)
    # PyTorch's transcripts of exactly what was written (the 16-bit files)
    written = [sf.read(OUT / "held_out" / n, dtype="float32")[0] for n in names]
    torch_texts = transcribe(model, written)
    held_out_wer = word_error_rate(test_texts, torch_texts)
    total = sum(len(t.split()) for t in test_texts)
    held_out = [{"file": n, "text": t, "pytorch": h, **{k: j[k] for k in ("voice", "speed", "pitch")}}
                for n, t, h, j in zip(names, test_texts, torch_texts, test_jobs)]
    (OUT / "held_out.json").write_text(json.dumps(held_out, indent=1))
    manifest = {
        "command": f"python golden/train_tiny.py --minutes {args.minutes:g} --train {args.train} "
                   f"--test {args.test} --seed {args.seed} --lr {args.lr:g}"
                   + (f" --init {args.init}" if args.init else "") + (" --speed-perturb" if args.speed_perturb else "")
                   + (f" --paused {args.paused} --paused-seconds {args.paused_seconds[0]:g} {args.paused_seconds[1]:g}"
                      f" --validate {args.validate}" if args.paused else "")
                   + (f" --eval-every {args.eval_every}" if args.eval_every != 250 else "")
                   + (f" --warmup {args.warmup}" if args.warmup else "") + (" --decay" if args.decay else ""),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__,
                     "espeak-ng": subprocess.run(["espeak-ng", "--version"], capture_output=True,
                                                 text=True).stdout.strip()},
        "train_variants": TRAIN_VARIANTS, "test_variants": TEST_VARIANTS, "accents": ACCENTS,
        "held_out_wer_pytorch": held_out_wer, "held_out_words": total, "log": log, "earlier_runs": earlier,
        "not_kept": not_kept,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"held-out WER (PyTorch, 16-bit files): {100 * held_out_wer:.2f}% over {total} words", flush=True)
    bundle_examples(held_out)
    bundle(model)


def bundle(model) -> None:
    """The model as the Hugging Face folder transformers saves, converted into the bundled file."""
    BUNDLED.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        (Path(folder) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
        (Path(folder) / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps({"word_delimiter_token": "|",
                                                                        "pad_token": "<pad>"}))
        subprocess.run([sys.executable, "-m", "convert", folder, str(BUNDLED)], check=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    main()
