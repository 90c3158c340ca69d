"""``npw2v2 explain --html``: one self-contained page of figures drawn from a forward pass's trace.

Each figure reads the trace (npw2v2.app.explain.Trace) of the padded batch the model just ran,
and the traces of each item run alone; nothing here reruns a layer, except the attention
weights of the one layer and head shown, which come from the reference attention
(npw2v2.core.layers.attention_weights) on that layer's traced input. Every figure shares one
time axis, the padded batch's length in seconds, so a frame sits under the samples it came
from. The facts a figure shows (samples, frames, masks, differences) are also written as
data- attributes, which the tests read back.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np

from ..core.backend import asnumpy
from ..core.config import receptive_field
from ..core.heads import XVECTOR
from ..core import conformer
from ..core.layers import attention_weights, softmax
from ..core.ops import REFERENCE
from ..core.transformer import attention_input
from ..core.wavlm import gated_bias
from . import align, ctc
from .explain import Trace
from .svg import colour, colour_bar, image, line, pooled, rect, svg, tag, text, title

LEFT, WIDTH, RIGHT = 150, 780, 20  # label column, plot width, margin (pixels)
ITEM_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MOST_PIXELS = 600  # a heat map's longest side before frames are pooled
ROW = 30  # the pitch of a figure's rows of bars, room for a two-line label


@dataclass
class Batch:
    """What every figure needs: the trace, the model, and the batch's lengths."""

    trace: Trace
    model: object
    rate: int
    samples: np.ndarray  # [B] real samples per item
    padded: int  # S: the padded length
    frames: np.ndarray  # [B] valid frames per item
    total_frames: int  # T: the padded batch's frames
    masked: bool  # whether the forward pass had an attention mask
    output_frames: np.ndarray  # [B] valid frames of last_hidden_state and frame logits (fewer after an adapter)

    @classmethod
    def of(cls, trace: Trace, model) -> Batch:
        x = trace["input_values"]
        frames = trace["conv_lengths"].facts["per_layer"][-1]
        adapter = [s.facts["lengths"] for s in trace.stages if s.name.startswith("adapter.layers.")]
        return cls(trace, model, model.sampling_rate, np.asarray(x.facts["lengths"]), x.array.shape[1],
                   np.asarray(frames), trace["frame_mask"].array.shape[1], trace["frame_mask"].facts["used"],
                   np.asarray(adapter[-1] if adapter else frames))

    def x(self, sample: float) -> float:
        """The horizontal position of a sample index on the shared time axis."""
        return LEFT + WIDTH * sample / self.padded

    def frame_x(self, frame: float) -> float:
        return self.x(frame * self.model.config.frame_stride)

    def seconds(self, samples) -> str:
        return f"{samples / self.rate:.2f} s"


def _label(y: float, first: str, second: str = "") -> str:
    """A row's name in the label column, with a second, smaller line."""
    return text(8, y, first, class_="label") + (text(8, y + 13, second, class_="small") if second else "")


def _time_axis(b: Batch, y: float) -> str:
    """Ticks in seconds under a figure, across the padded length."""
    seconds = b.padded / b.rate
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60) if seconds / s <= 10)
    ticks = [line(LEFT, y, LEFT + WIDTH, y, class_="axis")]
    for k in range(int(seconds / step) + 1):
        at = b.x(k * step * b.rate)
        ticks += [line(at, y, at, y + 4, class_="axis"), text(at, y + 16, f"{k * step:g} s", class_="small",
                                                               text_anchor="middle")]
    return "".join(ticks)


def _figure(key: str, number: int, heading: str, explanation: str, *body: str, **facts) -> str:
    return tag("figure", tag("h2", f"{number}. {html.escape(heading)}"), tag("p", html.escape(explanation)), *body,
               id=f"fig-{key}", data_figure=key, **facts)


def _valid_and_padding(b: Batch, y: float, height: float, real: int, total: int, unit: int, what: str) -> str:
    """A bar: the first ``real`` of ``total`` steps (each ``unit`` samples) valid, the rest padding."""
    return (rect(b.x(0), y, b.x(real * unit) - b.x(0), height, class_="valid", data_from=0, data_to=real,
                 data_unit=what) +
            rect(b.x(real * unit), y, b.x(total * unit) - b.x(real * unit), height, class_="padding",
                 data_from=real, data_to=total, data_unit=what))


# ---------------------------------------------------------------------------
# 1. Waveforms


def _envelope(b: Batch, wave: np.ndarray, y: float, height: float, scale: float) -> str:
    """The waveform as a filled band: each pixel column from its lowest to its highest sample."""
    columns = max(1, round(WIDTH * len(wave) / b.padded))
    edges = np.linspace(0, len(wave), columns + 1).astype(int)[:-1]
    top, bottom = np.maximum.reduceat(wave, edges), np.minimum.reduceat(wave, edges)
    xs = [b.x(e) for e in edges]
    middle, half = y + height / 2, height / 2 / scale
    points = [f"{px:.1f},{middle - t * half:.1f}" for px, t in zip(xs, top)]
    points += [f"{px:.1f},{middle - v * half:.1f}" for px, v in zip(reversed(xs), reversed(bottom))]
    return tag("path", d="M" + " L".join(points) + " Z", class_="wave")


