"""From audio to text or features: batching, long-file chunking, CTC decoding.

Inputs are read and run a group of consecutive ones at a time (GROUP_INPUTS), so results
come out as they finish, in about the inputs' order, and memory holds one group's audio.
Within a group, short inputs are sorted by length and run in padded batches with a mask.
Inputs longer than a chunk are read and run window by window: each window carries
``stride`` seconds of context on both sides, whose frames are dropped before the windows'
frames are joined (as the Hugging Face ASR pipeline does for CTC models). Memory then
depends on the window, not on the file: a 10-minute file costs what a 20-second one does.
The price is context: a frame near a window's edge sees only ``stride`` seconds beyond it
instead of the whole file.

``transcribe_each``, ``embed_each`` and ``classify_each`` yield (index, result) pairs as
inputs finish; ``transcribe``, ``embed`` and ``classify`` return the list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.backend import asnumpy
from ..core import xvector
from ..core.fbank import fbank_batch, preprocessor_options
from ..core.heads import SEQUENCE_CLASSIFICATION, XVECTOR
from ..core.hubert import final_projection
from ..core.layers import softmax
from ..io import audio
from . import ctc

DEFAULT_CHUNK_SECONDS = 20.0
WHOLE = np.iinfo(np.int64).max  # a chunk no input exceeds: embed and classify read every file whole
GROUP_INPUTS = 64  # inputs read and run together: enough for batches of similar length, few enough to stream


@dataclass
class Transcription:
    """The text of one input; ``words`` and ``chars`` carry times in seconds when asked for."""

    source: str
    text: str
    seconds: float
    words: list[ctc.Span] | None = None
    chars: list[ctc.Span] | None = None
    error: str | None = None  # why this input failed, with errors="keep"
    frame_tokens: np.ndarray | None = None  # [T] the best token of every 20 ms frame


@dataclass
class _Input:
    """One input as the pipeline sees it: its name, where the samples come from, its length."""

    name: str
    samples: int  # at the model's rate
    long: bool = False  # longer than a chunk: runs window by window
    array: np.ndarray | None = None  # in memory (arrays, and files short enough to read whole)
    path: Path | None = None  # a long file, read window by window
    rate: int = 0  # the file's own rate, for long files
    frames: list = field(default_factory=list)  # per window: best tokens [T_k], or logits [T_k, V] for a beam search
    error: str | None = None


def _prepare(item, rate: int, min_samples: int, chunk_samples: int) -> _Input:
    """Read (or plan to read) one input, refusing what cannot be transcribed."""
    if isinstance(item, (str, Path)):
        if str(item) == "":
            raise audio.AudioError("an empty file name")
        found = audio.info(item)
        if found.samples_at(rate) > chunk_samples:
            return _plan_long(Path(item), found, rate)
        x = audio.load(item, rate, min_samples)
        return _Input(str(item), len(x), array=x)
    x = np.asarray(item, dtype=np.float32)
    if x.ndim != 1:
        raise audio.AudioError(f"array input must be 1-d samples at {rate} Hz, got shape {x.shape}")
    audio.check(x, "array input", min_samples, rate)
    audio.warn_if_clipped(x, "array input")
    return _Input("<array>", len(x), long=len(x) > chunk_samples, array=x)


def _plan_long(path: Path, found: audio.AudioInfo, rate: int) -> _Input:
    """A file to run window by window, checked first in one pass: NaN or Inf refused, clipping
    warned of, and its length the samples it really holds (a truncated header claims more)."""
    audio.warn_if_truncated(path)
    scanned = audio.scan(path)
    if scanned.first_not_finite is not None:
        raise audio.AudioError(audio.not_finite(str(path), None, scanned.first_not_finite, found.rate))
    audio.warn_clipped(scanned.clipped, scanned.frames, str(path))
    samples = -(-scanned.frames * rate // found.rate)
    return _Input(str(path), samples, long=True, path=path, rate=found.rate)


def _run(model, arrays: list[np.ndarray], decoder=None) -> list[np.ndarray]:
    """What decoding needs of each frame, for a batch of 1-d arrays: one [T_i] array of best tokens
    per input (greedy), or of logits [T_i, V] when a beam search ``decoder`` will read them."""
    out = _forward(model, arrays)
    frames = _frame_outputs(asnumpy(out.logits), decoder)  # [B, T] or [B, T, V]
    return [f[:n] for f, n in zip(frames, out.frame_lengths)]


def _frame_outputs(logits: np.ndarray, decoder) -> np.ndarray:
    return logits if decoder is not None else ctc.best_tokens(logits)


def model_inputs(model, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the model reads of a batch of 1-d arrays at its rate, and the mask: the padded samples [B, S],
    normalised when its preprocessor says so, or for w2v-BERT (model_type "wav2vec2-bert") its filter-bank
    features [B, T, 160] and their frame mask [B, T], as its preprocessor_config.json sets the extractor up
    (npw2v2.core.fbank.fbank_batch, preprocessor_options)."""
    if model.config.model_type == "wav2vec2-bert":
        return fbank_batch(arrays, sampling_rate=model.sampling_rate, **preprocessor_options(model.preprocessor))
    x, mask = audio.pad(arrays)  # [B, S]
    if model.do_normalize:
        x = audio.normalize(x, mask)
    return x, mask


