"""The heads on top of the encoder, and which one a checkpoint carries.

A wav2vec 2.0 checkpoint is one of transformers' model classes, named in its config's
``architectures``; each adds a head to the same encoder:

    Wav2Vec2Model                        none: last_hidden_state is the output
    Wav2Vec2ForCTC                       lm_head: a token score per frame, logits [B, T, V]
    Wav2Vec2ForPreTraining               quantizer, project_q, project_hid: the pretraining targets
    Wav2Vec2ForSequenceClassification    projector, mean over valid frames, classifier: logits [B, labels]
    Wav2Vec2ForAudioFrameClassification  classifier on every frame: logits [B, T, labels]
    Wav2Vec2ForXVector                   projector, TDNN layers, statistics pooling: a speaker
                                         embedding [B, X] and logits [B, X] (npw2v2.core.xvector)

The classifiers may read a learned, softmax-weighted sum of every hidden state
(``use_weighted_layer_sum``) instead of the last one. The pretraining head quantizes each
frame's conv features (``extract_features``) into a codevector target, projects targets and
context vectors into one space, and scores them by cosine similarity (``contrastive_logits``).
P below is proj_codevector_dim, G num_codevector_groups, N the number of negatives.
"""
from __future__ import annotations

from .backend import get_xp
from .config import Config
from .layers import linear, softmax
from .xvector import tdnn_layer, tdnn_shapes, xvector_head

BASE = "Wav2Vec2Model"
CTC = "Wav2Vec2ForCTC"
PRETRAINING = "Wav2Vec2ForPreTraining"
SEQUENCE_CLASSIFICATION = "Wav2Vec2ForSequenceClassification"
FRAME_CLASSIFICATION = "Wav2Vec2ForAudioFrameClassification"
XVECTOR = "Wav2Vec2ForXVector"
# HuBERT's pretraining projection alone (ContentVec's final_proj), as the converted ContentVec
# checkpoints name it: no transformers class has it (npw2v2.core.hubert.final_projection).
FINAL_PROJ = "HubertModelWithFinalProj"
KINDS = (BASE, CTC, PRETRAINING, SEQUENCE_CLASSIFICATION, FRAME_CLASSIFICATION, XVECTOR, FINAL_PROJ)
# The parameter that tells each head apart, in the order they are looked for: an x-vector head
# has a projector and a classifier too, and a sequence classifier a classifier, so the TDNN
# layers must be seen first, then the projector.
MARKERS = {"lm_head": CTC, "quantizer": PRETRAINING, "tdnn": XVECTOR, "projector": SEQUENCE_CLASSIFICATION,
           "classifier": FRAME_CLASSIFICATION, "final_proj": FINAL_PROJ}
HEAD_NAMES = {BASE: "no head", CTC: "CTC head", PRETRAINING: "pretraining heads",
              SEQUENCE_CLASSIFICATION: "sequence classifier", FRAME_CLASSIFICATION: "frame classifier",
              XVECTOR: "x-vector head", FINAL_PROJ: "final_proj"}
