"""The model object users hold: parameters, config and settings, over the core and the pipeline.

A thin facade. Calling it runs npw2v2.core.wav2vec2.forward (or, for a padded batch on the
fast path, forward_items_alone when that saves work); transcribe, embed and classify are
npw2v2.app.pipeline's, align is npw2v2.app.align's; MMS languages come from npw2v2.io.languages.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from ..core.backend import asnumpy, get_xp
from ..core.config import (BASE, CONFORMER_LARGE, DATA2VEC_AUDIO_BASE, HUBERT_BASE, LARGE, W2V_BERT, WAVLM_BASE_PLUS,
                           Config)
from ..core.heads import HEAD_NAMES, contrastive_logits, model_kind
from ..core.params import random_weights
from ..core.trace import untraced
from ..core.wav2vec2 import Output, can_run_items_alone, forward, forward_items_alone
from ..io import hub, languages, weights
from . import align, pipeline
from .beam import decoder_for


class Wav2Vec2:
    """A loaded model: parameters plus config, called like a transformers model.

    >>> out = model(input_values, attention_mask=mask)   # doctest: +SKIP
    >>> out.last_hidden_state.shape                       # [B, T, D]
    """

    def __init__(self, params, config: Config, vocab=None, metadata=None):
        self.params = params
        self.config = config
        self.vocab = vocab
        self.metadata = metadata or {}
        self.language = None  # MMS models: whose adapters and head are loaded
        self.languages_source = None  # MMS models: where other languages' adapters come from
        self.path = None  # the file or folder it was loaded from (load), where its language model is found

    def __call__(self, input_values, attention_mask=None, *, output_hidden_states=False, norm_over_padding=False,
                 mask_time_indices=None, reference=False, items_alone=None, trace=untraced) -> Output:
        """The forward pass (npw2v2.core.wav2vec2.forward); ``reference=True`` takes the reference path.

        ``items_alone`` says how a padded batch is computed. False: as one batch, the masks
        keeping padding out (the path ``trace`` shows). True: item by item over its valid
        samples, then padded back with zeros; the same numbers for valid frames, without
        computing the padding. None (default): item by item when that saves work, that is
        on the fast path, for a mask that pads items of different lengths, when neither a
        trace nor ``norm_over_padding`` asks for the batch and every output is per frame.
        """
        w2v_bert = self.config.model_type == "wav2vec2-bert"  # features in: the batch path (npw2v2.core.w2v_bert)
        if items_alone and w2v_bert:
            raise ValueError("items_alone=True runs samples item by item; w2v-BERT takes filter-bank features, as one "
                             "batch (its masks give each item its result alone)")
        if items_alone is None:
            items_alone = (not w2v_bert and not reference and trace is untraced and not norm_over_padding
                           and _pads_unequal_items(attention_mask) and can_run_items_alone(self.params, mask_time_indices))
        if items_alone:
            if reference or trace is not untraced or norm_over_padding or mask_time_indices is not None:
                raise ValueError("items_alone=True runs each item on its own, on the fast path: it cannot take "
                                 "the reference path, trace the padded batch, let group norm see the padding "
                                 "(norm_over_padding) or hide frames (mask_time_indices)")
            return forward_items_alone(self.params, self.config, input_values, attention_mask,
                                       output_hidden_states=output_hidden_states)
        return forward(self.params, self.config, input_values, attention_mask, output_hidden_states=output_hidden_states,
                       norm_over_padding=norm_over_padding, mask_time_indices=mask_time_indices,
                       reference=reference, trace=trace)

    @property
    def kind(self) -> str:
        """The transformers class this model is: Wav2Vec2Model, Wav2Vec2ForCTC, ...ForPreTraining, ...

        Named as wav2vec 2.0's for every family (a HubertForCTC is Wav2Vec2ForCTC here, its head
        the same); npw2v2.core.heads.class_name gives the family's own name.
        """
        return model_kind(self.config, self.params)

    @property
    def has_ctc_head(self) -> bool:
        return "lm_head" in self.params

    @property
    def labels(self) -> list[str]:
        """A classifier's label names by label id (config.json's id2label)."""
        return self.config.labels

    @property
    def languages(self) -> list[str]:
        """MMS models: the languages whose adapters can be loaded with set_language."""
        return languages.available(self.languages_source)

    def set_language(self, language: str) -> None:
        """MMS models: swap in a language's attention adapters, CTC head and vocabulary."""
        if self.config.adapter_attn_dim is None or self.languages_source is None:
            raise ValueError("this model has no language adapters (config.adapter_attn_dim is not set)")
        flat, vocab = languages.language_weights(self.languages_source, self.config, language)
        languages.swap_in(self.params, flat, self.languages_source)
        self.config = dataclasses.replace(self.config, vocab_size=int(flat["lm_head.weight"].shape[0]))
        if self.languages_source.vocabularies is not None:
            self.vocab = vocab
        self.language = language

    @property
    def xp(self):
        """The array module the parameters live in (numpy, or cupy on a GPU): inputs follow it."""
        return get_xp(self.params["feature_projection"]["projection"]["weight"])

    @property
    def preprocessor(self) -> dict:
        """The feature extractor's settings (preprocessor_config.json), or {} when unknown."""
        return self.metadata.get("preprocessor") or {}

    @property
    def language_model(self) -> str | None:
        """The language model the model comes with, for ``transcribe(..., lm=model.language_model)``:
        a path or a hub id (npw2v2.io.hub.own_lm), or None."""
        return None if self.path is None else hub.own_lm(self.path, self.metadata)

    @property
    def sampling_rate(self) -> int:
        return int(self.preprocessor.get("sampling_rate", 16000))

    @property
    def do_normalize(self) -> bool:
        """Whether inputs are normalised per utterance; transformers' feature extractor defaults to yes."""
        return bool(self.preprocessor.get("do_normalize", True))

    @property
    def word_delimiter(self) -> str:
        return (self.metadata.get("tokenizer") or {}).get("word_delimiter_token", "|")

    @property
    def id_to_token(self) -> list[str]:
        """The vocabulary as a list indexed by token id."""
        tokens = [""] * (max(self.vocab.values()) + 1 if self.vocab else 0)
        for token, i in (self.vocab or {}).items():
            tokens[i] = token
        return tokens

    def transcribe(self, inputs, batch_size: int = 8, timestamps: bool = False, lm=None, **options):
        """Text of each file or 1-d array (see npw2v2.app.pipeline.transcribe).

        Greedy, unless ``lm`` (an .arpa file, a KenLM binary, a Hugging Face language_model/ folder)
        asks for a beam search with that language model and its default settings, or ``decoder``
        (``beam_decoder``'s) for one with chosen settings and hotwords.
        """
        if lm is not None:
            options["decoder"] = self.beam_decoder(lm)
        return pipeline.transcribe(self, inputs, batch_size=batch_size, timestamps=timestamps, **options)

    def beam_decoder(self, lm=None, hotwords=(), **settings):
        """A beam search over this model's vocabulary, for ``transcribe(..., decoder=...)``.

        ``lm``: a path (as transcribe's) or None; ``settings``: the LM's alpha, beta,
        unk_score_offset, score_boundary (defaults: its folder's attrs.json, else pyctcdecode's),
        and the search's beam_width, beam_prune_logp, token_min_logp, prune_history, hotword_weight
        (npw2v2.app.beam).
        """
        pipeline.check_can_transcribe(self)
        return decoder_for(self.id_to_token, self.word_delimiter, lm, hotwords, **settings)

    def embed(self, inputs, layers=None, batch_size: int = 8, **options):
        """Hidden states of each file or 1-d array (see npw2v2.app.pipeline.embed)."""
        return pipeline.embed(self, inputs, layers=layers, batch_size=batch_size, **options)

    def classify(self, inputs, batch_size: int = 8, **options):
        """Label scores of each file or 1-d array (see npw2v2.app.pipeline.classify)."""
        return pipeline.classify(self, inputs, batch_size=batch_size, **options)

    def embed_speaker(self, audio, batch_size: int = 8, **options):
        """Speaker embeddings of an x-vector model (``*ForXVector``): one NumPy vector [X] per input
        (npw2v2.app.pipeline.embed_speaker). One file or 1-d array gives one vector; a list, a list.

        Compare two with npw2v2.app.similarity.cosine_similarity (``npw2v2 similarity``).
        """
        if isinstance(audio, (str, Path)) or getattr(audio, "ndim", None) == 1:
            return pipeline.embed_speaker(self, [audio], batch_size=batch_size, **options)[0]
        return pipeline.embed_speaker(self, audio, batch_size=batch_size, **options)

    def align(self, audio, text, batch_size: int = 8, **options):
        """When each word and character of a known transcript is spoken (npw2v2.app.align.align).

        One file or 1-d array and its text give one Alignment; a list of each gives a list.
        """
        if isinstance(text, str):
            return align.align(self, [audio], [text], batch_size=batch_size, **options)[0]
        return align.align(self, audio, text, batch_size=batch_size, **options)

    def contrastive_logits(self, out: Output, negative_indices):
        """Pretraining's scores of each frame's target against negatives: [1 + N, B, T] (npw2v2.core.heads)."""
        return contrastive_logits(out.projected_states, out.projected_quantized_states, negative_indices,
                                  self.config.contrastive_logits_temperature, out.codevector_ids)

    def __repr__(self):
        c = self.config
        head = HEAD_NAMES[self.kind] + (f", language {self.language}" if self.language else "")
        family = {"hubert": "HuBERT, ", "data2vec-audio": "data2vec-audio, ", "unispeech": "UniSpeech, ",
                  "unispeech-sat": "UniSpeech-SAT, ", "wavlm": "WavLM, ",
                  "wav2vec2-conformer": "Wav2Vec2-Conformer, ", "wav2vec2-bert": "w2v-BERT, "}.get(c.model_type, "")
        layout = f"{'pre' if c.do_stable_layer_norm else 'post'}-LN"
        if c.model_type in ("wav2vec2-conformer", "wav2vec2-bert"):
            layout = f"{c.position_embeddings_type or 'no'} positions, depthwise K={c.conv_depthwise_kernel_size}"
        if c.model_type == "wav2vec2-bert":  # filter banks in, no conv encoder; a causal depthwise conv
            adapter = f", adapter of {c.num_adapter_layers}" if c.add_adapter else ""
            return (f"Wav2Vec2({family}{c.num_hidden_layers} layers, D={c.hidden_size}, "
                    f"{c.feature_projection_input_dim} filter-bank features, {layout} causal{adapter}, {head})")
        return (f"Wav2Vec2({family}{c.num_hidden_layers} layers, D={c.hidden_size}, C={c.conv_dim[-1]}, "
                f"{layout}, {c.feat_extract_norm} norm, {head})")


