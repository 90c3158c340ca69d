"""See inside a forward pass: the trace of every stage, printed, as data, or saved for porters.

A ``Trace`` is handed to the forward pass, which calls it at each stage with the stage's
array and the facts it used (lengths, kernel, stride, norm); nothing here recomputes what
the model did. Stage names are the ones golden/'s recordings use, so ``compare`` reads
both: input_values, attention_mask, conv_layers.I, conv_features, extract_features,
projected, frame_mask, masked, positional_conv_input (HuBERT's batch norm), positional_embedding,
hidden_states.I, adapter.proj, adapter.layers.I, last_hidden_state, then the head's outputs under transformers' names
(logits, projected_states, projected_quantized_states, codevector_ids, codevector_perplexity).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..core import xvector
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
# The core promise, stage by stage: each item of the padded batch against the item run alone


def differences_from_alone(model, x: np.ndarray, mask: np.ndarray, batched: list[Trace],
                           reference: bool = False) -> list[dict[str, list[float]]]:
    """For each trace of the padded batch ([B, S], mask [B, S]): per stage, each item's largest
    |batched - alone|, running each item alone over its real samples.

    Each lone run is compared stage by stage as it goes (``Against``), so memory holds the
    batched traces and one lone stage, never a lone trace.
    """
    items = len(mask)
    found = [{} for _ in batched]
    for i, n in enumerate(mask.sum(axis=1)):
        model(model.xp.asarray(x[i:i + 1, :n]), reference=reference, trace=Against(batched, i, items, found))
    return found


@dataclass
class Against:
    """A trace for item ``item``'s lone run: each stage is compared with that item's row in every
    batched trace, and the largest difference written to ``found[k][stage][item]``.

    The lone run's shape says what is real: its frames (or samples) are the first ones of the
    batch's row, so the row is cut to the lone array's shape. Masks (bools), stages without a
    batch axis (a perplexity) and stages one run lacks (the attention mask) are left out; the
    stages come in forward order.
    """
    batched: list[Trace]
    item: int
    items: int
    found: list[dict]

    def __call__(self, name, value, **facts):
        if value is None:
            return
        lone = asnumpy(value)
        for trace, found in zip(self.batched, self.found):
            stage = next((s for s in trace.stages if s.name == name), None)
            if stage is None or stage.array.dtype == bool or stage.array.ndim < 2:
                continue
            row = stage.array[self.item][tuple(slice(0, n) for n in lone.shape[1:])]
            found.setdefault(name, [0.0] * self.items)[self.item] = _largest_gap(row, lone[0])


def _largest_gap(a: np.ndarray, b: np.ndarray, block: int = 1 << 20) -> float:
    """max |a - b| in float64, a block of rows at a time: a long first conv layer's float64
    copies would otherwise take several times the memory of the stage itself."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    rows = max(1, block // max(1, a.shape[1]))
    return max((float(np.abs(a[k:k + rows].astype(np.float64) - b[k:k + rows]).max(initial=0.0))
                for k in range(0, len(a), rows)), default=0.0)


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

    for line in family_differences(cfg):
        lines.append(line)
    if lines:
        lines.append("")
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
    add("extract_features", f"[B, T, C]  LayerNorm over the {c} channels of each frame" if cfg.feat_proj_layer_norm
        else "[B, T, C]  the conv features as they are: no LayerNorm (HuBERT's feat_proj_layer_norm false)",
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
    if any(s.name == "positional_conv_input" for s in trace.stages):
        padded = "padded frames zeroed again after it, " if mask.facts["used"] else ""
        add("positional_conv_input", "[B, T, D]  batch norm with the running statistics (HuBERT's "
            f"conv_pos_batch_norm), {padded}read by the conv", trace["positional_conv_input"].shape)
    conformer = cfg.model_type == "wav2vec2-conformer"
    pos = None if conformer else trace["positional_embedding"]
    if conformer:
        lines.append(f"{'':22}no positional conv: transformers builds one (pos_conv_embed) but never runs it")
    elif "layers" in pos.facts:  # data2vec-audio's stack
        between = "; padded frames zeroed between them" if mask.facts["used"] else ""
        add("positional_embedding", f"[B, T, D]  {pos.facts['layers']} convs K={pos.facts['kernel']}, "
            f"{pos.facts['groups']} groups, each then LayerNorm without parameters and GELU{between}; "
            "added to the frames", pos.shape)
    else:
        add("positional_embedding", f"[B, T, D]  grouped conv K={pos.facts['kernel']}, "
            f"{pos.facts['groups']} groups, then GELU; added to the frames", pos.shape)
    lines.append("")
    layers = [s for s in trace.stages if re.fullmatch(r"hidden_states\.\d+", s.name)]
    if conformer:
        _conformer_lines(lines, trace, cfg, len(layers) - 1, mask.facts["used"], add)
    else:
        lines.append(f"Transformer: {len(layers) - 1} layers of {cfg.num_attention_heads} heads, "
                     f"{'pre' if cfg.do_stable_layer_norm else 'post'}-LN"
                     + ("; in every layer the padded frames' keys get the most negative float, so no "
                        "frame attends to padding" if mask.facts["used"] else ""))
    if any(s.name == "position_bias_table" for s in trace.stages):
        table = trace["position_bias_table"]
        buckets, distance = table.facts["buckets"], table.facts["max_distance"]
        add("position_bias_table", f"[H, 2T - 1]  WavLM: a score per head for each offset key - query, from "
            f"{buckets} buckets (one per distance below {buckets // 4} on each side, log-spaced up to {distance}): "
            "layer 0's rel_attn_embed; every layer gates it per head and frame and adds it to its scores",
            table.shape)
    for s in layers:
        role = "the next layer's input" if s is not layers[-1] else "the last layer's output"
        if s is layers[0]:
            role = "frames + positional embedding" + ("" if cfg.do_stable_layer_norm else ", layer-normed") + \
                   ": the first layer's input"
            if conformer:
                role = "the projected frames as they are: the first block's input"
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
        "[B, T, D]" + ("  after the final layer norm" if cfg.do_stable_layer_norm or conformer else ""),
        trace["last_hidden_state"].shape)
    for stage in trace.stages:
        if stage.name in HEAD_STAGES:
            add(stage.name, HEAD_STAGES[stage.name](stage, model), stage.shape)
    return "\n".join(lines)