def waveforms(b: Batch) -> str:
    x = b.trace["input_values"].array
    scale = float(np.abs(x).max()) or 1.0
    rows, y = [], 10
    for i, n in enumerate(b.samples):
        n = int(n)
        rows.append(tag(
            "g", _label(y + 22, f"item {i}", f"{b.seconds(n)}, {n:,} samples"),
            rect(b.x(n), y, b.x(b.padded) - b.x(n), 50, class_="padding-shade"),
            _envelope(b, x[i, :n], y, 50, scale),
            text(b.x(n) + 4, y + 30, f"{b.padded - n:,} samples of padding (zeros)", class_="small")
            if b.padded - n > b.padded / 5 else "",
            _valid_and_padding(b, y + 54, 9, n, b.padded, 1, "samples"),
            class_="item", data_item=i, data_samples=n, data_padded_samples=b.padded,
            style=f"--item:{ITEM_COLOURS[i % len(ITEM_COLOURS)]}"))
        y += 78
    mask_note = ("The bar under each waveform is the attention mask: green where it is True (real samples), "
                 "grey where it is False (padding).") if b.masked else \
        "No attention mask was given: the model counts every sample, padding included, as real."
    return _figure(
        "waveforms", 1, "A padded batch",
        f"{len(b.samples)} inputs of different lengths become one array [B, S] = [{len(b.samples)}, {b.padded}]: "
        f"each is right-padded with zeros to the longest ({b.seconds(b.padded)} at {b.rate} Hz). {mask_note}",
        svg(LEFT + WIDTH + RIGHT, y + 20, *rows, _time_axis(b, y)))


# ---------------------------------------------------------------------------
# 2. The conv ladder


def _zoom(b: Batch, cfg) -> str:
    """The first three frames of item 0 over its first samples: receptive field and hop."""
    field, hop = receptive_field(cfg.conv_kernel, cfg.conv_stride), cfg.frame_stride
    span = field + 2 * hop
    wave = b.trace["input_values"].array[0, :min(span, int(b.samples[0]))]

    def at(sample):
        return LEFT + WIDTH * sample / span

    scale = float(np.abs(wave).max()) or 1.0
    points = " L".join(f"{at(k):.1f},{40 - 30 * v / scale:.1f}" for k, v in enumerate(wave))
    parts = [_label(40, "item 0, zoomed", f"its first {span} samples"), tag("path", d="M" + points, class_="line")]
    for j in range(3):
        top = 80 + 22 * j
        parts += [rect(at(j * hop), top, at(j * hop + field) - at(j * hop), 16, class_="field", data_frame=j,
                       data_first_sample=j * hop, data_last_sample=j * hop + field - 1),
                  text(at(j * hop) + 4, top + 12, f"frame {j}: samples {j * hop}-{j * hop + field - 1}",
                       class_="small")]
    parts += [line(at(0), 152, at(hop), 152, class_="arrow"),
              text(at(hop) + 6, 156, f"hop: {hop} samples = {1000 * hop / b.rate:g} ms between frames; "
                                     f"receptive field: {field} samples = {1000 * field / b.rate:g} ms per frame",
                   class_="small")]
    return svg(LEFT + WIDTH + RIGHT, 170, *parts, class_="zoom", data_receptive_field=field, data_hop=hop)


def _ladder_rows(b: Batch, cfg) -> tuple[list[str], float]:
    """Per conv layer and item, a bar over the samples the layer's frames cover."""
    per_layer = b.trace["conv_lengths"].facts["per_layer"]
    rows, y, stride = [], 8, 1
    previous = b.samples
    for layer, lengths in enumerate(per_layer):
        k, s = cfg.conv_kernel[layer], cfg.conv_stride[layer]
        field = receptive_field(cfg.conv_kernel[:layer + 1], cfg.conv_stride[:layer + 1])
        stride *= s
        bars = [_label(y + 10, f"conv_layers.{layer}", f"K={k}, stride {s}")]
        for i, (n_in, n) in enumerate(zip(previous, lengths)):
            covered = (int(n) - 1) * stride + field  # the samples its frames see; the rest is dropped
            arithmetic = f"item {i}: ({int(n_in)} - {k}) // {s} + 1 = {int(n)} frames, one per {stride} samples"
            bars.append(rect(b.x(0), y + 7 * i, b.x(covered) - b.x(0), 6, title(arithmetic), class_="bar",
                             data_item=i, data_layer=layer, data_frames=int(n), data_covered_samples=covered,
                             style=f"fill:{ITEM_COLOURS[i % len(ITEM_COLOURS)]}"))
            bars.append(text(b.x(covered) + 4, y + 7 * i + 6, f"{int(n):,}", class_="tiny"))
        rows.append(tag("g", *bars, class_="layer", data_layer=layer))
        y += max(ROW, 7 * len(lengths) + 10)
        previous = lengths
    return rows, y