def _pads_unequal_items(attention_mask) -> bool:
    """Whether a mask pads items of different lengths, so a batch would spend work on padding."""
    mask = None if attention_mask is None else asnumpy(attention_mask).astype(bool)
    return mask is not None and mask.ndim == 2 and len(set(mask.sum(axis=1).tolist())) > 1  # else forward refuses it


# ---------------------------------------------------------------------------
# Making one


def from_tensors(tensors: dict, cfg: Config, source: str = "tensors", vocab=None, metadata=None,
                 dtype=np.float32, device: str = "cpu", folder: Path | None = None) -> Wav2Vec2:
    """A model from a flat dict of Hugging Face-named tensors, checked against the config.

    An MMS model (adapter_attn_dim) finds other languages' adapters among the tensors
    (``languages.LANG.*``) or as adapter.LANG.safetensors files in ``folder``.
    """
    params, bundled = weights.prepare(tensors, cfg, source, dtype, device)
    model = Wav2Vec2(params, cfg, vocab=vocab, metadata=metadata)
    if cfg.adapter_attn_dim is not None or bundled or languages.is_nested(vocab):
        model.languages_source, model.language, model.vocab = languages.open_languages(
            params, cfg, vocab, model.metadata, bundled, folder, dtype, device)
    return model


def load(path, dtype=np.float32, device: str = "cpu", revision: str | None = None) -> Wav2Vec2:
    """Load a model from a .safetensors file, a Hugging Face model folder, or a hub id
    ("facebook/wav2vec2-base-960h") that transformers or huggingface_hub downloaded (npw2v2.io.hub;
    ``revision``: a branch, tag or commit, default main).

    Raises CheckpointError naming the path and every problem found.
    """
    path = hub.locate(str(path), revision)
    tensors, cfg, vocab, metadata = weights.read(path)
    model = from_tensors(tensors, cfg, str(path), vocab=vocab, metadata=metadata, dtype=dtype, device=device,
                         folder=path if path.is_dir() else path.parent)
    model.path = path
    return model


