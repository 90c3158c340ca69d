"""See inside a forward pass: the trace of every stage, printed, as data, or saved for porters.

A ``Trace`` is handed to the forward pass, which calls it at each stage with the stage's
array and the facts it used (lengths, kernel, stride, norm); nothing here recomputes what
the model did. Stage names are the ones golden/'s recordings use, so ``compare`` reads
both: input_values, attention_mask, conv_layers.I, conv_features, extract_features,
projected, frame_mask, masked, positional_embedding, hidden_states.I, adapter.proj,
adapter.layers.I, last_hidden_state, then the head's outputs under transformers' names
(logits, projected_states, projected_quantized_states, codevector_ids, codevector_perplexity).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..core.backend import asnumpy


@dataclass
class Stage:
    name: str
    array: np.ndarray | None
    facts: dict = field(default_factory=dict)

    @property
    def shape(self) -> list[int] | None:
        return None if self.array is None else list(self.array.shape)


class Trace:
    """Collects the stages of one forward pass: ``model(x, mask, trace=trace)``."""

    def __init__(self):
        self.stages: list[Stage] = []

    def __call__(self, name, value, **facts):
        self.stages.append(Stage(name, None if value is None else asnumpy(value), facts))

    def __getitem__(self, name) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every stage's array by stage name, as ``--save`` writes them."""
        return {s.name: np.ascontiguousarray(s.array) for s in self.stages if s.array is not None}

    def as_data(self) -> list[dict]:
        """The trace without the arrays, for --json."""
        return [{"stage": s.name, "shape": s.shape, **{k: _plain(v) for k, v in s.facts.items()}}
                for s in self.stages]


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------
# The printed walkthrough


def _per_item(values) -> str:
    return " / ".join(str(int(v)) for v in values)


def describe(trace: Trace, model, rate: int) -> str:
    """The trace as a readable walkthrough, stage by stage."""
    cfg = model.config
    lines = []

    def add(name, text="", shape=None):
        shape_text = "" if shape is None else str(shape)
        lines.append(f"{name:<21} {shape_text:<18}{text}".rstrip())

    samples = trace["input_values"].facts["lengths"]
    per_layer = trace["conv_lengths"].facts["per_layer"]
    frames = per_layer[-1]
    x = trace["input_values"]
    add("input_values", f"[B, S]  {len(samples)} inputs at {rate} Hz, right-padded with zeros to "
        f"{x.shape[1]} samples", x.shape)
    for i, n in enumerate(samples):
        lines.append(f"{'':22}item {i}: {int(n)} samples = {n / rate:.2f} s"
                     + (f", then {x.shape[1] - int(n)} samples of padding" if n < x.shape[1] else ""))
    if any(s.name == "attention_mask" for s in trace.stages):
        add("attention_mask", f"[B, S]  True for the real samples: {_per_item(samples)}",
            trace["attention_mask"].shape)
    lines.append("")
    lines.append("Feature encoder: each conv layer makes floor((L - K) / stride) + 1 frames of its input's L")
    previous = samples
    for i, lengths in enumerate(per_layer):
        stage = trace[f"conv_layers.{i}"]
        k, s = stage.facts["kernel"], stage.facts["stride"]
        arithmetic = ", ".join(f"({int(a)} - {k}) // {s} + 1 = {int(b)}" for a, b in zip(previous, lengths))
        add(f"conv_layers.{i}", f"K={k} stride={s}: {arithmetic}", stage.shape)
        if stage.facts.get("norm"):
            lines.append(f"{'':22}then {stage.facts['norm']}")
        previous = lengths
    c, d = trace["conv_features"].shape[-1], trace["projected"].shape[-1]
    total = trace["conv_features"].shape[1]
    lines.append("")
    add("conv_features", f"[B, T, C]  T = {total} frames for the longest input, one per "
        f"{cfg.frame_stride} samples ({1000 * cfg.frame_stride / rate:g} ms); C = {c} channels, fixed by the weights",
        trace["conv_features"].shape)
    for i, t in enumerate(frames):
        lines.append(f"{'':22}item {i}: {int(t)} frames" + (f" + {total - int(t)} padding frames" if t < total else ""))
    add("extract_features", f"[B, T, C]  LayerNorm over the {c} channels of each frame",
        trace["extract_features"].shape)
    add("projected", f"[B, T, D]  Linear {c} -> {d}, frame by frame: D = {d} is the model width",
        trace["projected"].shape)
    mask = trace["frame_mask"]
    used = "used: padded frames are zeroed and never attended to" if mask.facts["used"] else \
        "not used: no attention mask, so every frame counts as real"
    add("frame_mask", f"[B, T]  True for {_per_item(frames)} frames; {used}", mask.shape)
    if any(s.name == "masked" for s in trace.stages):
        add("masked", "[B, T, D]  padded frames set to 0, as zero padding looks to a lone input",
            trace["masked"].shape)
    pos = trace["positional_embedding"]
    add("positional_embedding", f"[B, T, D]  grouped conv K={pos.facts['kernel']}, "
        f"{pos.facts['groups']} groups, then GELU; added to the frames", pos.shape)
    lines.append("")
    layers = [s for s in trace.stages if re.fullmatch(r"hidden_states\.\d+", s.name)]
    lines.append(f"Transformer: {len(layers) - 1} layers of {cfg.num_attention_heads} heads, "
                 f"{'pre' if cfg.do_stable_layer_norm else 'post'}-LN"
                 + ("; in every layer the padded frames' keys get the most negative float, so no "
                    "frame attends to padding" if mask.facts["used"] else ""))
    for s in layers:
        role = "the next layer's input" if s is not layers[-1] else "the last layer's output"
        if s is layers[0]:
            role = "frames + positional embedding" + ("" if cfg.do_stable_layer_norm else ", layer-normed") + \
                   ": the first layer's input"
        add(s.name, f"[B, T, D]  {role}", s.shape)
    adapter = [s for s in trace.stages if s.name.startswith("adapter.")]
    if adapter:
        lines.append("")
        lines.append("Down-sampling adapter: each conv (padding 1) makes floor((L + 2 - K) / stride) + 1 frames"
                     + ("; padded frames are zeroed before each" if mask.facts["used"] else ""))
        previous = frames
        for stage in adapter:
            if "lengths" not in stage.facts:
                add(stage.name, f"[B, T, O]  {stage.facts['note']}", stage.shape)
                continue
            k, s_ = stage.facts["kernel"], stage.facts["stride"]
            arithmetic = ", ".join(f"({int(a)} + 2 - {k}) // {s_} + 1 = {int(b)}"
                                   for a, b in zip(previous, stage.facts["lengths"]))
            add(stage.name, f"K={k} stride={s_}, then GLU: {arithmetic}", stage.shape)
            previous = stage.facts["lengths"]
    add("last_hidden_state", "[B, T, O]  the adapter's output" if adapter else
        "[B, T, D]" + ("  after the final layer norm" if cfg.do_stable_layer_norm else ""), trace["last_hidden_state"].shape)
    for stage in trace.stages:
        if stage.name in HEAD_STAGES:
            add(stage.name, HEAD_STAGES[stage.name](stage, model), stage.shape)
    return "\n".join(lines)


