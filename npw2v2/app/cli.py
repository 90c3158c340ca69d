"""The npw2v2 command line: parsing and printing only; the work is done by the library."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.backend import DeviceError
from ..io.audio import AudioError, AudioWarning
from ..io.outputs import cause, file_error, folder_problem, output_problem, with_contents, write_atomically
from ..io.weights import CheckpointError, speaker_threshold
from . import pipeline, speaker
from .distributed import RayUnavailable
from .processes import WorkerDied
from .journal import Journal, merge_shards
from ..io import hub
from .model import BUILT_IN, is_built_in, load_model
from .writers import (ALIGNMENT_FORMATS, output_paths, record, render, render_alignment, render_classification,
                      write_features)

# What a folder argument contributes: files libsndfile reads, by their usual suffixes.
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd",
                  ".caf", ".w64", ".rf64", ".wv", ".voc", ".sd2", ".nist", ".sph"}
FORMATS = {"text": "txt", "tsv": "tsv", "json": "json", "srt": "srt"}
BUNDLED = Path(__file__).resolve().parents[1] / "bundled"
DEFAULT_MODEL = BUNDLED / "digits.safetensors"  # the bundled model: spoken digits, synthetic voices
BUNDLED_LM = BUNDLED / "digits.arpa"  # its language model: a word 3-gram of digit strings
OWN_LM = ""  # --lm without a path: the model's own language model
EXAMPLES = BUNDLED / "examples"
DEVICES = ("cpu", "cuda")
DEVICE_HELP = "cpu (NumPy, the default) or cuda (CuPy on a GPU: pip install 'npw2v2[cupy]')"


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see."""


# ---------------------------------------------------------------------------
# Helpers shared by the sub-commands


def _warn_on_stderr(message, category, filename, lineno, file=None, line=None):
    print(f"npw2v2: warning: {message}", file=sys.stderr)


def expand(paths: list[str]) -> list[str]:
    """Files as given, and the audio files inside folders (recursively, sorted; regular files only)."""
    if any(p == "" for p in paths):
        raise UsageError("an input is an empty path")
    files = []
    for p in map(Path, paths):
        if os.path.isdir(p):  # False for any path the system cannot look at: that file's own error, later
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(str(p))
    return files


class Progress:
    """One line of progress on stderr, rewritten in place: ``progress(done, total, detail=None)``."""

    def __init__(self, what: str):
        self.what, self.start, self.open = what, time.perf_counter(), False

    def __call__(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        count = f"{done}/{total}" if total else f"{done}"
        line = f"npw2v2: {count} {self.what}, {time.perf_counter() - self.start:.0f} s" + (f", {detail}" if detail else "")
        print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
        self.open = True
        if done == total and not detail:
            self.close()

    def close(self) -> None:
        """End the line, so that what follows starts on a line of its own."""
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False


def progress_printer(args, what: str = "files") -> Progress | None:
    """Progress on stderr for long work, only on a terminal, and not with --quiet."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    return Progress(what)


def in_input_order(pairs):
    """Results of (index, result) pairs in index order, each as soon as every earlier one has come."""
    waiting, next_index = {}, 0
    for i, result in pairs:
        waiting[i] = result
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1


def check_output(path: Path, inputs, option: str) -> None:
    """Refuse an output path before any work: an input, a folder, no writable parent, a name too long."""
    problem = output_problem(path, inputs)
    if problem:
        raise UsageError(f"{option} {path}: {problem}")


# ---------------------------------------------------------------------------
# Engines: this process, or a Ray cluster


def check_engine(args) -> None:
    if args.engine != "ray" and (args.address or args.workers):
        raise UsageError("--address and --workers go with --engine ray")
    if args.engine == "ray" and args.device != "cpu":
        raise UsageError("--engine ray runs the model on CPUs: leave out --device")
    if args.engine == "ray" and getattr(args, "language", None):
        raise UsageError("--engine ray loads the model's default language: --language is for the local engine")
    if getattr(args, "processes", 1) > 1 and (args.engine == "ray" or args.device != "cpu" or args.language):
        raise UsageError("--processes runs the local engine's worker processes on this machine's CPUs, with the "
                         "model's default language: leave out --engine ray, --device and --language")
    if args.engine == "ray":
        from .distributed import check_address, import_ray

        check_address(args.address)  # now, before any output is written
        import_ray()


def finished_batches(args, batches, total: int):
    """The ray engine's (or --processes') finished batches as lists of (index, result), reported as the local
    path reports."""
    report, done = progress_printer(args), 0
    for batch in batches:
        for message in batch.warnings:  # said in a Ray task; printed here, as main prints the local path's
            warnings.warn(message, AudioWarning)
        done += len(batch.results)
        if report:
            report(done, total)
        yield batch.results


def model_identity(name: str) -> str:
    """The model as a resumed run must find it again: a path made absolute, or a built-in name."""
    return str(Path(name).resolve()) if Path(name).exists() else name


def open_journal(folder: Path, settings: dict, files: list[str]):
    """The ray engine's record in FOLDER, and which of ``files`` it says are done (path -> output name)."""
    journal = Journal(folder, settings)
    done = journal.done()
    finished = sum(f in done for f in files)
    if finished:
        print(f"npw2v2: resuming: {finished} of {len(files)} files are already done in {folder}", file=sys.stderr)
    return journal, done


# ---------------------------------------------------------------------------
# transcribe


def transcriptions(args, files: list[str], timestamps: bool):
    """(index into files, Transcription) pairs from the chosen engine, as they finish."""
    if args.engine == "ray":
        from . import distributed

        batches = distributed.transcribe(args.model, files, args.batch_size, timestamps, args.chunk_seconds,
                                         args.workers, args.address, beam=beam_settings(args))
        return (pair for results in finished_batches(args, batches, len(files)) for pair in results)
    if args.processes > 1:
        from . import processes

        batches = processes.transcribe(args.model, files, args.processes, args.batch_size, timestamps,
                                       args.chunk_seconds, beam=beam_settings(args))
        return (pair for results in finished_batches(args, batches, len(files)) for pair in results)
    model = load_ctc_model(args)
    return pipeline.transcribe_each(model, files, args.batch_size, timestamps, args.chunk_seconds,
                                    progress=progress_printer(args), errors="keep", decoder=beam_decoder(args, model))