def _conformer_lines(lines: list, trace, cfg, blocks: int, masked: bool, add) -> None:
    """The conformer's blocks, onto ``lines``: where the positions enter each one, and what its depthwise conv sees."""
    first = trace["hidden_states.0"].facts
    kind = cfg.position_embeddings_type
    lines += [f"Conformer: {blocks} blocks of {cfg.num_attention_heads} heads, each x + FFN/2, x + attention, "
             f"x + conv module, x + FFN/2, LayerNorm"
             + ("; padded keys get the most negative float, so no frame attends to padding" if masked else "")]
    if kind == "relative":
        add("relative_positions", "[2T - 1, D]  sinusoids of every offset query - key, T - 1 ... -(T - 1): in each "
            "block linear_pos makes a key per head and offset, scored as (q + pos_bias_v) . key, rel-shifted to "
            "[T, T] and added to (q + pos_bias_u) . k", trace["relative_positions"].shape)
    elif kind == "rotary":
        add("rotary_cos", f"[T, K]  cos of frame t's angles t * {cfg.rotary_embedding_base:g}^(-2c/K) (K = D/H), with "
            "sin: each block rotates its attention input's head slices by them before linear_q and linear_k "
            "(values unrotated)", trace["rotary_cos"].shape)
    else:
        lines.append(f"{'':22}no positions (position_embeddings_type null): only the conv module tells frames apart")
    sees = "the padded frames' values, as transformers" if first["conv_sees_padding"] and masked else         "zeros on padded frames, as each item alone" if masked else "every frame (no mask)"
    lines.append(f"{'':22}conv module: LayerNorm, pointwise conv + GLU, depthwise conv K={first['depthwise_kernel']} "
                 f"(reads {sees}), batch norm (running statistics), {cfg.hidden_act}, pointwise conv")


def _logits_text(stage, model) -> str:
    kind = model.kind
    if kind.endswith("SequenceClassification"):
        return f"[B, labels]  {len(model.labels)} label scores per input, from the mean of its valid frames"
    if kind.endswith("FrameClassification"):
        return f"[B, T, labels]  {len(model.labels)} label scores per frame"
    if kind.endswith("XVector"):
        return f"[B, X]  x-vector head: the speaker classifier's {stage.shape[-1]} scores of each embedding"
    return f"[B, T, V]  CTC head: {stage.shape[-1]} token scores per frame"