def conv_ladder(b: Batch) -> str:
    cfg = b.model.config
    rows, height = _ladder_rows(b, cfg)
    field, hop = receptive_field(cfg.conv_kernel, cfg.conv_stride), cfg.frame_stride
    arithmetic = "; ".join(f"item {i}: {int(n):,} samples -> {int(t)} frames" for i, (n, t) in
                           enumerate(zip(b.samples, b.frames)))
    return _figure(
        "ladder", 2, "From samples to frames: the conv ladder",
        f"{len(cfg.conv_kernel)} strided convolutions without padding turn samples into frames. Each layer makes "
        f"floor((L - K) / stride) + 1 frames of its input's L, so the strides multiply to one frame every "
        f"{hop} samples ({1000 * hop / b.rate:g} ms), and each last-layer frame sees {field} samples "
        f"({1000 * field / b.rate:g} ms). The bars show, per layer and item, the samples that layer's frames "
        f"cover; what a layer cannot fit a whole window over is dropped (hover a bar for its arithmetic). "
        f"{arithmetic}.",
        _zoom(b, cfg), svg(LEFT + WIDTH + RIGHT, height + 24, *rows, _time_axis(b, height)),
        data_frames=" ".join(str(int(t)) for t in b.frames))


# ---------------------------------------------------------------------------
# 3. The frame mask and where it acts


def _norm_row(b: Batch, i: int, y: float) -> str:
    """Group norm's statistics: over conv layer 0's valid frames, or every frame when the padding leaks in."""
    cfg = b.model.config
    first = b.trace["conv_layers.0"]
    norm = first.facts.get("norm") or ""
    valid = int(b.trace["conv_lengths"].facts["per_layer"][0][i])
    counted = valid if "valid frames only" in norm else first.array.shape[1]
    k = cfg.conv_kernel[0]
    stride = cfg.conv_stride[0]
    return (_label(y + 9, "group norm", f"over {counted:,} of {first.array.shape[1]:,} conv_layers.0 frames") +
            rect(b.x(0), y, b.x((counted - 1) * stride + k) - b.x(0), 10, class_="norm", data_item=i,
                 data_norm_frames=counted, data_layer_frames=first.array.shape[1]))


def _masked_row(b: Batch, i: int, y: float) -> str:
    """Each frame's size as the positional conv reads it: zero on every padded frame."""
    masked = b.trace["masked"].array[i]  # [T, D]
    size = np.sqrt((masked.astype(np.float64) ** 2).sum(axis=1))  # [T]
    top = float(size.max()) or 1.0
    bars = [f"M{b.frame_x(j):.1f},{y + 14:.1f} v{-12 * v / top:.1f} h{b.frame_x(1) - b.frame_x(0):.2f} "
            f"v{12 * v / top:.1f}" for j, v in enumerate(size)]
    return (_label(y + 9, "positional conv in", "padded frames zeroed") +
            tag("path", d=" ".join(bars), class_="sizes", data_item=i, data_zero_frames=int((size == 0).sum())))


def _keys_row(b: Batch, i: int, y: float) -> str:
    n = int(b.frames[i])
    return (_label(y + 9, "attention keys", "padded keys: weight 0") +
            rect(b.frame_x(0), y, b.frame_x(n) - b.frame_x(0), 10, class_="keys", data_item=i, data_from=0, data_to=n)
            + rect(b.frame_x(n), y, b.frame_x(b.total_frames) - b.frame_x(n), 10, class_="blocked", data_item=i,
                   data_from=n, data_to=b.total_frames))


def _frame_ticks(b: Batch, y: float, height: float) -> str:
    """A thin line between frames, where there are few enough to see."""
    if b.total_frames > 300:
        return ""
    return tag("path", d=" ".join(f"M{b.frame_x(j):.1f},{y} v{height}" for j in range(1, b.total_frames)),
               class_="ticks")