# The beam search's options: transcribe's names for npw2v2.app.beam's settings.
BEAM_OPTIONS = {"lm": "lm", "alpha": "alpha", "beta": "beta", "beam_width": "beam_width", "hotwords": "hotwords",
                "hotword_weight": "hotword_weight"}


def beam_settings(args) -> dict | None:
    """The beam search asked for (Wav2Vec2.beam_decoder's arguments), or None for greedy decoding."""
    settings = {name: getattr(args, option) for option, name in BEAM_OPTIONS.items() if getattr(args, option) is not None}
    if not settings:
        return None
    if args.lm is None and ({"alpha", "beta"} & set(settings)):
        raise UsageError("--alpha and --beta weigh a language model: give --lm")
    if args.hotwords is None and args.hotword_weight is not None:
        raise UsageError("--hotword-weight weighs hotwords: give --hotwords")
    if args.lm == OWN_LM:
        args.lm = own_lm(args.model)
    if args.lm is not None:
        settings["lm"] = str(hub.locate_lm(args.lm))  # a hub id: its language_model/ folder in the cache
    return settings


def own_lm(model: str) -> str:
    """The language model a model comes with (npw2v2.io.hub.own_lm); a UsageError if it has none."""
    found = None if is_built_in(model) else hub.own_lm(hub.locate(model))
    if found is None:
        raise UsageError(f"{model} comes with no language model (npw2v2-convert --lm gives it one): "
                         "name one with --lm PATH")
    return found