def _forward(model, arrays: list[np.ndarray], output_hidden_states: bool = False):
    """One padded, normalised batch (model_inputs) through the model, on the device its parameters are on."""
    x, mask = model_inputs(model, arrays)
    return model(model.xp.asarray(x), attention_mask=mask, output_hidden_states=output_hidden_states)


def _windows(total: int, chunk: int, stride: int, frame: int) -> list[tuple[int, int, int, int | None]]:
    """Windows over ``total`` samples: (start, end) in samples, and the frames to keep (from, to).

    Windows are ``chunk`` long and overlap by 2 * ``stride`` (all multiples of ``frame``).
    Window i keeps the frames from its start + stride (the first: from 0) up to where
    window i + 1's kept frames begin (the last: to its end), so every frame of the whole
    file is kept exactly once, by a window that sees at least ``stride`` around it.
    """
    step = chunk - 2 * stride
    starts = [0]
    while starts[-1] + chunk < total:
        starts.append(starts[-1] + step)
    first_kept = [(s + (stride if s else 0)) // frame for s in starts]  # global frame numbers
    windows = []
    for i, s in enumerate(starts):
        keep_to = first_kept[i + 1] - s // frame if i + 1 < len(starts) else None
        windows.append((s, min(s + chunk, total), first_kept[i] - s // frame, keep_to))
    return windows


def _read_window(item: _Input, start: int, end: int, rate: int) -> np.ndarray:
    """Samples [start, end) at the model's rate of a long input, for a file resampled on the target grid.

    The file is read from a multiple of the resampling ratio's denominator, with a margin,
    so the samples land exactly where whole-file resampling puts them.
    """
    if item.path is None:
        return item.array[start:end]
    g = math.gcd(item.rate, rate)
    up, down = rate // g, item.rate // g
    margin = item.rate // 20  # 50 ms: far wider than the resampling filter's reach
    first = max(0, (start * down // up - margin) // down * down)
    last = math.ceil(end * down / up) + margin
    x, _ = audio.read(item.path, first, last - first)
    x = audio.resample(x, item.rate, rate)
    offset = start - first * up // down
    return x[offset:offset + end - start]


def _transcribe_long(model, item: _Input, rate: int, chunk: int, stride: int, on_window=None, decoder=None) -> None:
    """Fill item.frames window by window, keeping each window's frames outside its context."""
    for logits in window_logits(model, item, rate, chunk, stride, on_window):
        item.frames.append(_frame_outputs(logits, decoder))


def window_logits(model, item: _Input, rate: int, chunk: int, stride: int, on_window=None):
    """A long input's logits window by window: each window's frames outside its context, [T_k, V].

    One window at a time: a 20 s window is already a large batch for the matrix products,
    and memory stays that of one window. ``on_window(name, done, windows)`` hears of each.
    Joined, the windows' frames are the whole input's, each once (see _windows).
    """
    windows = _windows(item.samples, chunk, stride, model.config.output_frame_stride)
    for k, (start, end, keep_from, keep_to) in enumerate(windows):
        out = _forward(model, [_read_window(item, start, end, rate)])
        yield asnumpy(out.logits[0, :out.frame_lengths[0]])[keep_from:keep_to]
        if on_window:
            on_window(item.name, k + 1, len(windows))


def prepare(inputs, rate: int, min_samples: int, chunk: int, errors: str = "raise") -> list[_Input]:
    """Every input read at ``rate`` (files over ``chunk`` samples only planned, to run in windows).

    With errors="keep" a bad one becomes an _Input holding its error. This is the reading
    half of transcribe, embed and classify; it needs no model, so it can run apart from one
    (npw2v2.app.distributed runs it in Ray tasks).
    """
    if errors not in ("raise", "keep"):
        raise ValueError(f'errors must be "raise" or "keep", got {errors!r}')
    items = []
    for item in inputs:
        try:
            items.append(_prepare(item, rate, min_samples, chunk))
        except audio.AudioError as e:
            if errors == "raise":
                raise
            items.append(_Input(str(item) if isinstance(item, (str, Path)) else "<array>", 0, error=str(e)))
    return items


def chunking(model, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
             stride_seconds: float | None = None) -> tuple[int, int]:
    """Window length and context on each side, in samples at the model's rate, whole output frames.

    The context defaults to a sixth of the window.
    """
    for name, seconds in (("chunk_seconds", chunk_seconds), ("stride_seconds", stride_seconds)):
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"{name} must be a finite number of seconds above 0, got {seconds}")
    rate, frame = model.sampling_rate, model.config.output_frame_stride
    chunk = round(chunk_seconds * rate / frame) * frame
    # at least a frame of context: a window's last frame needs samples past its 20 ms
    stride = max(frame, round((chunk_seconds / 6 if stride_seconds is None else stride_seconds) * rate / frame) * frame)
    if chunk - 2 * stride < frame:
        raise ValueError(f"a {chunk_seconds} s chunk leaves no frames between its {stride / rate:.2f} s of "
                         "context on each side")
    return chunk, stride


def check_can_transcribe(model) -> None:
    if model.has_ctc_head and not model.vocab and model.languages:
        raise ValueError(f"this model speaks {len(model.languages)} languages: choose one with set_language "
                         f"(--language), from {', '.join(model.languages)}")
    if not model.has_ctc_head or not model.vocab:
        raise ValueError("this model has no CTC head and vocabulary, so it cannot transcribe; use embed")


def transcribe(model, inputs, batch_size: int = 8, timestamps: bool = False,
               chunk_seconds: float = DEFAULT_CHUNK_SECONDS, stride_seconds: float | None = None,
               progress=None, errors: str = "raise", decoder=None) -> list[Transcription]:
    """Transcribe files (any format libsndfile reads) or 1-d arrays at the model's rate: a list in their order.

    See transcribe_each, which yields each result as it finishes.
    """
    inputs = list(inputs)
    return in_order(transcribe_each(model, inputs, batch_size, timestamps, chunk_seconds, stride_seconds,
                                    progress, errors, decoder), len(inputs))


def transcribe_each(model, inputs, batch_size: int = 8, timestamps: bool = False,
                    chunk_seconds: float = DEFAULT_CHUNK_SECONDS, stride_seconds: float | None = None,
                    progress=None, errors: str = "raise", decoder=None):
    """(index, Transcription) for each input as it finishes, a group of consecutive inputs at a time.

    Inputs longer than ``chunk_seconds`` run in windows with ``stride_seconds`` of context on
    each side (default: a sixth of the chunk). ``progress(done, total, detail=None)`` is
    called as inputs finish, and with a detail ("talk.wav: window 3/30") as long ones advance.
    A bad input raises AudioError, or with ``errors="keep"`` comes back with its ``error`` set.
    The frames are decoded greedily, or by ``decoder`` (npw2v2.app.beam.BeamDecoder: a beam
    search, with a language model and hotwords) over the whole input's logits.
    """
    check_can_transcribe(model)
    _check_batch_size(batch_size)
    chunk, stride = chunking(model, chunk_seconds, stride_seconds)
    inputs = list(inputs)
    counter = _Counter(len(inputs), progress)
    for first, group in _groups(inputs):
        items = prepare(group, model.sampling_rate, model.config.receptive_field, chunk, errors)
        for i, result in transcribe_prepared_each(model, items, batch_size, timestamps, chunk, stride, errors,
                                                  counter.window, decoder):
            counter.finished()
            yield first + i, result


def transcribe_prepared(model, items: list[_Input], batch_size: int = 8, timestamps: bool = False,
                        chunk: int = 0, stride: int = 0, errors: str = "raise", decoder=None) -> list[Transcription]:
    """The model half of transcribe, for inputs from ``prepare``: one Transcription each, in their order."""
    return in_order(transcribe_prepared_each(model, items, batch_size, timestamps, chunk, stride, errors,
                                             decoder=decoder), len(items))


def transcribe_prepared_each(model, items: list[_Input], batch_size: int = 8, timestamps: bool = False,
                             chunk: int = 0, stride: int = 0, errors: str = "raise", on_window=None, decoder=None):
    """(index, Transcription) for inputs from ``prepare`` as they finish: bad ones first, then short ones
    in padded batches of similar length, then long ones window by window (``chunk`` and ``stride`` in
    samples, from ``chunking``)."""
    rate = model.sampling_rate
    for i, item in enumerate(items):
        if item.error is not None:
            yield i, _result(model, item, timestamps)
    short = [i for i, item in enumerate(items) if item.error is None and not item.long]
    for group in audio.batches_by_length([items[i].samples for i in short], batch_size):
        indices = [short[j] for j in group]
        for i, frames in zip(indices, _run(model, [items[i].array for i in indices], decoder)):
            items[i].frames.append(frames)
            yield i, _result(model, items[i], timestamps, decoder)
    for i, item in enumerate(items):
        if item.long:
            try:
                _transcribe_long(model, item, rate, chunk, stride, on_window, decoder)
            except audio.AudioError as e:
                if errors == "raise":
                    raise
                item.error = str(e)
            yield i, _result(model, item, timestamps, decoder)


def in_order(pairs, count: int) -> list:
    """The results of (index, result) pairs as a list in index order."""
    results = [None] * count
    for i, result in pairs:
        results[i] = result
    return results


def _groups(inputs: list):
    """(index of the first, inputs) for consecutive groups of GROUP_INPUTS inputs."""
    for first in range(0, len(inputs), GROUP_INPUTS):
        yield first, inputs[first:first + GROUP_INPUTS]


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of inputs, at least 1, got {batch_size!r}")


class _Counter:
    """Counts finished inputs for a ``progress(done, total, detail=None)`` callback, if any."""

    def __init__(self, total: int, progress):
        self.total, self.done, self.progress = total, 0, progress

    def finished(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)

    def window(self, name: str, done: int, windows: int) -> None:
        if self.progress:
            self.progress(self.done, self.total, f"{Path(name).name}: window {done}/{windows}")


def _result(model, item: _Input, timestamps: bool, decoder=None) -> Transcription:
    if item.error is not None:
        return Transcription(item.name, "", item.samples / model.sampling_rate, error=item.error)
    seconds_per_frame = model.config.output_frame_stride / model.sampling_rate
    if decoder is not None:
        return _beam_result(model, item, timestamps, decoder, seconds_per_frame)
    tokens = np.concatenate(item.frames) if item.frames else np.zeros(0, int)
    decoded = ctc.decode(tokens, model.id_to_token, model.config.pad_token_id, seconds_per_frame,
                         model.word_delimiter)
    result = Transcription(item.name, decoded.text, item.samples / model.sampling_rate, frame_tokens=tokens)
    if timestamps:
        result.words, result.chars = decoded.words, decoded.chars
    return result


def _beam_result(model, item: _Input, timestamps: bool, decoder, seconds_per_frame: float) -> Transcription:
    """The beam search's best transcript of the whole input; its words' times (no character times)."""
    logits = np.concatenate(item.frames) if item.frames else np.zeros((0, len(decoder.labels)), np.float32)
    best = decoder.decode(logits)[0]
    result = Transcription(item.name, best.text, item.samples / model.sampling_rate,
                           frame_tokens=ctc.best_tokens(logits))
    if timestamps:
        result.words = [ctc.Span(word, start * seconds_per_frame, end * seconds_per_frame)
                        for word, (start, end) in best.words]
    return result


def _whole_inputs(model, items: list[_Input], batch_size: int, output_hidden_states: bool = False):
    """Run inputs read whole (``prepare`` with ``chunk=WHOLE``) in padded batches sorted by length.

    Yields (index, input, None, None) for each bad one (its ``error`` says why), then
    (index, input, output, row in the output) for each good one, batch by batch.
    """
    for i, item in enumerate(items):
        if item.error is not None:
            yield i, item, None, None
    good = [i for i, item in enumerate(items) if item.error is None]
    for batch in audio.batches_by_length([items[i].samples for i in good], batch_size):
        group = [good[j] for j in batch]
        out = _forward(model, [items[i].array for i in group], output_hidden_states=output_hidden_states)
        for row, i in enumerate(group):
            yield i, items[i], out, row


def embed(model, inputs, layers=None, batch_size: int = 8, errors: str = "raise", progress=None,
          final_proj: bool = False) -> list:
    """Hidden states of each input, in their order: see embed_each."""
    inputs = list(inputs)
    return in_order(embed_each(model, inputs, layers, batch_size, errors, progress, final_proj), len(inputs))


def embed_each(model, inputs, layers=None, batch_size: int = 8, errors: str = "raise", progress=None,
               final_proj: bool = False):
    """(index, hidden states) for each input as it finishes: one [len(layers), T_i, D] array per input.

    ``layers`` index ``hidden_states`` (0 is the first transformer layer's input, L the last
    layer's output); None gives ``last_hidden_state`` alone (after the final layer norm of
    pre-LN models, and after the down-sampling adapter of models that have one). Files are
    read whole, a group of consecutive inputs at a time. With ``errors="keep"`` a bad input's
    entry is the AudioError instead. ``progress(done, total)`` is called as inputs finish.
    ``final_proj`` passes each through HuBERT's final_proj (ContentVec; npw2v2.core.hubert):
    [len(layers), T_i, P]; ``layers=[9], final_proj=True`` are RVC v1's features.
    """
    check_layers(model, layers)
    check_final_proj(model, final_proj)
    _check_batch_size(batch_size)
    inputs = list(inputs)
    counter = _Counter(len(inputs), progress)
    for first, group in _groups(inputs):
        for i, result in embed_prepared_each(model, _read_whole(model, group, errors), layers, batch_size,
                                             final_proj):
            counter.finished()
            yield first + i, result


def check_layers(model, layers) -> None:
    """Refuse layer numbers the model does not have (0 .. num_hidden_layers)."""
    limit = model.config.num_hidden_layers
    if layers is not None and not all(0 <= k <= limit for k in layers):
        raise ValueError(f"layers must be between 0 and {limit}, got {list(layers)}")


def check_final_proj(model, final_proj: bool) -> None:
    """Refuse final_proj for a model without one (only HuBERT / ContentVec checkpoints carry it)."""
    if final_proj and "final_proj" not in model.params:
        raise ValueError("final_proj: this model has none; it is HuBERT's pretraining projection, which "
                         "ContentVec checkpoints carry (HubertModelWithFinalProj)")


def _read_whole(model, inputs, errors: str) -> list[_Input]:
    return prepare(inputs, model.sampling_rate, model.config.receptive_field, WHOLE, errors)


def embed_prepared(model, items: list[_Input], layers=None, batch_size: int = 8, final_proj: bool = False) -> list:
    """The model half of embed, for inputs from ``prepare`` (``chunk=WHOLE``): an array or AudioError each."""
    return in_order(embed_prepared_each(model, items, layers, batch_size, final_proj), len(items))


def embed_prepared_each(model, items: list[_Input], layers=None, batch_size: int = 8, final_proj: bool = False):
    """(index, array or AudioError) for inputs from ``prepare`` (``chunk=WHOLE``), as they finish."""
    def chosen(h):  # [T_i, D] -> [T_i, D], or [T_i, P] through final_proj
        return asnumpy(final_projection(h, model.params["final_proj"]) if final_proj else h)

    for i, item, out, row in _whole_inputs(model, items, batch_size, output_hidden_states=layers is not None):
        if out is None:
            yield i, audio.AudioError(item.error)
        elif layers is None:
            yield i, chosen(out.last_hidden_state[row, :out.frame_lengths[row]])[None]  # [1, T_i, D]
        else:
            frames = out.encoder_frame_lengths[row]
            yield i, np.stack([chosen(out.hidden_states[k][row, :frames]) for k in layers])  # [layers, T_i, D]


@dataclass
class Classification:
    """The label scores of one input: (label, probability) pairs, most likely first."""

    source: str
    seconds: float
    scores: list[tuple[str, float]]
    error: str | None = None  # why this input failed, with errors="keep"


def classify(model, inputs, batch_size: int = 8, top_k: int | None = None, errors: str = "raise",
             progress=None) -> list:
    """Label scores of each input, in their order: see classify_each."""
    inputs = list(inputs)
    return in_order(classify_each(model, inputs, batch_size, top_k, errors, progress), len(inputs))


def classify_each(model, inputs, batch_size: int = 8, top_k: int | None = None, errors: str = "raise",
                  progress=None):
    """(index, Classification) for each file or 1-d array as it finishes, with a sequence classifier
    (keyword spotting, emotion, speaker, ...).

    Each input gets the softmax of its logits over the config's labels (id2label), the
    ``top_k`` most likely first (all labels by default). Files are read whole and batched by
    length; the mean pooling counts each input's own frames only, so batching changes nothing.
    """
    if model.kind != SEQUENCE_CLASSIFICATION:
        raise ValueError(f"this model is a {model.kind}, not an audio classifier "
                         f"({SEQUENCE_CLASSIFICATION}); frame classifiers give model(x).logits [B, T, labels]")
    _check_batch_size(batch_size)
    inputs = list(inputs)
    counter = _Counter(len(inputs), progress)
    for first, group in _groups(inputs):
        for i, item, out, row in _whole_inputs(model, _read_whole(model, group, errors), batch_size):
            counter.finished()
            yield first + i, _classification(model, item, out, row, top_k)


def _classification(model, item: _Input, out, row, top_k) -> Classification:
    seconds = item.samples / model.sampling_rate
    if out is None:
        return Classification(item.name, seconds, [], error=item.error)
    probabilities = asnumpy(softmax(out.logits[row]))  # [labels]
    best = np.argsort(-probabilities, kind="stable")[:top_k]
    return Classification(item.name, seconds, [(model.labels[k], float(probabilities[k])) for k in best])


# ---------------------------------------------------------------------------
# Speaker embeddings


def embed_speaker(model, inputs, batch_size: int = 8, errors: str = "raise", progress=None) -> list:
    """Each input's speaker embedding, in their order: see embed_speaker_each."""
    inputs = list(inputs)
    return in_order(embed_speaker_each(model, inputs, batch_size, errors, progress), len(inputs))


def embed_speaker_each(model, inputs, batch_size: int = 8, errors: str = "raise", progress=None):
    """(index, embedding [X] as NumPy, or AudioError with errors="keep") for each file or 1-d array
    as it finishes, with an x-vector model (``*ForXVector``: speaker verification).

    Files are read whole and batched by length; the statistics pooling counts each input's own
    frames only, so batching changes nothing. An input needs xvector.min_samples samples (0.325 s
    with the standard TDNN layers).
    """
    if model.kind != XVECTOR:
        raise ValueError(f"this model is a {model.kind}, not a speaker embedding model ({XVECTOR}: an x-vector "
                         "head, as wavlm-base-plus-sv or unispeech-sat-base-plus-sv have)")
    _check_batch_size(batch_size)
    inputs = list(inputs)
    counter = _Counter(len(inputs), progress)
    minimum = max(model.config.receptive_field, xvector.min_samples(model.config))
    for first, group in _groups(inputs):
        items = prepare(group, model.sampling_rate, minimum, WHOLE, errors)
        for i, item, out, row in _whole_inputs(model, items, batch_size):
            counter.finished()
            yield first + i, audio.AudioError(item.error) if out is None else asnumpy(out.embeddings[row])