def frame_mask(b: Batch) -> str:
    group = b.model.config.feat_extract_norm == "group"
    blocks, y = [], 10
    for i, n in enumerate(b.frames):
        n = int(n)
        rows = [_label(y + 9, f"item {i}: samples", f"{int(b.samples[i]):,} real"),
                _valid_and_padding(b, y, 10, int(b.samples[i]), b.padded, 1, "samples")]
        y += ROW
        if group:
            rows.append(_norm_row(b, i, y))
            y += ROW
        rows += [_label(y + 9, "frame mask", f"{n} of {b.total_frames} frames"),
                 _valid_and_padding(b, y, 10, n, b.total_frames, b.model.config.frame_stride, "frames"),
                 _frame_ticks(b, y, 10)]
        y += ROW
        if b.masked:
            rows.append(_masked_row(b, i, y))
            y += ROW
            rows.append(_keys_row(b, i, y))
            y += ROW
        blocks.append(tag("g", *rows, class_="item", data_item=i, data_frames=b.total_frames, data_valid_frames=n,
                          style=f"--item:{ITEM_COLOURS[i % len(ITEM_COLOURS)]}"))
        y += 14
    where = ["group norm counts only the valid frames of conv layer 0 when it computes each channel's mean "
             "and variance" if group else "the feature encoder's layer norms work frame by frame, so they need no mask",
             "padded frames are set to zero before the positional convolution, as zero padding looks to a lone input",
             "in every attention layer, a padded frame's key scores the most negative float, so its weight is 0"]
    explanation = (f"The attention mask over samples becomes a mask over frames: True for each item's first "
                   f"valid frames. It acts in three places, each drawn on the same time axis: "
                   f"{'; '.join(where)}." if b.masked else
                   "No attention mask was given, so every frame counts as real and nothing is masked.")
    return _figure("mask", 3, "The frame mask, and where it acts", explanation,
                   svg(LEFT + WIDTH + RIGHT, y + 24, *blocks, _time_axis(b, y)))


# ---------------------------------------------------------------------------
# 4. Activation sizes, layer by layer


def _frame_image(b: Batch, values: np.ndarray, padded_from: int, y: float, row_height: float, stride: int,
                 **facts) -> str:
    """A heat map [rows, T] of frames ``stride`` samples apart over their place on the time axis,
    frames from ``padded_from`` grey."""
    hidden = np.zeros(values.shape, bool)
    hidden[:, padded_from:] = True
    width = b.x(values.shape[1] * stride) - b.x(0)
    values, hidden = pooled(values, MOST_PIXELS, 1), ~pooled(~hidden, MOST_PIXELS, 1)
    return image(b.x(0), y, width, row_height * values.shape[0], colour(values, hidden), **facts)


def activation_sizes(b: Batch) -> str:
    layers = sorted((s for s in b.trace.stages if re.fullmatch(r"hidden_states\.\d+", s.name)),
                    key=lambda s: int(s.name.split(".")[1]))
    row = 8
    parts, y = [], 10
    for i, n in enumerate(b.frames):
        n = int(n)
        size = np.stack([np.sqrt((s.array[i].astype(np.float64) ** 2).sum(axis=-1)) for s in layers])  # [L + 1, T]
        low, high = size[:, :n].min(axis=1, keepdims=True), size[:, :n].max(axis=1, keepdims=True)
        scaled = (size - low) / np.maximum(high - low, 1e-30)  # each row from its smallest to its largest
        parts.append(tag("g", _label(y + 12, f"item {i}", f"{n} valid frames"),
                         _frame_image(b, scaled, n, y, row, b.model.config.frame_stride, class_="heat",
                                      data_item=i, data_layers=len(layers),
                                      data_frames=b.total_frames, data_valid_frames=n),
                         text(LEFT - 4, y + 7, "0", class_="tiny", text_anchor="end"),
                         text(LEFT - 4, y + row * len(layers), str(len(layers) - 1), class_="tiny", text_anchor="end"),
                         class_="item", data_item=i))
        y += row * len(layers) + 16
    parts.append(colour_bar(LEFT, y, 240, 8, "the row's smallest", "largest"))
    return _figure(
        "sizes", 4, "What each layer makes of each frame",
        f"Each row is one hidden state (hidden_states.0, the first layer's input, at the top; "
        f"hidden_states.{len(layers) - 1}, the last layer's output, at the bottom) and each column one frame: "
        f"the colour is the frame vector's length ({b.model.config.hidden_size} numbers), from the row's "
        f"smallest to its largest over the valid frames. Padded frames are grey: the padded batch computes numbers "
        f"there too, "
        f"but they mean nothing, and the mask keeps every valid frame from looking at them.",
        svg(LEFT + WIDTH + RIGHT, y + 40, *parts, _time_axis(b, y + 24)))


# ---------------------------------------------------------------------------
# 5. Attention weights of one layer and head