def beam_decoder(args, model):
    """The beam search decoder of --lm / --hotwords and their settings, or None; reading the LM is
    reported on a terminal (a large ARPA file takes a while)."""
    settings = beam_settings(args)
    if settings is None:
        return None
    report = progress_printer(args) is not None and args.lm is not None
    if report:
        print(f"npw2v2: reading the language model {args.lm}", file=sys.stderr)
    start = time.perf_counter()
    decoder = model.beam_decoder(**settings)
    if report:
        print(f"npw2v2: {decoder.lm.order}-gram model, {len(decoder.lm.known):,} known words, read in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return decoder


def load_ctc_model(args):
    """The model of transcribe and align, in the --language asked for."""
    model, _ = load_model(args.model, device=args.device)
    if args.language:
        if model.config.adapter_attn_dim is None:
            raise UsageError(f"{args.model}: --language needs an MMS model with language adapters (adapter_attn_dim)")
        model.set_language(args.language)
    return model


def run_transcribe(args) -> int:
    if args.examples:
        args.inputs = [*args.inputs, str(EXAMPLES)]
    if not args.inputs:
        raise UsageError("give audio files or folders to transcribe (or --examples)")
    files = expand(args.inputs)
    if not files:
        raise UsageError("no audio files found in " + ", ".join(args.inputs))
    if args.format == "srt" and args.output is None and len(files) > 1:
        raise UsageError("--format srt writes one subtitle file per input: give --output DIR")
    if args.timestamps and args.format in ("text", "tsv"):
        raise UsageError(f"--timestamps has no place in --format {args.format}: use json (or srt, which always "
                         "has them)")
    check_engine(args)
    timestamps = args.timestamps or args.format == "srt"
    if args.output is None:
        return print_transcripts(args, files, timestamps)
    return write_transcripts(args, files, timestamps)


def print_transcripts(args, files: list[str], timestamps: bool) -> int:
    """Every transcript on stdout in the order of the inputs, each as soon as those before it are done;
    errors on stderr in their place."""
    failed = 0
    for r in in_input_order(transcriptions(args, files, timestamps)):
        if r.error is not None:
            print(f"npw2v2: error: {r.error}", file=sys.stderr)
            failed += 1
        else:
            sys.stdout.write(render(r, args.format, timestamps))
            sys.stdout.flush()
    return 1 if failed else 0


def write_transcripts(args, files: list[str], timestamps: bool) -> int:
    """A file per input in --output, each written whole as it finishes; errors on stderr.

    Each output path is checked before any work (an input whose output cannot be written is
    that input's error), and a failed write is that input's error too: the run goes on. With
    --engine ray the folder also holds the run's Journal, and a rerun skips the files done.
    """
    problem = folder_problem(args.output)
    if problem:
        raise UsageError(f"--output {args.output}: {problem}")
    args.output.mkdir(parents=True, exist_ok=True)
    paths = output_paths(files, args.output, FORMATS[args.format])
    unwritable = {i: f"{files[i]}: cannot write {paths[i]}: {p}" for i, p in
                  ((i, output_problem(path, files)) for i, path in enumerate(paths)) if p}
    journal, todo = None, [i for i in range(len(files)) if i not in unwritable]
    if args.engine == "ray":
        settings = {"command": "transcribe", "model": model_identity(args.model), "format": args.format,
                    "timestamps": timestamps, "chunk_seconds": args.chunk_seconds, "beam": beam_settings(args)}
        journal, done = open_journal(args.output, settings, files)
        todo = [i for i in todo if done.get(files[i]) != paths[i].name]
    for message in unwritable.values():
        print(f"npw2v2: error: {message}", file=sys.stderr)
    failed, written = len(unwritable), 0
    try:
        for k, r in transcriptions(args, [files[i] for i in todo], timestamps):
            i = todo[k]
            error = r.error or _write_transcript(paths[i], render(r, args.format, timestamps), files[i])
            if error:
                print(f"npw2v2: error: {error}", file=sys.stderr)
                failed += 1
            else:
                written += 1
            if journal:
                journal.record({"path": files[i], "error": error} if error else
                               {**record(r, timestamps), "output": paths[i].name})
    finally:
        print(f"npw2v2: wrote {written} files to {args.output}", file=sys.stderr)
    return 1 if failed else 0


def _write_transcript(path: Path, text: str, source: str) -> str | None:
    """Write one output file whole; on failure, the input's error message."""
    try:
        write_atomically(path, text)
    except OSError as e:
        return f"{source}: cannot write {path}: {cause(e)}"
    return None


# ---------------------------------------------------------------------------
# align


def run_align(args) -> int:
    """Each audio file aligned to its transcript, printed or written a file per input into --output.

    A pair that cannot be aligned (its text unreadable or unspellable, its audio unreadable or too
    short for the text) is reported on stderr and skipped; the exit status is then 1.
    """
    pairs = alignment_pairs(args)
    if args.format in ("srt", "textgrid") and args.output is None and len(pairs) > 1:
        raise UsageError(f"--format {args.format} writes one file per input: give --output DIR")
    if args.chars and args.format == "srt":
        raise UsageError("--chars has no place in --format srt: use json, textgrid or audacity")
    inputs = [audio for audio, _ in pairs]
    paths = alignment_outputs(args, inputs)
    if args.segment is not None:
        problem = folder_problem(args.segment, inputs)
        if problem:
            raise UsageError(f"--segment {args.segment}: {problem}")
        args.segment.mkdir(parents=True, exist_ok=True)
    texts, errors = {}, {}
    for i, (_, text) in enumerate(pairs):
        try:
            texts[i] = read_transcript(text)
        except (UsageError, OSError) as e:
            errors[i] = str(e) if isinstance(e, UsageError) else file_error(e)
    model = load_ctc_model(args)
    todo = sorted(texts)
    results = dict(zip(todo, model.align([inputs[i] for i in todo], [texts[i] for i in todo],
                                         batch_size=args.batch_size, chunk_seconds=args.chunk_seconds,
                                         star=args.star, errors="keep", progress=progress_printer(args))))
    written = 0
    for i in range(len(pairs)):
        error = errors.get(i) or results[i].error
        if error is None:
            text = render_alignment(results[i], args.format, args.chars)
            if paths:
                error = _write_transcript(paths[i], text, inputs[i])
            else:
                sys.stdout.write(text)
            if error is None and args.segment is not None:
                error = write_segments(args.segment, model, inputs[i], texts[i], results[i])
            written += error is None
        if error:
            errors[i] = error
            print(f"npw2v2: error: {error}", file=sys.stderr)
    if paths:
        print(f"npw2v2: wrote {written} files to {args.output}", file=sys.stderr)
    return 1 if errors else 0


SEGMENT_PAD = 0.2  # seconds of context each side of a --segment cut, where the gap to the next line allows


def write_segments(folder: Path, model, source: str, text: str, result) -> str | None:
    """Each transcript line's stretch of the audio, at the file's own rate (mixed to mono), into FOLDER
    as STEM-NNN.wav with its words in STEM-NNN.txt; on failure, the input's error message."""
    from ..io import audio

    from .align import line_spans

    rate = audio.info(source).rate
    for n, line in enumerate(line_spans(model, result, text, pad=SEGMENT_PAD), 1):
        first, last = math.floor(line.start * rate), math.ceil(line.end * rate)
        x, _ = audio.read(source, first, last - first)
        stem = folder / f"{Path(source).stem}-{n:03d}"
        try:
            audio.write_wav(stem.with_suffix(".wav"), x, rate)
            write_atomically(stem.with_suffix(".txt"), line.text + "\n")
        except OSError as e:
            return f"{source}: cannot write {stem}.wav: {cause(e)}"
    return None


def alignment_outputs(args, inputs: list[str]) -> list[Path] | None:
    """The file each input's alignment goes to in --output (checked before any work), or None for stdout."""
    if args.output is None:
        return None
    problem = folder_problem(args.output, inputs)
    if problem:
        raise UsageError(f"--output {args.output}: {problem}")
    args.output.mkdir(parents=True, exist_ok=True)
    paths = output_paths(inputs, args.output, ALIGNMENT_FORMATS[args.format])
    for path in paths:
        check_output(path, inputs, "--output")
    return paths


def alignment_pairs(args) -> list[tuple[str, str]]:
    """(audio, transcript file) pairs: AUDIO TEXT_FILE, or each line "AUDIO<TAB>TEXT_FILE" of --manifest
    (relative paths from the manifest's folder)."""
    if (args.manifest is None) == (args.audio is None):
        raise UsageError("give AUDIO TEXT_FILE, or --manifest FILE of AUDIO<TAB>TEXT_FILE lines (not both)")
    if args.manifest is None:
        if args.text is None:
            raise UsageError(f"{args.audio}: give its transcript's file after it (AUDIO TEXT_FILE)")
        return [(args.audio, args.text)]
    pairs, folder = [], args.manifest.parent
    for number, line in enumerate(read_transcript(str(args.manifest)).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise UsageError(f"{args.manifest}, line {number}: want AUDIO<TAB>TEXT_FILE, got {line!r}")
        pairs.append(tuple(str(folder / f.strip()) for f in fields))
    if not pairs:
        raise UsageError(f"{args.manifest}: no AUDIO<TAB>TEXT_FILE lines")
    return pairs


def read_transcript(path: str) -> str:
    """A text file's contents (UTF-8); a file that is not text is a usage error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


# ---------------------------------------------------------------------------
# embed


def parse_layers(text: str):
    if text == "last":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes 'last' or comma-separated numbers, got {text!r}") from None


def run_embed(args) -> int:
    files = list(dict.fromkeys(expand(args.inputs)))  # one tensor per path
    if not files:
        raise UsageError("no audio files found in " + ", ".join(args.inputs))
    check_engine(args)
    suffix = args.out.suffix.lower()
    shards = args.engine == "ray" and suffix == ""  # -o FOLDER: the shards are the output
    if suffix not in (".safetensors", ".npy") and not shards:
        raise UsageError(f"-o must end in .safetensors or .npy (or, with --engine ray, name a folder), got {args.out}")
    if suffix == ".npy" and len(files) != 1:
        raise UsageError("a .npy file holds one input's features; use .safetensors for several files")
    inputs = with_contents([args.model]) + files
    problem = folder_problem(args.out, inputs) if shards else output_problem(args.out, inputs)
    if problem:
        raise UsageError(f"-o {args.out}: {problem}")
    model, name = load_model(args.model, device=args.device)
    try:
        pipeline.check_final_proj(model, args.final_proj)
    except ValueError as e:
        raise UsageError(f"--final-proj: {args.model}: {e}") from None
    layers = "last" if args.layers is None else ",".join(map(str, args.layers))
    if args.final_proj:
        layers += " then final_proj"
    stride = model.config.output_frame_stride if args.layers is None else model.config.frame_stride
    metadata = {"model": name, "layers": layers, "shape": "[layers, T, P]" if args.final_proj else "[layers, T, D]",
                "frame_seconds": str(stride / model.sampling_rate)}
    if args.engine == "ray":
        return embed_with_ray(args, files, metadata, shards)
    return embed_locally(args, model, files, metadata)


def embed_locally(args, model, files: list[str], metadata: dict) -> int:
    """Features of every file into -o, written once at the end, or with what is done when interrupted."""
    good, failed = {}, 0
    try:
        for i, result in pipeline.embed_each(model, files, args.layers, args.batch_size, errors="keep",
                                             progress=progress_printer(args), final_proj=args.final_proj):
            if isinstance(result, AudioError):
                print(f"npw2v2: error: {result}", file=sys.stderr)
                failed += 1
            else:
                good[files[i]] = result
    except KeyboardInterrupt:
        if good:
            write_features(args.out, dict(sorted(good.items(), key=lambda kv: files.index(kv[0]))), metadata)
            print(f"npw2v2: interrupted: wrote the features of the {len(good)} of {len(files)} files done to "
                  f"{args.out}", file=sys.stderr)
        raise
    if good:
        write_features(args.out, {f: good[f] for f in files if f in good}, metadata)
        print(f"npw2v2: wrote the features of {len(good)} files to {args.out}", file=sys.stderr)
    return 1 if failed else 0


def embed_with_ray(args, files: list[str], metadata: dict, shards: bool) -> int:
    """Features from Ray workers: a .safetensors shard per finished batch, so a rerun skips the files done.

    The shards go into -o when it names a folder, and stay there; else into OUT.parts/,
    which is merged into -o as the local engine writes it, then removed.
    """
    from safetensors.numpy import save_file

    from . import distributed

    folder = args.out if shards else args.out.with_name(args.out.name + ".parts")
    journal, done = open_journal(folder, {"command": "embed", "model": model_identity(args.model),
                                          "layers": metadata["layers"]}, files)
    todo = [f for f in files if f not in done]
    numbers = (int(p.stem.split("-")[1]) for p in folder.glob("part-*.safetensors"))
    next_shard = max(numbers, default=-1) + 1
    failed = 0
    batches = distributed.embed(args.model, todo, args.layers, args.batch_size, args.workers, args.address,
                                final_proj=args.final_proj)
    for results in finished_batches(args, batches, len(todo)):
        good = {todo[k]: r for k, r in results if not isinstance(r, AudioError)}
        for k, r in results:
            if isinstance(r, AudioError):
                print(f"npw2v2: error: {r}", file=sys.stderr)
                journal.record({"path": todo[k], "error": str(r)})
                failed += 1
        if good:
            shard = folder / f"part-{next_shard:05d}.safetensors"
            write_atomically(shard, write=lambda tmp, good=good: save_file(good, str(tmp), metadata=metadata))
            next_shard += 1
            for path in good:
                journal.record({"path": path, "output": shard.name})
    if not shards:
        merged = merge_shards(folder, journal.done(), files, args.out, metadata)
        if merged:
            print(f"npw2v2: wrote the features of {merged} files to {args.out}", file=sys.stderr)
    else:
        print(f"npw2v2: features of {len(todo) - failed} files written to {folder}, a shard per batch "
              f"({Journal.RESULTS} says which holds each file)", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# classify


def run_classify(args) -> int:
    files = expand(args.inputs)
    if not files:
        raise UsageError("no audio files found in " + ", ".join(args.inputs))
    model, _ = load_model(args.model, device=args.device)
    failed = 0
    pairs = pipeline.classify_each(model, files, args.batch_size, args.top_k, errors="keep",
                                   progress=progress_printer(args))
    for r in in_input_order(pairs):
        if r.error is not None:
            print(f"npw2v2: error: {r.error}", file=sys.stderr)
            failed += 1
        else:
            sys.stdout.write(render_classification(r, args.format))
            sys.stdout.flush()
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# similarity


def run_similarity(args) -> int:
    """The first file against each of the others: a line per pair, its cosine score and, with a threshold, a verdict."""
    if len(args.inputs) < 2:
        raise UsageError("similarity compares two files or more: the first against each of the others")
    threshold, source = None, ""
    if args.threshold is not None:
        threshold, source = speaker_threshold(args.threshold, "--threshold"), "--threshold"
    model, _ = load_model(args.model, device=args.device)
    if threshold is None:
        threshold, source = speaker.known_threshold(model, args.model)
    embeddings = pipeline.embed_speaker(model, args.inputs, args.batch_size, progress=progress_printer(args))
    if threshold is None:
        print("npw2v2: no threshold known for this model: the scores only (--threshold T gives a verdict)",
              file=sys.stderr)
    else:
        print(f"npw2v2: same speaker at a score of {threshold:g} or more (the threshold of {source})",
              file=sys.stderr)
    for path, embedding in zip(args.inputs[1:], embeddings[1:]):
        score = speaker.similarity(embeddings[0], embedding)
        verdict = "" if threshold is None else "\t" + speaker.verdict(score, threshold)
        print(f"{args.inputs[0]}\t{path}\t{score:.4f}{verdict}")
    return 0


# ---------------------------------------------------------------------------
# explain and compare


def explain_inputs(args, model) -> tuple[np.ndarray, np.ndarray]:
    """The padded batch to trace: audio files, or noise of the asked lengths. ([B, S], [B, S] mask)."""
    from ..io import audio

    rate = model.sampling_rate
    if args.inputs:
        check_traceable([audio.info(f).samples_at(rate) for f in args.inputs], rate)
        arrays = [audio.load(f, rate, model.config.receptive_field) for f in args.inputs]
    else:
        lengths = args.samples or [round(s * rate) for s in (args.seconds or [1.3, 2.7])]
        check_traceable(lengths, rate)
        rng = np.random.RandomState(args.seed)
        arrays = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    x, mask = audio.pad(arrays)
    return (audio.normalize(x, mask) if model.do_normalize and args.inputs else x), mask


# explain keeps every stage's array of the whole padded batch (the first conv layer's alone
# holds a C-vector per 5 samples): it is for looking inside, not for long recordings.
EXPLAIN_SECONDS = 120


def check_traceable(lengths: list[int], rate: int) -> None:
    """Refuse a batch too large to trace: more than EXPLAIN_SECONDS of padded audio."""
    if len(lengths) * max(lengths) > EXPLAIN_SECONDS * rate:
        raise UsageError(f"explain keeps every stage of the padded batch in memory: at most {EXPLAIN_SECONDS} s of "
                         f"padded audio, asked for {len(lengths)} x {max(lengths) / rate:.1f} s")


def run_explain(args) -> int:
    from .explain import Trace, describe, differences_from_alone

    check_explain_outputs(args)
    model, name = load_model(args.model, args.seed, device=args.device)
    if model.config.model_type == "wav2vec2-bert":  # its trace starts from filter banks, which describe cannot read yet
        raise UsageError(f"explain does not trace w2v-BERT models yet ({name}); its stages are checked in "
                         "tests/test_family_golden.py, and model(features, mask, trace=...) traces them")
    layer, head = attention_choice(args, model.config)
    x, mask = explain_inputs(args, model)
    transcripts = spelled_texts(args, model, len(x))
    trace = Trace()
    model(model.xp.asarray(x), attention_mask=mask, norm_over_padding=args.norm_over_padding,
          trace=with_progress(trace, progress_printer(args, "stages")), reference=args.reference)
    batched = [trace]
    if args.html:  # its promise figure sets the batch run the other way beside this one, where padding can leak
        from .explain_page import explain_page, other_way, promise_series

        batched += other_way(model, x, mask, args.reference, args.norm_over_padding)
    found = differences_from_alone(model, x, mask, batched, args.reference)  # each item run alone, once
    largest = max(found[0]["last_hidden_state"] + found[0].get("embeddings", []))  # an x-vector's too
    if args.json:
        print(json.dumps({"model": name, "path": "reference" if args.reference else "fast",
                          "config": model.config.to_dict(), "stages": trace.as_data(),
                          "largest_difference_from_alone": largest}))
    else:
        path = "the reference path" if args.reference else "the fast path"
        print(f"npw2v2 explain: {name}, {path}\n  {model!r}\n")
        print(describe(trace, model, model.sampling_rate))
        what = "valid frames and speaker embedding" if "embeddings" in found[0] else "valid frames"
        if args.norm_over_padding:  # transformers' numbers: no promise to state, only the gap
            print(f"\nEach input run alone against its row of the batch ({what}): largest difference "
                  f"{largest:.1e} (--norm-over-padding lets the padding in where transformers does)")
        else:
            print(f"\nEach input run alone gives the same {what}: largest difference {largest:.1e}")
    if args.save:
        from safetensors.numpy import save_file

        arrays, metadata = trace.arrays(), {"model": name, "source": "npw2v2 explain"}
        write_atomically(args.save, lambda tmp: save_file(arrays, str(tmp), metadata=metadata))
        print(f"npw2v2: wrote {len(arrays)} stages to {args.save}", file=sys.stderr)
    if args.html:
        series = promise_series(found, model, args.norm_over_padding)
        page = explain_page(trace, model, name, series, layer, head, args.reference, transcripts)
        write_atomically(args.html, page)
        print(f"npw2v2: wrote {args.html} ({len(page.encode()) / 1e6:.1f} MB)", file=sys.stderr)
    return 0


def check_explain_outputs(args) -> None:
    """--save and --html: writable, neither an input nor each other; --layer, --head, --text only with --html."""
    inputs = with_contents([args.model]) + list(args.inputs)
    if args.save:
        check_output(args.save, inputs, "--save")
    if args.html:
        check_output(args.html, inputs + ([args.save] if args.save else []), "--html")
    elif args.layer is not None or args.head is not None or args.text:
        raise UsageError("--layer, --head and --text choose what --html draws; add --html PAGE.html")


def spelled_texts(args, model, inputs: int) -> list | None:
    """--text as align.Transcripts: one per input, for a CTC model with a vocabulary to spell it."""
    if not args.text:
        return None
    if not (model.has_ctc_head and model.vocab):
        raise UsageError("--text draws a forced alignment, which needs a CTC model with a vocabulary")
    if len(args.text) != inputs:
        raise UsageError(f"--text gives {len(args.text)} transcript(s) for {inputs} input(s): one each, in order")
    from .align import tokenize

    # spelled now, so that a typo stops explain before any work
    return [tokenize(text, model.vocab, model.word_delimiter, f"--text of item {i}")
            for i, text in enumerate(args.text)]


def attention_choice(args, cfg) -> tuple[int, int]:
    """The layer and head whose attention --html draws: the last layer and head 0 unless asked."""
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    layer = layers - 1 if args.layer is None else args.layer
    head = args.head or 0
    if layer >= layers:
        raise UsageError(f"--layer {layer}: this model has {layers} layers, 0 to {layers - 1}")
    if head >= heads:
        raise UsageError(f"--head {head}: this model has {heads} heads per layer, 0 to {heads - 1}")
    return layer, head


def with_progress(trace, progress: Progress | None):
    """The trace, also telling a terminal which stage the forward pass has reached."""
    if progress is None:
        return trace

    def traced(name, value, **facts):
        trace(name, value, **facts)
        progress(len(trace.stages), detail=name)
        if name == "last_hidden_state":
            progress.close()

    return traced


def run_compare(args) -> int:
    from ..io.weights import read_safetensors
    from .explain import comparison, report

    a, b = read_safetensors(args.a)[0], read_safetensors(args.b)[0]
    text, ok = report(comparison(a, b), args.tolerance)
    print(text)
    return 0 if ok else 1


# ---------------------------------------------------------------------------
# bench


def run_bench(args) -> int:
    from . import bench

    if args.seconds and min(args.seconds) * bench.SAMPLING_RATE < bench.ARCHITECTURES[args.model].receptive_field:
        raise UsageError("--seconds: each length must be at least 0.025 s (one frame)")
    for option, wanted in (("--vs-torch", args.vs_torch), ("--vs-onnxruntime", args.vs_onnxruntime)):
        if wanted and args.device != "cpu":
            raise UsageError(f"{option} compares on the CPU: leave out --device")
    try:
        return bench.run(args)
    except ImportError as e:
        print(f"npw2v2: error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------
# The parser


def whole_number(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum]; the message names the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def finite_number(minimum: float, above: bool):
    """An argparse type: a finite number above (or at least) ``minimum``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"must be a finite number {'above' if above else 'of at least'} "
                                             f"{minimum:g}, got {text}")
        return value

    return parse


POSITIVE = whole_number(1)
SECONDS = finite_number(0.0, above=True)
WHOLE = whole_number(0)
SEED = whole_number(0, 2**32 - 1)  # what numpy.random.RandomState takes
NUMBER = finite_number(-math.inf, above=False)  # any finite number


MODEL_HELP = "a .safetensors file, a Hugging Face folder, or a hub id in the Hugging Face cache (ORG/NAME)"


def add_revision(command) -> None:
    command.add_argument("--revision", metavar="REV",
                         help="with a hub id: the branch, tag or commit in the cache (default main)")


def add_beam_options(command) -> None:
    b = command.add_argument_group(
        "beam search", "decode with a CTC prefix beam search instead of greedily (pyctcdecode's algorithm and "
                       "defaults): --lm, --hotwords or --beam-width turn it on")
    b.add_argument("--lm", metavar="PATH", nargs="?", const=OWN_LM,
                   help="a word n-gram language model: an .arpa or .arpa.gz file, a KenLM binary (needs "
                        "pip install kenlm), a Hugging Face language_model/ folder (with attrs.json and "
                        "unigrams.txt) or the repository folder holding one, or a hub id whose repository "
                        "has one (from the Hugging Face cache). --lm alone: the model's own (npw2v2-convert "
                        "--lm; the bundled model's digits LM)")
    b.add_argument("--alpha", type=NUMBER, help="the LM's weight (default: the folder's attrs.json, else 0.5)")
    b.add_argument("--beta", type=NUMBER, help="a bonus for each word (default: the folder's attrs.json, else 1.5)")
    b.add_argument("--beam-width", type=POSITIVE, help="prefixes kept from frame to frame (default 100)")
    b.add_argument("--hotwords", nargs="+", metavar="WORD",
                   help="words to favour, spelled in the vocabulary's case (each word of a phrase counts alone)")
    b.add_argument("--hotword-weight", type=NUMBER, help="the score of a hotword heard (default 10)")


def add_quiet(command) -> None:
    command.add_argument("--quiet", "-q", action="store_true",
                         help="no progress line (it is shown on a terminal only, for long work)")


def add_inputs_and_model(command) -> None:
    """The arguments embed and classify share: files or folders, the model, batch size, device."""
    command.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    command.add_argument("--model", "-m", required=True, help=MODEL_HELP)
    add_revision(command)
    command.add_argument("--batch-size", type=POSITIVE, default=8, help="inputs run together (default 8)")
    command.add_argument("--device", choices=DEVICES, default="cpu", help=DEVICE_HELP)
    add_quiet(command)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: Ray workers, on a Ray runtime started for the run "
                        "or on a cluster (pip install 'npw2v2[ray]'); with --output a rerun skips the files done")
    p.add_argument("--address", help="with --engine ray, the cluster to join: auto (the one this machine joined "
                                     "with 'ray start') or HEAD:6379; default: a Ray runtime started for the run")
    p.add_argument("--workers", type=POSITIVE,
                   help="with --engine ray, how many workers hold the model (default: one per CPU of the cluster)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npw2v2", description="wav2vec 2.0 in pure NumPy: transcribe and classify audio, extract features, "
                                   "look inside.",
        epilog="Models are .safetensors files made by npw2v2-convert, Hugging Face folders with "
               "model.safetensors, or hub ids (ORG/NAME) of models transformers or huggingface_hub downloaded. "
               "A model name is looked for as a file or folder first, then in the Hugging Face cache, then "
               "among the built-in architectures (base, large, hubert-base, data2vec-audio-base, wavlm-base-plus, conformer-large, w2v-bert). Run 'npw2v2 COMMAND --help' for a command's "
               "options.")
    parser.add_argument("--version", action="version", version=f"npw2v2 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser(
        "transcribe", help="audio files to text (CTC models)",
        description="Transcribe audio files (WAV, FLAC, OGG, MP3, ... at any rate, any channels) with a CTC "
                    "model. Folders are searched for audio files. Files longer than --chunk-seconds are "
                    "read and run in overlapping windows, so memory stays bounded. A file that cannot be "
                    "read is reported on stderr and skipped; the exit status is then 1.")
    t.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR")
    t.add_argument("--model", "-m", default=str(DEFAULT_MODEL),
                   help=MODEL_HELP + " (default: the bundled model, which knows English digits spoken by "
                                     "synthetic voices and nothing else)")
    add_revision(t)
    t.add_argument("--examples", action="store_true", help="transcribe the bundled example clips too")
    t.add_argument("--format", "-f", choices=FORMATS, default="text",
                   help="text: the text alone, a line per file; tsv: path, seconds, text; json: an object per "
                        "line (path, text, seconds, and words with --timestamps); srt: subtitles")
    t.add_argument("--timestamps", action="store_true", help="word start and end times (json)")
    t.add_argument("--output", "-o", type=Path, metavar="DIR", help="write one file per input into DIR")
    t.add_argument("--batch-size", type=POSITIVE, default=8, help="inputs run together (default 8)")
    t.add_argument("--device", choices=DEVICES, default="cpu", help=DEVICE_HELP)
    add_quiet(t)
    t.add_argument("--language", "-l", metavar="LANG",
                   help="MMS models: the language whose adapters, CTC head and vocabulary to use (e.g. fra); "
                        "from the file, or adapter.LANG.safetensors beside it")
    t.add_argument("--chunk-seconds", type=SECONDS, default=20.0,
                   help="longer files run in windows of this length with a sixth of it as context on "
                        "each side (default 20)")
    add_beam_options(t)
    add_engine_options(t)
    t.add_argument("--processes", type=POSITIVE, default=1, metavar="N",
                   help="local engine: N worker processes of one BLAS thread each, the batches handed out as "
                        "they free up; one per core gives the most files an hour (default 1: this process, "
                        "its BLAS on every core)")
    t.set_defaults(run=run_transcribe)

    a = commands.add_parser(
        "align", help="audio and its transcript to word and character times (CTC forced alignment)",
        description="Find when each word (and character) of a known transcript is spoken: the most likely "
                    "frame-by-frame path of a CTC model through exactly that text. Text is folded to the "
                    "vocabulary's case and punctuation it lacks is dropped; other characters it cannot spell "
                    "are refused by name. Files longer than --chunk-seconds run in windows with context, "
                    "and the alignment keeps bounded memory, so hours of audio fit.")
    a.add_argument("audio", nargs="?", metavar="AUDIO")
    a.add_argument("text", nargs="?", metavar="TEXT_FILE", help="the transcript, UTF-8 text")
    a.add_argument("--manifest", type=Path, metavar="FILE",
                   help="many pairs: a line 'AUDIO<TAB>TEXT_FILE' each, paths relative to FILE's folder")
    a.add_argument("--model", "-m", default=str(DEFAULT_MODEL),
                   help=MODEL_HELP + " (default: the bundled model, English digits only)")
    add_revision(a)
    a.add_argument("--format", "-f", choices=ALIGNMENT_FORMATS, default="json",
                   help="json: an object per input (words with start, end, score); srt: subtitles; "
                        "textgrid: Praat; audacity: a label track")
    a.add_argument("--chars", action="store_true", help="characters too (json, textgrid, audacity)")
    a.add_argument("--star", action="store_true",
                   help="the transcript may cover part of the audio: a <star> token takes what is before and "
                        "after it (as MMS's alignment recipe)")
    a.add_argument("--output", "-o", type=Path, metavar="DIR", help="write one file per input into DIR")
    a.add_argument("--segment", type=Path, metavar="DIR",
                   help="also cut each input into a WAV file per transcript line (its words, and up to 0.2 s "
                        "around them short of the next line) with the line's words beside it: DIR/STEM-001.wav, "
                        "DIR/STEM-001.txt, ...")
    a.add_argument("--batch-size", type=POSITIVE, default=8, help="inputs run together (default 8)")
    a.add_argument("--device", choices=DEVICES, default="cpu", help=DEVICE_HELP)
    a.add_argument("--language", "-l", metavar="LANG", help="MMS models: the language to use (e.g. fra)")
    add_quiet(a)
    a.add_argument("--chunk-seconds", type=SECONDS, default=20.0,
                   help="longer files run in windows of this length with a sixth of it as context on "
                        "each side (default 20)")
    a.set_defaults(run=run_align)

    e = commands.add_parser(
        "embed", help="audio files to hidden states",
        description="Write the hidden states of audio files: for each file an array [layers, T, D], one "
                    "vector per 20 ms frame. Layer 0 is the first transformer layer's input, the last "
                    "layer number its output.")
    add_inputs_and_model(e)
    e.add_argument("--layers", type=parse_layers, default=None,
                   help="comma-separated layer numbers, e.g. 6,12 (default: last, the encoder's output)")
    e.add_argument("--final-proj", action="store_true",
                   help="pass each layer through the model's final_proj (HuBERT / ContentVec): [layers, T, P]; "
                        "--layers 9 --final-proj gives RVC v1's features")
    e.add_argument("--out", "-o", type=Path, required=True,
                   help="OUT.safetensors (one tensor per file, named by its path) or OUT.npy (one file); with "
                        "--engine ray also a FOLDER, to keep a .safetensors shard per batch there")
    add_engine_options(e)
    e.set_defaults(run=run_embed)

    k = commands.add_parser(
        "classify", help="audio files to labels (sequence classifiers)",
        description="Classify audio files with a sequence classification model (keyword spotting, emotion, "
                    "speaker, language ...): a line per file with its most likely labels and their "
                    "probabilities. Files are read whole and batched by length; each file's score "
                    "comes from its own frames only, so batching changes nothing.")
    add_inputs_and_model(k)
    k.add_argument("--top-k", "-k", type=POSITIVE, default=1, help="labels per file, most likely first (default 1)")
    k.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="text: path, then 'label probability' pairs, tab-separated; json: an object per line")
    k.set_defaults(run=run_classify)

    v = commands.add_parser(
        "similarity", help="are two recordings of the same speaker? (x-vector models)",
        description="Compare speakers with a speaker verification model (an x-vector head, *ForXVector, as "
                    "unispeech-sat-base-plus-sv has): the cosine similarity of the first file's speaker "
                    "embedding with each other file's, normalised first as the model cards compute it. A "
                    "line per pair: FIRST, OTHER, the score (near 1: the same voice) and, when a threshold "
                    "is known, 'same speaker' (score >= threshold) or 'different speakers'. The threshold "
                    "is --threshold, else the model file's speaker_threshold metadata (npw2v2-convert "
                    "--speaker-threshold), else the model card's for known models (wavlm-base-plus-sv: "
                    "0.86). Files are read whole, at least 0.325 s with the standard x-vector head.")
    v.add_argument("inputs", nargs="+", metavar="FILE", help="audio files: the first is compared with each other")
    v.add_argument("--model", "-m", required=True, help=MODEL_HELP + " of a speaker verification model")
    add_revision(v)
    v.add_argument("--threshold", "-t", type=finite_number(-1.0, above=False), metavar="T",
                   help="the score from which two files are the same speaker (a cosine, up to 1)")
    v.add_argument("--batch-size", type=POSITIVE, default=8, help="files run together (default 8)")
    v.add_argument("--device", choices=DEVICES, default="cpu", help=DEVICE_HELP)
    add_quiet(v)
    v.set_defaults(run=run_similarity)

    x = commands.add_parser(
        "explain", help="trace a forward pass stage by stage: shapes, frame arithmetic, masks",
        description="Run one padded batch through a model and print every stage: its shape, how each conv "
                    "layer turns samples into frames, each input's valid frames, and where the mask acts. "
                    "Inputs are audio files, or noise of the lengths given by --seconds or --samples "
                    "(default 1.3 and 2.7 s). The model defaults to the wav2vec2-base architecture with "
                    "random weights.")
    x.add_argument("inputs", nargs="*", metavar="FILE", help="audio files (instead of --seconds)")
    x.add_argument("--model", "-m", default="base",
                   help=MODEL_HELP + ", or a built-in architecture (base, large, hubert-base, data2vec-audio-base, wavlm-base-plus, conformer-large, w2v-bert) with "
                        "random weights (default: base)")
    add_revision(x)
    x.add_argument("--seconds", type=SECONDS, nargs="+", help="input lengths in seconds")
    x.add_argument("--samples", type=POSITIVE, nargs="+", help="input lengths in samples")
    x.add_argument("--norm-over-padding", action="store_true",
                   help="let the padding in where transformers does: group norm, the adapter, an x-vector head's "
                        "frame count, ... (to compare with its activations)")
    x.add_argument("--reference", action="store_true",
                   help="take the reference path: every operation in its plainest form (npw2v2.core.layers)")
    x.add_argument("--json", action="store_true", help="print the trace as JSON")
    x.add_argument("--save", type=Path, metavar="ACTS.safetensors",
                   help="write every stage's activations (with the inputs and masks)")
    x.add_argument("--html", type=Path, metavar="PAGE.html",
                   help="also write one self-contained page of figures drawn from the trace (opens offline)")
    x.add_argument("--layer", type=WHOLE, help="the transformer layer whose attention --html draws (default: the last)")
    x.add_argument("--head", type=WHOLE, help="the attention head --html draws (default: 0)")
    x.add_argument("--text", nargs="+", metavar="TEXT",
                   help="each input's transcript, in order: --html draws its forced alignment (CTC models)")
    x.add_argument("--seed", type=SEED, default=0, help="seed of the random weights and inputs")
    x.add_argument("--device", choices=DEVICES, default="cpu", help=DEVICE_HELP)
    add_quiet(x)
    x.set_defaults(run=run_explain)

    c = commands.add_parser(
        "compare", help="stage-by-stage differences between two activation files",
        description="Compare two .safetensors files of stage activations (from 'npw2v2 explain --save', "
                    "golden/ recordings, or your own port using the same stage names) on valid frames, and "
                    "name the first stage whose relative difference max|a-b| / max(1, max|b|) exceeds the "
                    "tolerance. B is the reference. Exit status 1 when any stage fails: over the tolerance, "
                    "NaN or inf in one file only, shapes or frame masks that differ, B's stages missing from A.")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--tolerance", type=finite_number(0.0, above=False), default=1e-4, help="relative tolerance (default 1e-4)")
    c.set_defaults(run=run_compare)

    b = commands.add_parser(
        "bench", help="time the forward pass (and PyTorch's or ONNX Runtime's, with --vs-torch, --vs-onnxruntime)",
        description="Time the forward pass of the base or large architecture with random weights: median, "
                    "min and max seconds, real-time factor, effective GFLOP/s, the share of this machine's "
                    "float32 matmul peak, and the peak memory growth of a forward pass. Without --seconds "
                    "it runs the standard cases: 10 s x 1; 10, 8, 6 and 4 s as one padded batch with a "
                    "mask; 60 s x 1. Run it on an idle machine.")
    b.add_argument("--model", "-m", choices=tuple(BUILT_IN), default="base", help="architecture (default base)")
    b.add_argument("--seconds", type=SECONDS, nargs="+",
                   help="one length (with --batch copies), or several: one padded batch with a mask")
    b.add_argument("--batch", type=POSITIVE, default=1, help="copies of a single --seconds length (default 1)")
    b.add_argument("--runs", type=POSITIVE, default=5, help="timed runs per engine (default 5)")
    b.add_argument("--warmup", type=whole_number(0), default=1, help="untimed runs first (default 1)")
    b.add_argument("--reference", action="store_true",
                   help="time the reference path (npw2v2.core.layers) instead of the fast one")
    b.add_argument("--vs-torch", action="store_true",
                   help="also time transformers' Wav2Vec2Model on the same weights, alternating run by run, "
                        "and print the ratios and the largest output difference (needs torch, transformers)")
    b.add_argument("--vs-onnxruntime", action="store_true",
                   help="also time that model exported by torch.onnx in ONNX Runtime (all graph optimisations), "
                        "alternating run by run (needs onnxruntime, onnx, torch, transformers)")
    b.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the memory measurement (it runs each engine once more in a fresh process)")
    b.add_argument("--device", choices=DEVICES, default="cpu", help=DEVICE_HELP)
    b.set_defaults(run=run_bench)

    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", AudioWarning)
        warnings.showwarning = _warn_on_stderr
        try:
            if hasattr(args, "revision"):
                args.model = located_model(args.model, args.revision)
            return args.run(args)
        except UsageError as e:  # one line: the usage summary of the main parser would only be noise here
            print(f"npw2v2: error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # the reader went away (npw2v2 transcribe ... | head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail
            return 141
        except (CheckpointError, AudioError, DeviceError, RayUnavailable, WorkerDied, ValueError) as e:
            print(f"npw2v2: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"npw2v2: error: {file_error(e)}", file=sys.stderr)
            return 2
        except MemoryError as e:  # an input too long for this machine, read or run whole
            print(f"npw2v2: error: not enough memory ({e or 'an allocation failed'})", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C on a long run: what is written stays, and --engine ray resumes from it
            print(("\n" if sys.stderr.isatty() else "") + "npw2v2: interrupted", file=sys.stderr)
            return 130


def located_model(name: str, revision: str | None) -> str:
    """--model as the rest of the command reads it: a hub id becomes its snapshot folder in the
    Hugging Face cache (npw2v2.io.hub); a path or a built-in architecture name stays as it is."""
    return name if is_built_in(name, revision) else str(hub.locate(name, revision))


if __name__ == "__main__":
    sys.exit(main())
