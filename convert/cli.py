"""npw2v2-convert SRC OUT: a checkpoint to one self-contained .safetensors file."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from npw2v2 import __version__
from npw2v2.io.hub import LM_METADATA, locate
from npw2v2.io.outputs import file_error, output_problem, with_contents
from npw2v2.io.weights import SPEAKER_THRESHOLD, CheckpointError, speaker_threshold

from .checkpoint import DTYPES, convert
from .errors import ConversionError
from .lm import copy_beside, lm_reference, source_lm


def read_source(src: Path, dict_path: Path | None, languages: list[str] | None = None):
    """The reader for a source: a folder is Hugging Face's layout, a file an original fairseq checkpoint."""
    from . import fairseq, hf

    if src.is_dir():
        return hf.read_folder(src, languages)
    if languages:
        raise ConversionError(f"{src}: --languages bundles MMS adapter files from a Hugging Face model folder")
    if src.is_file():
        return fairseq.read_file(src, dict_path)
    raise ConversionError(f"{src}: no such file or folder")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="npw2v2-convert",
        description="Convert a Hugging Face model folder or an original fairseq .pt checkpoint into one "
                    ".safetensors file that npw2v2.load reads on its own. PyTorch is not needed.")
    parser.add_argument("src", help="a Hugging Face model folder, a hub id in the Hugging Face cache (ORG/NAME), "
                                    "or a fairseq .pt file")
    parser.add_argument("--revision", metavar="REV",
                        help="with a hub id: the branch, tag or commit in the cache (default main)")
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--dict", type=Path, dest="dict_path",
                        help="fairseq letter dictionary (dict.ltr.txt) of a fine-tuned CTC checkpoint; "
                             "by default the one beside SRC, if any")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="stored dtype (default float32)")
    parser.add_argument("--languages", type=lambda text: [t for t in text.split(",") if t], metavar="LANG,...",
                        help="MMS models: bundle these languages' adapters and CTC heads (adapter.LANG.safetensors "
                             "or .bin in SRC), or 'all'; others load from adapter files beside the output")
    parser.add_argument("--speaker-threshold", type=float, metavar="T",
                        help="speaker verification models (x-vector heads): the cosine score from which "
                             "'npw2v2 similarity' says 'same speaker', kept in the file's metadata")
    parser.add_argument("--lm", metavar="LM",
                        help="a word n-gram language model to go with the model: an .arpa / .arpa.gz file, a KenLM "
                             "binary or a language_model/ folder, copied beside OUT, or a hub id; the file's "
                             "metadata names it, for 'npw2v2 transcribe --lm'. By default a Hugging Face folder's "
                             "own language_model/, if it has one")
    parser.add_argument("--version", action="version", version=f"npw2v2-convert {__version__}")
    args = parser.parse_args(argv)
    try:
        args.src = locate(args.src, args.revision)
    except CheckpointError as e:
        print(f"npw2v2-convert: error: {e}", file=sys.stderr)
        return 1
    if args.speaker_threshold is not None:
        try:
            speaker_threshold(args.speaker_threshold, "--speaker-threshold")
        except ValueError as e:
            print(f"npw2v2-convert: error: {e}", file=sys.stderr)
            return 1
    problem = output_problem(args.out, with_contents([args.src, *([args.dict_path] if args.dict_path else [])]))
    if problem:
        print(f"npw2v2-convert: error: {args.out}: {problem}", file=sys.stderr)
        return 1
    lm = args.lm if args.lm is not None else source_lm(args.src)
    try:
        start = time.perf_counter()
        print(f"reading {args.src}", file=sys.stderr, flush=True)
        checkpoint = read_source(args.src, args.dict_path, args.languages)
        if args.speaker_threshold is not None:
            checkpoint.extra[SPEAKER_THRESHOLD] = args.speaker_threshold
        if lm is not None:
            checkpoint.extra[LM_METADATA], lm_copy = lm_reference(str(lm), args.out)
            if lm_copy is not None:
                print(f"copying the language model {lm_copy} beside the model", file=sys.stderr, flush=True)
                copy_beside(lm_copy, args.out)
        print(f"writing {args.out}", file=sys.stderr, flush=True)
        summary = convert(checkpoint, str(args.src), args.out, dtype=args.dtype)
    except ConversionError as e:
        print(f"npw2v2-convert: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # reading the source or writing the output: the file and the cause
        print(f"npw2v2-convert: error: {file_error(e)}", file=sys.stderr)
        return 1
    except MemoryError as e:  # a checkpoint larger than this machine can hold
        print(f"npw2v2-convert: error: {args.src}: not enough memory ({e or 'an allocation failed'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # nothing half-written stays: the output is written beside and moved at the end
        print("npw2v2-convert: interrupted", file=sys.stderr)
        return 130
    vocab = f", vocabulary of {summary.vocab_size}" if summary.vocab_size else ""
    print(f"{args.src}: {summary.source_format}, {summary.model_kind}, {summary.layers} layers, "
          f"{summary.parameters:,} parameters{vocab}")
    if summary.languages:
        print(f"bundled the adapters and CTC heads of {len(summary.languages)} languages: {', '.join(summary.languages)}")
    if lm is not None:
        print(f"language model: {checkpoint.extra[LM_METADATA]} (npw2v2 transcribe --lm uses it)")
    size = summary.output.stat().st_size / 1e6
    print(f"wrote {summary.output} ({args.dtype}, {size:.1f} MB), read back and checked tensor by tensor "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