def head_weights(b: Batch, layer: int, head: int) -> np.ndarray:
    """One head's attention weights [B, T, T] (queries by keys) in ``layer``, from the reference
    attention on the layer's traced input, with the mask the forward pass used (and a WavLM
    layer's gated relative position bias, this head's share, from the traced table)."""
    cfg, xp = b.model.config, b.model.xp
    p = b.model.params["encoder"]["layers"][layer]
    if cfg.model_type == "wav2vec2-conformer":
        return _conformer_head_weights(b, p, layer, head)
    width = cfg.hidden_size // cfg.num_attention_heads
    rows = slice(head * width, (head + 1) * width)  # this head's rows of q_proj and k_proj
    one_head = {name: {"weight": p["attention"][name]["weight"][rows], "bias": p["attention"][name]["bias"][rows]}
                for name in ("q_proj", "k_proj")}
    x = attention_input(xp.asarray(b.trace[f"hidden_states.{layer}"].array), p, cfg, REFERENCE)
    valid = xp.asarray(b.trace["frame_mask"].array) if b.masked else None
    bias = None
    if cfg.model_type == "wavlm":
        table = xp.asarray(b.trace["position_bias_table"].array)
        gate, position = gated_bias(x, p["attention"], table, cfg.num_attention_heads)
        bias = (gate[:, head:head + 1], position[head:head + 1])
    return asnumpy(attention_weights(x, valid, one_head, heads=1, bias=bias))[:, 0]


def _conformer_head_weights(b: Batch, p, layer: int, head: int) -> np.ndarray:
    """head_weights of a conformer block: its reference attention weights (with its positions) on the block's
    layer-normed attention input, recomputed from the traced block input."""
    cfg, xp = b.model.config, b.model.xp
    x = conformer.attention_input(xp.asarray(b.trace[f"hidden_states.{layer}"].array), p, cfg, REFERENCE)
    position = conformer.positions(x.shape[1], cfg, xp)
    q, k, _ = conformer.projections(x, p["self_attn"], cfg, position)
    valid = xp.asarray(b.trace["frame_mask"].array) if b.masked else None
    return asnumpy(conformer.attention_weights(q, k, valid, p["self_attn"], cfg, position))[:, head]