# What the head outputs are, for the walkthrough.
HEAD_STAGES = {
    "logits": _logits_text,
    "embeddings": lambda stage, model: (
        f"[B, X]  x-vector head: projector, {len(model.config.tdnn_dim)} TDNN layers ({xvector.tdnn_reduction(model.config)} "
        f"frames off), mean and std over each input's valid frames, Linear -> X = {stage.shape[-1]}"),
    "projected_states": lambda stage, model: "[B, T, P]  pretraining: each frame's context vector, projected",
    "projected_quantized_states": lambda stage, model: "[B, T, P]  pretraining: the quantized conv features, projected",
    "codevector_ids": lambda stage, model: "[B, T, G]  pretraining: the codevector each group picked (argmax)",
    "codevector_perplexity": lambda stage, model: "a number  pretraining: codevectors in use over the batch's valid frames",
}

# ---------------------------------------------------------------------------
# Comparing two sets of stage activations
#
# B is the reference. The comparison fails closed: whatever keeps a stage from being compared
# as numbers (shapes that differ, NaN or inf in one file only, frame masks that differ, a
# reference stage that A lacks, no stage in common) is a failure named with its stage, never
# a pass by default.


def family_differences(cfg) -> list[str]:
    """For a model other than wav2vec 2.0, a line on what it is and one per stage that differs."""
    if cfg.model_type == "wavlm":
        return ["WavLM: wav2vec 2.0's encoder without the quantizer; what differs from wav2vec 2.0:",
                f"  position_bias_table: attention scores get a bias by offset key - query, {cfg.num_buckets} "
                f"buckets up to {cfg.max_bucket_distance} frames, one table from layer 0 shared by every layer",
                "  hidden_states: each layer weighs that bias per head and frame by a gate from its attention input "
                "(gru_rel_pos_linear, gru_rel_pos_const)",
                "  heads: CTC, sequence and frame classifiers; no quantizer (x-vector heads not run)"]
    if cfg.model_type == "wav2vec2-conformer":
        where = {"relative": "relative_positions: Transformer-XL sinusoids of every offset, through each block's "
                             "linear_pos into its attention scores (pos_bias_u, pos_bias_v)",
                 "rotary": "rotary_cos: each block's attention input rotated by frame before linear_q and linear_k",
                 None: "no positions: position_embeddings_type null"}[cfg.position_embeddings_type]
        return ["Wav2Vec2-Conformer: wav2vec 2.0's feature encoder and projection; what differs from wav2vec 2.0:",
                "  positional_embedding: none (pos_conv_embed is built by transformers but never run)",
                f"  {where}",
                f"  hidden_states: conformer blocks (half-step FFNs, attention, conv module with a depthwise conv "
                f"K={cfg.conv_depthwise_kernel_size} and batch norm, LayerNorm), then the encoder's LayerNorm",
                "  heads: CTC, sequence and frame classifiers, x-vector; its pretraining heads are not run"]
    if cfg.model_type == "data2vec-audio":
        return ["data2vec-audio: wav2vec 2.0's post-LN encoder without the quantizer; what differs from wav2vec 2.0:",
                "  conv_layers: every conv layer layer-normed (feat_extract_norm 'layer' always)",
                f"  positional_embedding: a stack of {cfg.num_conv_pos_embeddings} convs of kernel "
                f"{cfg.conv_pos_kernel_size}, each with a LayerNorm without parameters, instead of one "
                "weight-normed conv",
                "  heads: CTC, sequence and frame classifiers, x-vector; no quantizer"]
    if cfg.model_type in ("unispeech", "unispeech-sat"):
        name, heads = {"unispeech": ("UniSpeech", "CTC and sequence classifier"),
                       "unispeech-sat": ("UniSpeech-SAT", "CTC, sequence and frame classifiers, x-vector")}[cfg.model_type]
        return [f"{name}: wav2vec 2.0's encoder, the same blocks under the names {cfg.model_type.replace('-', '_')}.*; "
                "no stage differs at inference",
                f"  heads: {heads}; its pretraining heads are not run"]
    if cfg.model_type != "hubert":
        return []
    lines = ["HuBERT: wav2vec 2.0's encoder without the quantizer; what differs from wav2vec 2.0 here:"]
    if not cfg.feat_proj_layer_norm:
        lines.append("  extract_features: no LayerNorm before the projection (feat_proj_layer_norm false)")
    if cfg.conv_pos_batch_norm:
        lines.append("  positional_conv_input: batch norm before the positional conv, whose kernel is plain, "
                     "not weight-normed (conv_pos_batch_norm)")
    if cfg.feat_proj_layer_norm and not cfg.conv_pos_batch_norm:
        lines.append("  no stage: the same blocks under the names hubert.*")
    lines.append("  heads: CTC, sequence classifier, final_proj (embed --final-proj); no quantizer, no frame classifier")
    return lines