NOT_SUPPORTED = {
    "UniSpeechForPreTraining": "UniSpeech's pretraining heads (quantizer, CTC projection); its encoder runs as "
                               "UniSpeechModel",
    "UniSpeechSatForPreTraining": "UniSpeech-SAT's pretraining heads (quantizer, speaker projection); its encoder "
                                  "runs as UniSpeechSatModel",
    "Wav2Vec2ConformerForPreTraining": "Wav2Vec2-Conformer's pretraining heads (quantizer, projections); its encoder "
                                       "runs as Wav2Vec2ConformerModel",
    "Wav2Vec2BertForPreTraining": "w2v-BERT's pretraining heads (transformers has no such class); its encoder "
                                  "runs as Wav2Vec2BertModel",
}
# Each family's classes as the wav2vec 2.0 kind they share a head with, and the kinds a family has.
FAMILY_CLASSES = {"HubertModel": BASE, "HubertForCTC": CTC, "HubertForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "Data2VecAudioModel": BASE, "Data2VecAudioForCTC": CTC,
                  "Data2VecAudioForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "Data2VecAudioForAudioFrameClassification": FRAME_CLASSIFICATION,
                  "Data2VecAudioForXVector": XVECTOR,
                  "UniSpeechModel": BASE, "UniSpeechForCTC": CTC,
                  "UniSpeechForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "UniSpeechSatModel": BASE, "UniSpeechSatForCTC": CTC,
                  "UniSpeechSatForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "UniSpeechSatForAudioFrameClassification": FRAME_CLASSIFICATION,
                  "UniSpeechSatForXVector": XVECTOR,
                  "WavLMModel": BASE, "WavLMForCTC": CTC, "WavLMForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "WavLMForAudioFrameClassification": FRAME_CLASSIFICATION, "WavLMForXVector": XVECTOR,
                  "Wav2Vec2ConformerModel": BASE, "Wav2Vec2ConformerForCTC": CTC,
                  "Wav2Vec2ConformerForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "Wav2Vec2ConformerForAudioFrameClassification": FRAME_CLASSIFICATION,
                  "Wav2Vec2ConformerForXVector": XVECTOR,
                  "Wav2Vec2BertModel": BASE, "Wav2Vec2BertForCTC": CTC,
                  "Wav2Vec2BertForSequenceClassification": SEQUENCE_CLASSIFICATION,
                  "Wav2Vec2BertForAudioFrameClassification": FRAME_CLASSIFICATION,
                  "Wav2Vec2BertForXVector": XVECTOR}
FAMILY_KINDS = {"wav2vec2": set(KINDS) - {FINAL_PROJ}, "hubert": {BASE, CTC, SEQUENCE_CLASSIFICATION, FINAL_PROJ},
                "data2vec-audio": {BASE, CTC, SEQUENCE_CLASSIFICATION, FRAME_CLASSIFICATION, XVECTOR},
                "unispeech": {BASE, CTC, SEQUENCE_CLASSIFICATION},
                "unispeech-sat": {BASE, CTC, SEQUENCE_CLASSIFICATION, FRAME_CLASSIFICATION, XVECTOR},
                "wavlm": {BASE, CTC, SEQUENCE_CLASSIFICATION, FRAME_CLASSIFICATION, XVECTOR},
                "wav2vec2-conformer": {BASE, CTC, SEQUENCE_CLASSIFICATION, FRAME_CLASSIFICATION, XVECTOR},
                "wav2vec2-bert": {BASE, CTC, SEQUENCE_CLASSIFICATION, FRAME_CLASSIFICATION, XVECTOR}}


FAMILY_PREFIX = {"hubert": "Hubert", "data2vec-audio": "Data2VecAudio", "unispeech": "UniSpeech",
                 "unispeech-sat": "UniSpeechSat", "wavlm": "WavLM",
                 "wav2vec2-conformer": "Wav2Vec2Conformer", "wav2vec2-bert": "Wav2Vec2Bert"}  # of their transformers classes


def class_name(kind: str, model_type: str) -> str:
    """The transformers class a kind is in a model's family: Wav2Vec2ForCTC is HubertForCTC for "hubert"."""
    prefix = FAMILY_PREFIX.get(model_type)
    if prefix is None:
        return kind
    # "UniSpeech" begins "UniSpeechSat...": the prefix must be followed by the class's own part.
    return next((name for name, k in FAMILY_CLASSES.items()
                 if k == kind and name.startswith(prefix) and name[len(prefix):].startswith(("Model", "For"))), kind)


def kind_of_names(names) -> str | None:
    """The head that tensor or parameter names carry (top-level parts: lm_head, quantizer, ...), or None."""
    tops = {name.split(".")[0] for name in names}
    return next((kind for marker, kind in MARKERS.items() if marker in tops), None)