def attention(b: Batch, layer: int, head: int) -> str:
    weights = head_weights(b, layer, head)
    items = len(b.frames)
    side = 300 if items <= 2 else max(120, WIDTH // min(items, 6) - 20)  # one row of up to 6, then more rows
    across = max(1, (WIDTH + 20) // (side + 20))
    parts = []
    for i, n in enumerate(b.frames):
        n, left, top = int(n), LEFT + (i % across) * (side + 20), 20 + (i // across) * (side + 30)
        shown = np.sqrt(weights[i] / max(float(weights[i, :n].max()), 1e-30))  # square root: small weights show
        real_queries = np.zeros(shown.shape, bool)
        real_queries[:n] = True
        zero_columns = int((weights[i, :n] == 0).all(axis=0).sum())
        shown, real_queries = (pooled(pooled(a, MOST_PIXELS, 0), MOST_PIXELS, 1) for a in (shown, real_queries))
        parts.append(tag(
            "g", text(left, top - 6, f"item {i}: {n} of {b.total_frames} keys real" if side >= 200 else
                      f"item {i}: {n}/{b.total_frames} real", class_="small"),
            image(left, top, side, side, colour(shown, ~real_queries), class_="heat"),
            class_="item", data_item=i, data_keys=b.total_frames, data_valid_keys=n,
            data_zero_key_columns=zero_columns))
    bottom = 20 + -(-items // across) * (side + 30)
    parts += [_label(34, "queries", "down"), _label(70, "keys", "across"),
              colour_bar(LEFT, bottom, 240, 8, "0", "largest weight (square root)")]
    why = (" The padded keys are columns of exact zeros: their scores were set to the most negative float before "
           "the softmax, so each real frame's weights add up to 1 over the real frames alone, as they would if "
           "the item ran alone. The padded queries (grey rows) are computed too, but nothing reads them."
           if b.masked else " No mask was given: every frame, padding included, is a key.")
    return _figure(
        "attention", 5, f"Attention weights: layer {layer}, head {head}",
        f"Row q, column k: how much frame q takes from frame k, softmax(q·k / sqrt(d)) for head {head} of "
        f"layer {layer} (--layer, --head), computed by the reference attention from the layer's traced input.{why}",
        svg(LEFT + min(items, across) * (side + 20) + RIGHT, bottom + 30, *parts),
        data_layer=layer, data_head=head)


# ---------------------------------------------------------------------------
# 6. CTC: token probabilities, the greedy path, words


def _shown_tokens(probabilities: np.ndarray, frames: np.ndarray, blank: int, others: int = 3) -> np.ndarray:
    """The token ids to draw: blank, those that win some valid frame, and the ``others`` likeliest runners-up."""
    valid = np.concatenate([probabilities[i, :n] for i, n in enumerate(frames)])  # [frames, V]
    winners = set(valid.argmax(axis=1).tolist()) | {blank}
    ranked = [int(t) for t in np.argsort(-valid.max(axis=0)) if int(t) not in winners]
    return np.array(sorted(winners | set(ranked[:others])))


def _words(b: Batch, words: list, y: float, i: int, kind: str = "word") -> list[str]:
    """Each word's span as a labelled bar (ctc.Span from greedy decoding, align.AlignedSpan with its score)."""
    bars = []
    for w in words:
        score = getattr(w, "score", None)
        left, right = b.x(w.start * b.rate), b.x(w.end * b.rate)
        about = f"{w.text}: {w.start:.2f}-{w.end:.2f} s" + ("" if score is None else f", score {score:.2f}")
        bars.append(tag("g", rect(left, y, right - left, 14, title(about), class_=kind),
                        text(left + 2, y + 11, w.text, class_="small"), class_=kind, data_item=i, data_word=w.text,
                        data_start=round(w.start, 3), data_end=round(w.end, 3),
                        data_score=None if score is None else round(score, 4)))
    return bars


def forced_paths(b: Batch, transcripts: list[align.Transcript]) -> list[align.Path]:
    """Each item's forced alignment to its transcript (``--text``, spelled by align.tokenize), from the
    traced logits as npw2v2 align takes them; AlignmentError names the item that cannot be aligned."""
    names = [f"--text of item {i}" for i in range(len(transcripts))]
    log_probs = align.log_softmax(b.trace["logits"].array)  # [B, T, V]
    paths = align.align_log_probs(b.model, log_probs, b.output_frames, transcripts, names)
    impossible = [p for p in paths if isinstance(p, str)]
    if impossible:
        raise align.AlignmentError(impossible[0])
    return paths


def _dots(b: Batch, tokens, shown: np.ndarray, y: float, row: float, stride: int, kind: str) -> str:
    """One dot per frame on its token's row: a path through the token probabilities."""
    rows = np.searchsorted(shown, tokens)  # shown is sorted and holds every token of the path
    return tag("path", d=" ".join(f"M{b.x((j + 0.5) * stride):.1f},{y + row * (k + 0.5):.1f} h0.1"
                                  for j, k in enumerate(rows)), class_=kind)


FORCED = ("The orange rings are the forced alignment of --text: the best path that spells exactly that "
          "text (npw2v2 align's), and the orange bars under the greedy words its words, with their scores. ")


def _token_name(names: list[str], token: int, blank: int) -> str:
    if token == blank:
        return "blank"
    return names[token] if token < len(names) and names[token] else f"#{token}"  # no vocabulary: the id


def ctc_tokens(b: Batch, transcripts: list[align.Transcript] | None = None) -> str:
    model = b.model
    if not model.has_ctc_head or not any(s.name == "logits" for s in b.trace.stages):
        return _figure("ctc", 6, "CTC: token probabilities over time",
                       "This model has no CTC head, so there is nothing to spell.", data_absent="no CTC head")
    blank, names, stride = model.config.pad_token_id, model.id_to_token, model.config.output_frame_stride
    probabilities = asnumpy(softmax(b.trace["logits"].array.astype(np.float64)))  # [B, T, V]
    forced = forced_paths(b, transcripts) if transcripts else [None] * len(b.output_frames)
    shown = _shown_tokens(probabilities, b.output_frames, blank)
    if transcripts:
        shown = np.union1d(shown, np.concatenate([p.frame_tokens for p in forced]))
    row, parts, y, spelled = 9, [], 10, []
    for i, (n, path) in enumerate(zip(b.output_frames, forced)):
        n = int(n)
        best = ctc.best_tokens(probabilities[i, :n])
        decoded = ctc.decode(best, names, blank, stride / b.rate, model.word_delimiter)
        spelled.append(decoded.text)
        labels = [text(LEFT - 4, y + row * (k + 0.8), _token_name(names, t, blank), class_="tiny", text_anchor="end")
                  for k, t in enumerate(shown)]
        words = f"{len(decoded.words)} word" + "s" * (len(decoded.words) != 1) if names else "no vocabulary"
        parts.append(tag("g", _label(y + 12, f"item {i}", words), *labels,
                         _frame_image(b, probabilities[i][:, shown].T, n, y, row, stride),
                         _dots(b, path.frame_tokens, shown, y, row, stride, "forced") if path else "",
                         _dots(b, best, shown, y, row, stride, "greedy"),
                         *_words(b, decoded.words, y + row * len(shown) + 4, i),
                         *(_words(b, path.words, y + row * len(shown) + 22, i, "aligned") if path else ()),
                         class_="item", data_item=i, data_valid_frames=n, data_text=decoded.text,
                         data_words=len(decoded.words)))
        y += row * len(shown) + (48 if transcripts else 30)
    parts.append(colour_bar(LEFT, y, 240, 8, "probability 0", "1"))
    return _figure(
        "ctc", 6, "CTC: token probabilities over time",
        "Each column is a frame, each row a token: the colour is the token's probability (softmax of the logits). "
        "The white dots are the greedy path, the likeliest token of each frame; merging its repeats and dropping "
        "the blanks spells the text, and the runs between word delimiters give each word's span (the bars). "
        + (FORCED if transcripts else "")
        + (" ".join(f'Item {i}: "{t}".' for i, t in enumerate(spelled)) if names else
           "This model has no vocabulary, so its tokens are named by their ids and nothing is spelled."),
        svg(LEFT + WIDTH + RIGHT, y + 40, *parts, _time_axis(b, y + 24)))


# ---------------------------------------------------------------------------
# 7. The core promise, stage by stage


FLOOR, CEILING = -10, 2  # log10 of the smallest and largest difference drawn


def padding_leaks(model) -> list[str]:
    """Where transformers lets a padded batch's padding into an item's numbers, which npw2v2 keeps
    out unless norm_over_padding: nowhere for a layer-norm wav2vec 2.0 without adapter."""
    cfg = model.config
    places = {"group norm": cfg.feat_extract_norm == "group",
              "the positional conv's batch norm": cfg.conv_pos_batch_norm,
              "the stack of positional convs": cfg.model_type == "data2vec-audio",
              "the conformer's depthwise convs": cfg.model_type == "wav2vec2-conformer",
              "the down-sampling adapter": "adapter" in model.params,
              "the x-vector pooling": model.kind == XVECTOR}
    return [place for place, leaks in places.items() if leaks]


def other_way(model, x: np.ndarray, mask: np.ndarray, reference: bool, norm_over_padding: bool) -> list[Trace]:
    """Where padding can leak (padding_leaks), the batch traced the other way (``norm_over_padding``
    flipped), for the promise figure to set beside the traced run; nothing for other models."""
    if not padding_leaks(model):
        return []
    other = Trace()
    model(model.xp.asarray(x), attention_mask=mask, norm_over_padding=not norm_over_padding, trace=other,
          reference=reference)
    return [other]


def promise_series(found: list[dict], model, norm_over_padding: bool) -> dict[str, dict[str, list[float]]]:
    """Per way of running the batch, per stage, each item's largest difference from its lone run:
    ``found`` is npw2v2.app.explain.differences_from_alone of the traced run and ``other_way``'s.

    Where padding can leak, npw2v2's way (the padding kept out) beside transformers' (let in),
    each named by the places (padding_leaks).
    """
    if len(found) == 1:
        return {"npw2v2, the padded batch": found[0]}
    places = " and ".join(padding_leaks(model))
    names = {False: f"npw2v2: padding kept out of {places}", True: f"transformers: padding let into {places}"}
    return dict(sorted({names[norm_over_padding]: found[0], names[not norm_over_padding]: found[1]}.items()))


def _height(difference: float, top: float, height: float) -> float:
    power = FLOOR if difference <= 0 else min(max(np.log10(difference), FLOOR), CEILING)
    return top + height * (CEILING - power) / (CEILING - FLOOR)


def _promise_plot(series: dict, stages: list[str], items: int) -> str:
    top, height, step = 20, 200, WIDTH / max(1, len(stages))
    parts = []
    for power in range(FLOOR, CEILING + 1, 2):
        y = _height(10.0 ** power, top, height)
        parts += [line(LEFT, y, LEFT + WIDTH, y, class_="grid"),
                  text(LEFT - 6, y + 4, "0 (exact)" if power == FLOOR else f"1e{power}", class_="small",
                       text_anchor="end")]
    for k, (label, differences) in enumerate(series.items()):
        for s, stage in enumerate(stages):
            for i, d in enumerate(differences[stage]):
                cx = LEFT + step * (s + 0.5) + (i - (items - 1) / 2) * 4 + (k * 2 - 1) * 2 * (len(series) > 1)
                parts.append(tag("circle", title(f"{label}, item {i}, {stage}: {d:.2e}"),
                                 cx=round(cx, 1), cy=round(_height(d, top, height), 1), r=3,
                                 class_=f"series-{k}", style=f"--item:{ITEM_COLOURS[i % len(ITEM_COLOURS)]}",
                                 data_series=label, data_stage=stage, data_item=i, data_difference=f"{d:.3e}"))
    for s, stage in enumerate(stages):
        x = LEFT + step * (s + 0.5)
        parts.append(text(x, top + height + 10, stage, class_="tiny", text_anchor="end",
                          transform=f"rotate(-60 {x:.1f} {top + height + 10})"))
    parts.append(text(8, 10, "largest |batch - alone| per stage and item, log scale", class_="label"))
    return svg(LEFT + WIDTH + RIGHT, top + height + 120, *parts)


def _promise_table(series: dict, stages: list[str], items: int) -> str:
    head = tag("tr", tag("th", "stage"), *(tag("th", f"item {i}: {html.escape(label.split(':')[0])}")
                                           for label in series for i in range(items)))
    rows = [tag("tr", tag("td", html.escape(stage)), *(tag("td", f"{d:.1e}" if d else "0") for label in series
                                          for d in series[label][stage])) for stage in stages]
    return tag("details", tag("summary", "the numbers"), tag("table", head, *rows, class_="numbers"))


def promise(series: dict[str, dict[str, list[float]]], items: int) -> str:
    stages = list(next(iter(series.values())))
    worst = {label: max(max(v) for v in d.values()) for label, d in series.items()}
    legend = " ".join(f"{'Filled' if k == 0 else 'Hollow'} dots: {label}, "
                      + (f"at most {worst[label]:.1e}." if worst[label] else "exactly 0 everywhere.")
                      for k, label in enumerate(series))
    return _figure(
        "promise", 7, "The promise: each item as if it ran alone",
        f"Each item of the padded batch is run again on its own, and every stage's valid frames are compared: "
        f"the largest difference per stage and item, on a log scale (exact zeros at the bottom). {legend} "
        f"Float32 sums in a different order differ around 1e-6; a difference near 1 means the "
        f"padding changed the result.",
        _promise_plot(series, stages, items), _promise_table(series, stages, items), data_items=items)


# ---------------------------------------------------------------------------
# The page


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
figure { margin: 0 0 2em 0; } svg { display: block; overflow: visible; }
.label { font-size: 12px; font-weight: 600; }
.small { font-size: 11px; fill: #444; } .tiny { font-size: 9px; fill: #555; }
.wave { fill: var(--item); stroke: none; } .line { fill: none; stroke: #1f77b4; stroke-width: 1; }
.padding-shade { fill: #eee; } .valid { fill: #4caf50; } .padding { fill: #cfcfcf; }
.field { fill: #1f77b4; fill-opacity: 0.25; stroke: #1f77b4; } .arrow { stroke: #222; stroke-width: 2; }
.axis, .grid { stroke: #999; } .grid { stroke-dasharray: 2 3; } .ticks { stroke: #fff; stroke-width: 0.5; }
.norm { fill: #9467bd; } .keys { fill: #1f77b4; } .blocked { fill: #d62728; fill-opacity: 0.35; }
.sizes { fill: var(--item); } .greedy { stroke: #fff; stroke-width: 3; stroke-linecap: round; }
.forced { stroke: #ff7f0e; stroke-width: 7; stroke-linecap: round; } .aligned { fill: #ffc58a; stroke: #d95f00; }
.word { fill: #ffe08a; stroke: #b38f00; } g.word text, g.aligned text { fill: #222; }
circle.series-0 { fill: var(--item); } circle.series-1 { fill: #fff; stroke: var(--item); stroke-width: 1.5; }
table.numbers { border-collapse: collapse; font-size: 12px; }
.numbers td, .numbers th { padding: 2px 8px; text-align: right; }
.facts { color: #555; } nav ol { columns: 2; margin: 0; }
"""


READING = ("One padded batch, drawn from the trace of its own forward pass: the figures follow it from samples "
           "to frames to the transformer's output. They share one time axis, the padded batch's length, so each "
           "frame sits under the samples it came from; padding is grey. Hover a bar or a dot for its numbers.")


def _contents(figures: list[str]) -> str:
    """Links to the figures, by their headings."""
    entries = [re.search(r'id="(fig-[a-z]+)".*?<h2>(.*?)</h2>', f) for f in figures]
    return tag("nav", tag("ol", *(tag("li", tag("a", m.group(2).split(". ", 1)[1], href=f"#{m.group(1)}"))
                                  for m in entries)))


def page(b: Batch, figures: list[str], name: str, path: str) -> str:
    inputs = ", ".join(f"item {i}: {b.seconds(int(n))}" for i, n in enumerate(b.samples))
    heading = tag("h1", f"npw2v2 explain: {html.escape(name)}")
    facts = tag("p", html.escape(f"{b.model!r}; {path}; {inputs}; padded to {b.padded:,} samples, "
                                 f"{b.total_frames} frames."), class_="facts")
    return ("<!DOCTYPE html>\n" + tag("html", tag("head", '<meta charset="utf-8">',
                                                  tag("title", f"npw2v2 explain: {html.escape(name)}"),
                                                  tag("style", STYLE)),
                                      tag("body", heading, facts, tag("p", READING), _contents(figures), *figures),
                                      lang="en") + "\n")


def explain_page(trace: Trace, model, name: str, series: dict, layer: int, head: int, reference: bool,
                 transcripts: list[align.Transcript] | None = None) -> str:
    """The whole page for a traced padded batch: the figures, in the order the batch travels."""
    b = Batch.of(trace, model)
    figures = [waveforms(b), conv_ladder(b), frame_mask(b), activation_sizes(b), attention(b, layer, head),
               ctc_tokens(b, transcripts), promise(series, len(b.samples))]
    return page(b, figures, name, "the reference path" if reference else "the fast path")