STAGE_ORDER = ["input_values", "attention_mask", "conv_layers", "conv_features", "features", "extract_features",
               "projected", "frame_mask", "masked", "positional_conv_input", "positional_embedding", "position_bias_table", "relative_positions", "rotary_cos", "hidden_states", "adapter.proj",
               "adapter.layers", "last_hidden_state", "logits", "embeddings", "projected_states", "projected_quantized_states",
               "codevector_ids", "codevector_perplexity", "contrastive_logits"]

# Each case's frame mask, under npw2v2's and golden's name (True for real frames) or fairseq's
# (True for padding). Where a file has both, frame_mask is the one read.
FRAME_MASKS = (("frame_mask", False), ("frame_padding_mask", True))


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
    """One stage both files have: how far A's array is from the reference's (B's) on the frames compared."""
    name: str
    max_abs: float  # over the positions finite in both files; inf when the shapes differ
    max_rel: float  # max|a - b| / max(1, max|b|), golden's measure (max|b| over b's finite values)
    shape_a: tuple
    shape_b: tuple
    exact: bool = False  # integers or bools (masks, codevector ids): any difference is a problem
    # Why the stage fails whatever the tolerance, as "what: details" ("shapes differ: ...", joined
    # by "; " when several); None when the numbers are comparable.
    problem: str | None = None

    @property
    def comparable(self) -> bool:
        return self.problem is None

    def over(self, tolerance: float) -> bool:
        """Whether the stage fails: a problem, or a relative difference over the tolerance."""
        return self.problem is not None or not self.max_rel <= tolerance  # `not <=`, so that a NaN fails


@dataclass
class MaskCheck:
    """One case's frame masks in the two files: the same, different (a failure), or in one file only."""
    name: str  # the reference's mask ("batch.frame_padding_mask"), or A's where B has none
    mismatch: str | None = None  # "length mismatch" (shapes differ) or "frame mismatch" (values differ)
    detail: str = ""  # what differs, or which file alone has the mask


@dataclass
class Comparison:
    """A compared with the reference B: what ``report`` prints and judges."""
    stages: list[Difference]  # the stages both files have, in forward order
    missing: list[str]  # reference stages A lacks: a failure
    extra: list[str]  # stages in A only: reported, not compared
    masks: list[MaskCheck]  # one per case with a frame mask in either file


def _mask_case(name: str) -> tuple[str, bool] | None:
    """(case prefix, whether True means padding) of a frame mask's name; None for any other stage."""
    for key, padding in FRAME_MASKS:
        if name == key or name.endswith("." + key):
            return name[:len(name) - len(key)], padding
    return None


def frame_masks(arrays: dict) -> dict[str, tuple[str, np.ndarray]]:
    """Each case's frame mask, by case prefix ("batch." or "" for a file of one case): (its name,
    [B, T] bool, True for real frames, whichever convention the file used)."""
    masks = {}
    for name in sorted(arrays, key=lambda n: n.endswith("frame_mask")):  # frame_mask last: it wins
        found = _mask_case(name)
        if found:
            mask = np.asarray(arrays[name]).astype(bool)
            masks[found[0]] = (name, ~mask if found[1] else mask)
    return masks