def model_kind(cfg: Config, names=None) -> str:
    """Which model a config and its tensors (names, when known) make: one of KINDS.

    The config's ``architectures`` decides, except that tensors of a head are used when it
    names no head (``Wav2Vec2Model``, as wav2vec2-xls-r-300m does for a file holding the
    quantizer), and that a pretraining checkpoint saved without its heads is the bare encoder.
    """
    unsupported = [a for a in cfg.architectures if a in NOT_SUPPORTED]
    if unsupported:
        raise ValueError(f"{unsupported[0]}: npw2v2 does not run {NOT_SUPPORTED[unsupported[0]]}")
    named = next((FAMILY_CLASSES.get(a, a) for a in cfg.architectures if FAMILY_CLASSES.get(a, a) in KINDS), BASE)
    found = kind_of_names(names or ())
    if names is None:
        kind = named
    elif named == BASE:
        kind = found or BASE
    elif named == PRETRAINING and found is None:
        kind = BASE  # e.g. a pretrained model converted before npw2v2 kept the quantizer
    else:
        kind = named
    if kind not in FAMILY_KINDS[cfg.model_type]:
        raise ValueError(f"{cfg.model_type} models have no {HEAD_NAMES[kind]} in transformers: "
                         f"{kind} is not a {cfg.model_type} class")
    if cfg.add_adapter and kind not in (BASE, CTC):
        raise ValueError(f"config: add_adapter with {kind}: transformers builds the down-sampling adapter "
                         "only under the bare encoder and the CTC head")
    return kind