BUILT_IN = {"base": BASE, "large": LARGE, "hubert-base": HUBERT_BASE,  # architectures the command line
            "data2vec-audio-base": DATA2VEC_AUDIO_BASE, "wavlm-base-plus": WAVLM_BASE_PLUS,  # knows by name
            "conformer-large": CONFORMER_LARGE, "w2v-bert": W2V_BERT}


def load_model(name: str, seed: int = 0, device: str = "cpu", revision: str | None = None) -> tuple[Wav2Vec2, str]:
    """A model by the name a user gives: a file or folder, a hub id in the local cache, or a
    built-in architecture name with random weights, in that order; on the device.

    Returns the model and a description of it for messages and metadata.
    """
    if is_built_in(name, revision):
        cfg = BUILT_IN[name]
        return from_tensors(random_weights(cfg, seed=seed), cfg, device=device), \
            f"{name} architecture, random weights (seed {seed})"
    return load(name, device=device, revision=revision), name


def is_built_in(name: str, revision: str | None = None) -> bool:
    """Whether a name means a built-in architecture: no file or folder and no cached model takes it first."""
    if name not in BUILT_IN or Path(name).exists():
        return False
    if hub.cached_snapshot(name, revision) is not None:
        warnings.warn(f"{name} is a built-in architecture and a model in the Hugging Face cache: took the cached "
                      "model", hub.ModelNameWarning, stacklevel=3)
        return False
    return True