def _valid_frames(name: str, shape: tuple, masks_a: dict, masks_b: dict) -> np.ndarray | None:
    """The frames to compare a stage on ([B, T] bool), or None for the whole array.

    The case's frame mask, where it fits the array's [B, T] axes. Where both files have one that
    fits, the frames either calls real: a frame mismatch then cannot hide a difference. The frame
    masks themselves are compared whole.
    """
    if len(shape) < 2 or _mask_case(name) is not None:
        return None
    case = _stage_key(name)[0]
    prefix = f"{case}." if case else ""
    fitting = [masks[prefix][1] for masks in (masks_a, masks_b)
               if prefix in masks and masks[prefix][1].shape == tuple(shape[:2])]
    return np.logical_or.reduce(fitting) if fitting else None


def _first(where: np.ndarray) -> tuple:
    """The index of the first True of a bool array."""
    return tuple(int(i) for i in np.argwhere(where)[0])


def _value(x: np.ndarray, at: tuple) -> str:
    v = x[at].item()
    return f"{v:.7g}" if isinstance(v, float) else str(v)


def _difference(name: str, x: np.ndarray, y: np.ndarray, valid: np.ndarray | None) -> Difference:
    """How far A's array x is from the reference's y, on the valid frames ([B, T] bool; None: everywhere).

    Equal non-finite values (-inf logits of the negatives equal to their target, in golden/'s
    pretraining recordings) count as equal; the numbers are taken over the positions finite in both.
    """
    if x.shape != y.shape:
        return Difference(name, np.inf, np.inf, x.shape, y.shape,
                          problem=f"shapes differ: {list(x.shape)} in A, {list(y.shape)} in B")
    where = np.ones(x.shape, bool) if valid is None else \
        np.broadcast_to(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x.shape)
    exact = x.dtype.kind in "biu" or y.dtype.kind in "biu"
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    finite = np.isfinite(xf) & np.isfinite(yf) & where
    problems = []
    same = (xf == yf) | (np.isnan(xf) & np.isnan(yf))
    clash = where & ~finite & ~same  # NaN or inf on one side, a number or another NaN/inf on the other
    if clash.any():
        at = _first(clash)
        problems.append(f"non-finite values differ: {int(clash.sum())} of {int(where.sum())}, "
                        f"first at {at}: {_value(x, at)} in A, {_value(y, at)} in B")
    if exact:
        # integers compared as they are: float64 would round those past 2**53
        unequal = finite & ((x != y) if x.dtype.kind in "biu" and y.dtype.kind in "biu" else (xf != yf))
        if unequal.any():
            at = _first(unequal)
            what = "bools" if "b" in (x.dtype.kind, y.dtype.kind) else "integers"
            problems.append(f"{what} differ, compared exactly: {int(unequal.sum())} of {int(where.sum())}, "
                            f"first at {at}: {_value(x, at)} in A, {_value(y, at)} in B")
    gap = np.abs(xf[finite] - yf[finite])
    scale = np.abs(yf[where & np.isfinite(yf)])  # an inf in B must not make every relative error 0
    max_abs = float(gap.max()) if gap.size else 0.0
    max_rel = max_abs / max(1.0, float(scale.max()) if scale.size else 0.0)
    return Difference(name, max_abs, max_rel, x.shape, y.shape, exact, "; ".join(problems) or None)


def compare(a: dict, b: dict) -> list[Difference]:
    """The stages both dicts of arrays have, A's against the reference B's, in forward order, on
    valid frames where a frame mask says which."""
    masks_a, masks_b = frame_masks(a), frame_masks(b)
    return [_difference(name, np.asarray(a[name]), np.asarray(b[name]),
                        _valid_frames(name, np.shape(a[name]), masks_a, masks_b))
            for name in sorted(set(a) & set(b), key=_stage_key)]


def check_masks(masks_a: dict, masks_b: dict) -> list[MaskCheck]:
    """Each case's frame masks (from ``frame_masks``) in A against the reference's."""
    checks = []
    for case in sorted(masks_a.keys() | masks_b.keys()):
        if case not in masks_b:
            checks.append(MaskCheck(masks_a[case][0], detail="in A only: its valid frames are used for both files"))
        elif case not in masks_a:
            checks.append(MaskCheck(masks_b[case][0], detail="in B only: its valid frames are used for both files"))
        else:
            checks.append(_mask_mismatch(*masks_a[case], *masks_b[case]))
    return checks