def head_shapes(cfg: Config, kind: str) -> dict[str, tuple[int, ...]]:
    """The tensors of a head, with their shapes."""
    d, labels = cfg.hidden_size, cfg.num_labels
    weighted = {"layer_weights": (cfg.num_hidden_layers + 1,)} if cfg.use_weighted_layer_sum else {}
    if kind == CTC:
        width = cfg.adapter_width if cfg.add_adapter else d
        return {"lm_head.weight": (cfg.vocab_size, width), "lm_head.bias": (cfg.vocab_size,)}
    if kind == PRETRAINING:
        g, v, p = cfg.num_codevector_groups, cfg.num_codevectors_per_group, cfg.proj_codevector_dim
        return {"quantizer.codevectors": (1, g * v, cfg.codevector_dim // g),
                "quantizer.weight_proj.weight": (g * v, cfg.conv_dim[-1]), "quantizer.weight_proj.bias": (g * v,),
                "project_hid.weight": (p, d), "project_hid.bias": (p,),
                "project_q.weight": (p, cfg.codevector_dim), "project_q.bias": (p,)}
    if kind == SEQUENCE_CLASSIFICATION:
        c = cfg.classifier_proj_size
        return {"projector.weight": (c, d), "projector.bias": (c,),
                "classifier.weight": (labels, c), "classifier.bias": (labels,), **weighted}
    if kind == FRAME_CLASSIFICATION:
        return {"classifier.weight": (labels, d), "classifier.bias": (labels,), **weighted}
    if kind == XVECTOR:
        return {**tdnn_shapes(cfg), **weighted}
    if kind == FINAL_PROJ:  # ContentVec's: D -> classifier_proj_size (256), applied to a chosen layer
        return {"final_proj.weight": (cfg.classifier_proj_size, d), "final_proj.bias": (cfg.classifier_proj_size,)}
    return {}


# ---------------------------------------------------------------------------
# Pretraining


def mask_time(hidden, mask_time_indices, masked_spec_embed):
    """Replace the chosen frames by the learned mask embedding, as pretraining hides them.

    hidden: [B, T, D], mask_time_indices: [B, T] bool, masked_spec_embed: [D] -> [B, T, D].
    Mirrors Wav2Vec2Model._mask_hidden_states with given indices (fairseq: mask_emb).
    """
    if masked_spec_embed is None:
        raise ValueError("mask_time_indices needs the model's masked_spec_embed, which this checkpoint does not have")
    xp = get_xp(hidden)
    return xp.where(xp.asarray(mask_time_indices, dtype=bool)[:, :, None], masked_spec_embed, hidden)


def quantize(features, p, cfg: Config):
    """Each frame's codevector: in every group, the entry with the largest logit.

    features: [B, T, C] (extract_features) -> (codevectors [B, T, codevector_dim], ids [B, T, G]).
    At inference the Gumbel softmax is a plain argmax; the group codevectors are concatenated.
    Mirrors Wav2Vec2GumbelVectorQuantizer in eval mode (fairseq's GumbelVectorQuantizer).
    """
    xp = get_xp(features)
    batch, frames, _ = features.shape
    g, v = cfg.num_codevector_groups, cfg.num_codevectors_per_group
    scores = linear(features, **p["weight_proj"]).reshape(batch, frames, g, v)  # [B, T, G, V]
    ids = scores.argmax(axis=-1)  # [B, T, G]
    book = p["codevectors"].reshape(g, v, -1)  # [G, V, codevector_dim / G]
    return book[xp.arange(g), ids].reshape(batch, frames, -1), ids


def codevector_perplexity(ids, counted, cfg: Config):
    """How many codevectors are in use: exp(entropy) of each group's choices, summed over groups.

    ids: [B, T, G], counted: [B, T] bool (the frames that count) or None (all) -> a 0-d array.
    G when every frame picks the same entries, G * V when all are used equally often.
    A statistic of the whole batch, not of an item. Mirrors _compute_perplexity (hard, eval).
    """
    xp = get_xp(ids)
    chosen = (ids[..., None] == xp.arange(cfg.num_codevectors_per_group)).astype(xp.float32)  # [B, T, G, V]
    if counted is None:
        marginal = chosen.mean(axis=(0, 1))  # [G, V]
    else:
        weight = xp.asarray(counted, dtype=xp.float32)[:, :, None, None]
        marginal = (chosen * weight).sum(axis=(0, 1)) / weight.sum()
    used = marginal > 0
    entropy = -(marginal * xp.log(xp.where(used, marginal, 1.0))).sum(axis=-1)  # [G]; 0 log 0 = 0
    return xp.exp(entropy).sum()


def perplexity_frames(mask_time_indices, valid, norm_over_padding: bool, xp):
    """The frames the codevector perplexity counts ([B, T] bool, or None for all): the hidden ones
    if given (as transformers), and of those only valid frames unless transformers' padded
    numbers are asked for."""
    counted = None if mask_time_indices is None else xp.asarray(mask_time_indices, dtype=bool)
    if valid is None or norm_over_padding:
        return counted
    return valid if counted is None else counted & valid


def pretraining_head(last_hidden_state, extract_features, counted, params, cfg: Config) -> dict:
    """Context vectors and quantized targets in one P-dimensional space, frame by frame.

    last_hidden_state: [B, T, D], extract_features: [B, T, C] -> projected_states [B, T, P],
    projected_quantized_states [B, T, P], codevector_ids [B, T, G], codevector_perplexity.
    Mirrors Wav2Vec2ForPreTraining.forward before its loss (fairseq: final_proj, project_q).
    """
    codevectors, ids = quantize(extract_features, params["quantizer"], cfg)
    return {"projected_states": linear(last_hidden_state, **params["project_hid"]),
            "projected_quantized_states": linear(codevectors, **params["project_q"]),
            "codevector_ids": ids,
            "codevector_perplexity": codevector_perplexity(ids, counted, cfg)}


def contrastive_logits(projected_states, projected_quantized_states, negative_indices, temperature=0.1,
                       codevector_ids=None):
    """Cosine similarity of each context vector with its own target (row 0) and N negatives, / temperature.

    projected_states, projected_quantized_states: [B, T, P]; negative_indices: [B, T, N] ints
    into the batch's B * T frames (transformers' ``sampled_negative_indices``) -> [1 + N, B, T].
    A negative equal to the frame's own target scores -inf, so it cannot count as a wrong answer.
    With ``codevector_ids`` ([B, T, G]) "equal" means the same codevectors: the projected
    targets of equal codes can differ in the last bit (a matrix product rounds rows by their
    position), where PyTorch's compare equal.
    Mirrors Wav2Vec2ForPreTraining.compute_contrastive_logits with its neg_is_pos rule
    (fairseq: Wav2Vec2Model.compute_preds).
    """
    xp = get_xp(projected_states)
    q = projected_quantized_states
    batch, frames = q.shape[:2]
    indices = xp.asarray(negative_indices).reshape(-1)

    def negatives_of(x):  # [B, T, W] -> [N, B, T, W]
        return x.reshape(batch * frames, -1)[indices].reshape(batch, frames, -1, x.shape[-1]).transpose(2, 0, 1, 3)

    negatives = negatives_of(q)
    logits = cosine_similarity(projected_states[None], xp.concatenate([q[None], negatives]))  # [1 + N, B, T]
    logits /= temperature
    same = q if codevector_ids is None else xp.asarray(codevector_ids)
    logits[1:][(negatives_of(same) == same[None]).all(axis=-1)] = -xp.inf
    return logits


def cosine_similarity(a, b, eps=1e-8):
    """a . b / (max(|a|, eps) max(|b|, eps)) over the last axis, broadcasting. Mirrors torch.cosine_similarity."""
    xp = get_xp(a, b)

    def norm(x):
        return xp.maximum(xp.sqrt((x * x).sum(axis=-1)), eps)

    return (a * b).sum(axis=-1) / (norm(a) * norm(b))


# ---------------------------------------------------------------------------
# Classification


def weighted_layer_sum(hidden_states, layer_weights):
    """softmax(layer_weights)-weighted sum of the L + 1 hidden states. L + 1 x [B, T, D] -> [B, T, D]."""
    xp = get_xp(layer_weights)
    stacked = xp.stack(hidden_states)  # [L + 1, B, T, D]
    return (stacked * softmax(layer_weights)[:, None, None, None]).sum(axis=0)


def mean_over_frames(x, valid):
    """Mean over time of the valid frames only (all frames when valid is None). [B, T, P] -> [B, P]."""
    if valid is None:
        return x.mean(axis=1)
    weight = valid[:, :, None].astype(x.dtype)  # [B, T, 1]
    return (x * weight).sum(axis=1) / weight.sum(axis=1)


def classifier_input(last_hidden_state, hidden_states, params, cfg: Config):
    """The last hidden state, or with use_weighted_layer_sum the learned mix of all of them. [B, T, D]."""
    if cfg.use_weighted_layer_sum:
        return weighted_layer_sum(hidden_states, params["layer_weights"])
    return last_hidden_state


def sequence_classification(x, valid, params):
    """One label score vector per input: projector, mean over valid frames, classifier.

    x: [B, T, D], valid: [B, T] bool or None -> logits [B, labels].
    Mirrors Wav2Vec2ForSequenceClassification (the pooling ignores padded frames).
    """
    pooled = mean_over_frames(linear(x, **params["projector"]), valid)  # [B, classifier_proj_size]
    return linear(pooled, **params["classifier"])


# ---------------------------------------------------------------------------
# All heads


def apply_head(params, cfg: Config, last_hidden_state, hidden_states, extract_features, valid, counted,
               tdnn=tdnn_layer, padding_leaks: bool = False) -> dict:
    """The head's outputs, by transformers' names, for whichever head ``params`` holds.

    last_hidden_state: [B, T, D] (the adapter's output when there is one), hidden_states:
    the L + 1 encoder states, extract_features: [B, T, C], valid: [B, T] bool or None,
    counted: the frames the codevector perplexity counts ([B, T] bool or None). ``tdnn``:
    the path's x-vector TDNN layer (npw2v2.core.ops); ``padding_leaks``: the x-vector
    pooling counts frames as transformers does (npw2v2.core.xvector).
    """
    kind = kind_of_names(params)
    if kind == CTC:
        return {"logits": linear(last_hidden_state, **params["lm_head"])}  # [B, T, V]
    if kind == PRETRAINING:
        return pretraining_head(last_hidden_state, extract_features, counted, params, cfg)
    x = classifier_input(last_hidden_state, hidden_states, params, cfg)
    if kind == SEQUENCE_CLASSIFICATION:
        return {"logits": sequence_classification(x, valid, params)}  # [B, labels]
    if kind == FRAME_CLASSIFICATION:
        return {"logits": linear(x, **params["classifier"])}  # [B, T, labels]
    if kind == XVECTOR:
        return xvector_head(x, valid, params, cfg, tdnn, padding_leaks)  # embeddings, logits [B, X]
    return {}