def _logits_text(stage, model) -> str:
    kind = model.kind
    if kind.endswith("SequenceClassification"):
        return f"[B, labels]  {len(model.labels)} label scores per input, from the mean of its valid frames"
    if kind.endswith("FrameClassification"):
        return f"[B, T, labels]  {len(model.labels)} label scores per frame"
    return f"[B, T, V]  CTC head: {stage.shape[-1]} token scores per frame"


# What the head outputs are, for the walkthrough.
HEAD_STAGES = {
    "logits": _logits_text,
    "projected_states": lambda stage, model: "[B, T, P]  pretraining: each frame's context vector, projected",
    "projected_quantized_states": lambda stage, model: "[B, T, P]  pretraining: the quantized conv features, projected",
    "codevector_ids": lambda stage, model: "[B, T, G]  pretraining: the codevector each group picked (argmax)",
    "codevector_perplexity": lambda stage, model: "a number  pretraining: codevectors in use over the batch's valid frames",
}


# ---------------------------------------------------------------------------
# Comparing two sets of stage activations


STAGE_ORDER = ["input_values", "attention_mask", "conv_layers", "conv_features", "features", "extract_features",
               "projected", "frame_mask", "masked", "positional_embedding", "hidden_states", "adapter.proj",
               "adapter.layers", "last_hidden_state", "logits", "projected_states", "projected_quantized_states",
               "codevector_ids", "codevector_perplexity", "contrastive_logits"]


def _stage_key(name: str):
    """Order "CASE.STAGE" names by case, then by where the stage comes in the forward pass."""
    for i, stage in enumerate(STAGE_ORDER):
        match = re.search(rf"(^|\.){stage}(\.(\d+))?$", name)
        if match:
            case = name[:match.start()]
            return case, i, int(match.group(3) or 0)
    return name, len(STAGE_ORDER), 0


@dataclass
class Difference:
    name: str
    max_abs: float
    max_rel: float  # max|a - b| / max(1, max|b|), golden's measure
    shape_a: tuple
    shape_b: tuple

    @property
    def comparable(self) -> bool:
        return self.shape_a == self.shape_b


def _valid_frames(arrays: dict, name: str, shape: tuple):
    """The frame mask of the stage's case ("CASE.frame_mask"), when it fits the array's [B, T] axes."""
    case = _stage_key(name)[0]
    prefix = f"{case}." if case else ""
    for key, padding in (("frame_mask", False), ("frame_padding_mask", True)):  # npw2v2's, fairseq's
        mask = arrays.get(prefix + key)
        if mask is not None and len(shape) >= 2 and mask.shape == tuple(shape[:2]):
            return ~mask.astype(bool) if padding else mask.astype(bool)
    return None


def compare(a: dict, b: dict) -> list[Difference]:
    """Stage-by-stage differences between two dicts of arrays, on valid frames where a mask says which."""
    diffs = []
    for name in sorted(set(a) & set(b), key=_stage_key):
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            diffs.append(Difference(name, np.inf, np.inf, x.shape, y.shape))
            continue
        valid = _valid_frames(a, name, x.shape)
        if valid is None:
            valid = _valid_frames(b, name, x.shape)
        x, y = x.astype(np.float64), y.astype(np.float64)
        if valid is not None:
            x, y = x[valid], y[valid]
        gap = float(np.abs(x - y).max()) if x.size else 0.0
        diffs.append(Difference(name, gap, gap / max(1.0, float(np.abs(y).max()) if y.size else 1.0),
                                a[name].shape, b[name].shape))
    return diffs