def _mask_mismatch(name_a: str, x: np.ndarray, name_b: str, y: np.ndarray) -> MaskCheck:
    """One case's frame masks in both files ([B, T] bool, True for real frames): a length or frame mismatch, or none."""
    if x.shape != y.shape:
        return MaskCheck(name_b, "length mismatch", f"{name_a} is {list(x.shape)} in A, {name_b} {list(y.shape)} in B")
    differ = x != y
    if not differ.any():
        return MaskCheck(name_b)
    per_item = f"; valid frames per item: {_per_item(x.sum(1))} in A, {_per_item(y.sum(1))} in B" if x.ndim == 2 else ""
    return MaskCheck(name_b, "frame mismatch", f"{name_a} in A and {name_b} in B differ at {int(differ.sum())} of "
                                               f"{x.size} frames, first at {_first(differ)}{per_item}")


def comparison(a: dict, b: dict) -> Comparison:
    """A's stages against the reference B's: the common stages, those one file lacks, the frame masks."""
    # Frame masks are judged by check_masks, which also matches npw2v2's name with fairseq's inverted
    # one, and a mask in one file only is used for both: neither is a missing stage.
    missing = [n for n in set(b) - set(a) if _mask_case(n) is None]
    extra = [n for n in set(a) - set(b) if _mask_case(n) is None]
    return Comparison(compare(a, b), sorted(missing, key=_stage_key), sorted(extra, key=_stage_key),
                      check_masks(frame_masks(a), frame_masks(b)))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _checked_tolerance(tolerance) -> float:
    t = float(tolerance)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"the tolerance must be a finite number >= 0, got {tolerance}")
    return t


def failures(result: Comparison, tolerance: float) -> list[str]:
    """Why A does not match the reference, the most basic first; empty when it does."""
    tolerance = _checked_tolerance(tolerance)
    reasons = [] if result.stages else ["no stage names in common"]
    reasons += [f"{m.mismatch} in {m.name}" for m in result.masks if m.mismatch]
    bad = next((d for d in result.stages if d.over(tolerance)), None)
    if bad is not None:
        reasons.append(f"first failing stage: {bad.name} ({bad.problem.split(':')[0]})" if bad.problem else
                       f"first stage over the tolerance {tolerance:g}: {bad.name}")
    if result.missing:
        reasons.append(f"{_count(len(result.missing), 'reference stage')} missing from A")
    return reasons


def report(result: Comparison, tolerance: float) -> tuple[str, bool]:
    """The printed comparison and whether A matches the reference: a table of the common stages
    (shape, max abs, max rel, `<- over`), the problems, the notes, and a verdict line."""
    reasons = failures(result, tolerance)
    tolerance = _checked_tolerance(tolerance)
    width = max([34] + [len(d.name) + 2 for d in result.stages])
    lines = [f"{'stage':<{width}}{'shape':<18}{'max abs':>11}{'max rel':>11}"] if result.stages else []
    for d in result.stages:
        numbers = f"{'-':>11}" * 2 if d.shape_a != d.shape_b else f"{d.max_abs:>11.2e}{d.max_rel:>11.2e}"
        mark = "  <- fails" if d.problem else "  <- over" if d.over(tolerance) else ""
        lines.append(f"{d.name:<{width}}{str(list(d.shape_a)):<18}{numbers}{mark}")
    problems = [f"  {d.name}: {d.problem}" for d in result.stages if d.problem]
    problems += [f"  {m.name}: {m.mismatch}: {m.detail}" for m in result.masks if m.mismatch]
    if result.missing:
        problems.append(f"  missing from A: {_count(len(result.missing), 'reference stage')}: "
                        f"{', '.join(result.missing)}")
    if not result.stages:
        problems.append("  no stage names in common: nothing was compared")
    if problems:
        lines += ["", "problems:", *problems]
    notes = [f"  {m.name}: {m.detail}" for m in result.masks if not m.mismatch and m.detail]
    if result.extra:
        shown = ", ".join(result.extra[:10]) + (", ..." if len(result.extra) > 10 else "")
        notes.append(f"  {_count(len(result.extra), 'stage')} in A only, not compared: {shown}")
    if notes:
        lines += ["", "notes:", *notes]
    lines += ["", "; ".join(reasons) if reasons else f"all {len(result.stages)} common stages within {tolerance:g}"]
    return "\n".join(lines), not reasons
