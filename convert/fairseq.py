"""Original fairseq wav2vec 2.0 checkpoints (.pt): pretrained models and fine-tuned CTC models;
HuBERT, pretrained (final_proj kept, the label sets' cluster embeddings dropped) or fine-tuned (hubert_ctc).
Original WavLM files are read here too and handed to convert/wavlm.py.

The configuration comes from ``args`` (an argparse Namespace, older files) or ``cfg`` (a
plain dict or an omegaconf DictConfig, newer files); fine-tuned models nest the pretrained
model's configuration in ``w2v_args``. The CTC vocabulary comes from the letter dictionary
(dict.ltr.txt) in fairseq's order: ``<s>`` = 0 (the CTC blank), ``<pad>``, ``</s>``, ``<unk>``,
then the dictionary's symbols.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np

from npw2v2.core.config import Config

from . import torch_pickle
from .checkpoint import Checkpoint
from .errors import ConversionError
from .names import FINE_TUNED_PREFIX, ROTARY_BUFFER, fairseq_to_hf
from .torch_pickle import Marker, Record, load_torch_file

FAIRSEQ_SPECIAL_SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>"]
MAX_CONV_LAYERS = 1000
DEFAULT_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"
SAMPLING_RATE = 16000


# ---------------------------------------------------------------------------
# Stand-ins for the config containers fairseq pickles


class ConfigNode(Record):
    """Base of the omegaconf stand-ins: keeps the state but not ``_parent``, a back-reference
    (a cycle) that reading the values does not need."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            state = {k: v for k, v in state.items() if k != "_parent"}
        super().__setstate__(state)


class ConfigDict(ConfigNode):
    """Stands for omegaconf's DictConfig: its state holds the values in ``_content``."""

    def plain(self):
        return plain(self.__dict__.get("_content") or {})


class ConfigList(ConfigNode):
    """Stands for omegaconf's ListConfig."""

    def plain(self):
        return plain(self.__dict__.get("_content") or [])


class ConfigValue(ConfigNode):
    """Stands for omegaconf's value nodes (AnyNode, StringNode, ...): the value is ``_val``."""

    def plain(self):
        return plain(self.__dict__.get("_val"))


class Dictionary(Record):
    """Stands for fairseq.data.dictionary.Dictionary, which fine-tuned checkpoints keep in task_state."""

    def vocab(self) -> dict[str, int] | None:
        symbols = self.__dict__.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            return None
        return {s: i for i, s in enumerate(symbols)}


OMEGACONF_NODES = ["AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode",
                   "PathNode", "BytesNode", "ValueNode"]
torch_pickle.allow({
    ("omegaconf.dictconfig", "DictConfig"): ConfigDict,
    ("omegaconf.listconfig", "ListConfig"): ConfigList,
    **{("omegaconf.nodes", name): ConfigValue for name in OMEGACONF_NODES},
    ("fairseq.data.dictionary", "Dictionary"): Dictionary,
    ("omegaconf.base", "ContainerMetadata"): Record,
    ("omegaconf.base", "Metadata"): Record,
    ("typing", "Any"): Marker("typing.Any"),
})


def plain(obj):
    """Config containers, namespaces and nested collections as plain dicts, lists and values."""
    if isinstance(obj, Dictionary):
        return obj
    if isinstance(obj, (ConfigDict, ConfigList, ConfigValue)):
        return obj.plain()
    if isinstance(obj, Record):
        return {k: plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------
# Configuration


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's conv_feature_layers, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", without eval.

    Only list and tuple literals of integers joined by + and * are accepted.
    """
    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Mult) and not (isinstance(left, list) and isinstance(right, int)
                                                      and 0 <= right and len(left) * right <= MAX_CONV_LAYERS):
                raise ValueError(f"only a list of at most {MAX_CONV_LAYERS} layers may be repeated")
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unexpected {type(node).__name__}")

    try:
        layers = value(ast.parse(str(spec), mode="eval").body)
        if not (isinstance(layers, list) and layers and
                all(isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in layers)):
            raise ValueError("not a list of (dim, kernel, stride)")
    except (SyntaxError, ValueError, TypeError, RecursionError) as e:
        raise ConversionError(f"cannot read conv_feature_layers {spec!r}: {e}") from None
    return layers


# The fairseq option each Hugging Face key comes from, for messages about a bad value.
FAIRSEQ_OPTIONS = {
    "conv_dim": "conv_feature_layers", "conv_kernel": "conv_feature_layers", "conv_stride": "conv_feature_layers",
    "hidden_size": "encoder_embed_dim", "num_hidden_layers": "encoder_layers",
    "num_attention_heads": "encoder_attention_heads", "intermediate_size": "encoder_ffn_embed_dim",
    "hidden_act": "activation_fn", "num_conv_pos_embeddings": "conv_pos",
    "num_conv_pos_embedding_groups": "conv_pos_groups", "num_codevectors_per_group": "latent_vars",
    "num_codevector_groups": "latent_groups", "codevector_dim": "latent_dim (or final_dim)",
    "proj_codevector_dim": "final_dim", "contrastive_logits_temperature": "logit_temp",
    "vocab_size": "the letter dictionary", "conv_depthwise_kernel_size": "depthwise_conv_kernel_size",
}


def _whole(model: dict, key: str, default: int) -> int:
    """An integer option as fairseq stores it: an int, never a bool, float, string or None."""
    value = model.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConversionError(f"the model configuration's {key} must be a whole number, got {value!r:.60}")
    return value


def _real(model: dict, key: str, default: float) -> float:
    value = model.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConversionError(f"the model configuration's {key} must be a number, got {value!r:.60}")
    return float(value)


def family(model: dict) -> str:
    """The (pretrained) model configuration's fairseq model: wav2vec2, hubert or data2vec_audio."""
    return model.get("_name", model.get("arch")) or "wav2vec2"


def is_hubert(model: dict) -> bool:
    """Whether a (pretrained) model configuration is fairseq's HubertModel."""
    return family(model) == "hubert"


def data2vec_positional_convs(model: dict) -> dict:
    """data2vec-audio's stack of positional convs as transformers counts them: pos_conv_depth convs
    of kernel max(3, conv_pos // pos_conv_depth), as fairseq's TransformerEncoder builds them."""
    depth = _whole(model, "pos_conv_depth", 1)
    if depth < 2:
        raise ConversionError(f"a data2vec_audio model with pos_conv_depth={depth}: one weight-normed positional "
                              "conv, which transformers' Data2VecAudioModel has no place for")
    return {"num_conv_pos_embeddings": depth, "conv_pos_kernel_size": max(3, _whole(model, "conv_pos", 95) // depth)}


def hf_config(model: dict, vocab_size: int | None, final_proj_rows: int | None = None) -> dict:
    """The Hugging Face config.json of a fairseq wav2vec 2.0 or HuBERT model configuration, checked as
    npw2v2.Config checks config.json (ConversionError naming the fairseq option).

    HuBERT keeps its final_proj (``final_proj_rows`` wide: final_dim, or final_dim x label sets
    with untie_final_proj) as the converted ContentVec checkpoints name it, HubertModelWithFinalProj.
    """
    if family(model) not in ("wav2vec2", "hubert", "data2vec_audio"):
        raise ConversionError(f"a {family(model)!r} model, not wav2vec 2.0, HuBERT or data2vec-audio")
    if is_hubert(model) and model.get("conv_pos_batch_norm"):
        raise ConversionError("a HuBERT with conv_pos_batch_norm=True: not converted yet")
    layers = parse_conv_layers(model.get("conv_feature_layers") or DEFAULT_CONV_LAYERS)
    latent_dim = _whole(model, "latent_dim", 0) if model.get("latent_dim") is not None else 0
    config = {
        "model_type": "wav2vec2",
        "architectures": ["Wav2Vec2ForCTC" if vocab_size else "Wav2Vec2ForPreTraining"],
        "conv_dim": [d for d, _, _ in layers],
        "conv_kernel": [k for _, k, _ in layers],
        "conv_stride": [s for _, _, s in layers],
        "num_feat_extract_layers": len(layers),
        "conv_bias": bool(model.get("conv_bias", False)),
        "feat_extract_norm": "layer" if model.get("extractor_mode", "default") == "layer_norm" else "group",
        "feat_extract_activation": "gelu",
        "hidden_size": _whole(model, "encoder_embed_dim", 768),
        "num_hidden_layers": _whole(model, "encoder_layers", 12),
        "num_attention_heads": _whole(model, "encoder_attention_heads", 12),
        "intermediate_size": _whole(model, "encoder_ffn_embed_dim", 3072),
        "hidden_act": model.get("activation_fn", "gelu"),
        "do_stable_layer_norm": bool(model.get("layer_norm_first", False)),
        "num_conv_pos_embeddings": _whole(model, "conv_pos", 128),
        "num_conv_pos_embedding_groups": _whole(model, "conv_pos_groups", 16),
        "layer_norm_eps": 1e-5,
        "num_codevectors_per_group": _whole(model, "latent_vars", 320),
        "num_codevector_groups": _whole(model, "latent_groups", 2),
        # fairseq's quantizer is latent_dim wide, or final_dim when latent_dim is 0
        "codevector_dim": latent_dim or _whole(model, "final_dim", 256),
        "proj_codevector_dim": _whole(model, "final_dim", 256),
        "contrastive_logits_temperature": _real(model, "logit_temp", 0.1),
    }
    if family(model) != "wav2vec2":  # no quantizer; the features are always layer-normed before the projection
        for key in ("num_codevectors_per_group", "num_codevector_groups", "codevector_dim", "proj_codevector_dim",
                    "contrastive_logits_temperature"):
            del config[key]
    if family(model) == "data2vec_audio":
        config.update(model_type="data2vec-audio", **data2vec_positional_convs(model),
                      architectures=["Data2VecAudioForCTC" if vocab_size else "Data2VecAudioModel"])
    if is_conformer(model):
        for key in ("num_codevectors_per_group", "num_codevector_groups", "codevector_dim", "proj_codevector_dim",
                    "contrastive_logits_temperature"):  # its pretraining heads are not converted
            del config[key]
        config.update(conformer_config(model),
                      architectures=["Wav2Vec2ConformerForCTC" if vocab_size else "Wav2Vec2ConformerModel"])
    if is_hubert(model):
        head = "HubertForCTC" if vocab_size else "HubertModelWithFinalProj" if final_proj_rows else "HubertModel"
        config.update(model_type="hubert", feat_proj_layer_norm=True, architectures=[head])
        if final_proj_rows:
            config["classifier_proj_size"] = final_proj_rows
    if vocab_size:
        # fairseq's blank is <s> at index 0; transformers' CTC blank is pad_token_id.
        config.update(vocab_size=vocab_size, pad_token_id=0, bos_token_id=0, eos_token_id=2)
    try:
        Config.from_dict(config)  # types, plausible sizes, consistency: before anything is built from them
    except ValueError as e:
        named = {FAIRSEQ_OPTIONS[key]: None for key in re.findall(r"[a-z_]+", str(e)) if key in FAIRSEQ_OPTIONS}
        raise ConversionError(f"{e} (from fairseq's {', '.join(named)})" if named else str(e)) from None
    return config


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _split_run_config(run: dict) -> tuple[dict, dict]:
    """A whole run's configuration (cfg era: model and task sections; args era: one flat namespace)."""
    if isinstance(run.get("model"), dict):
        return run["model"], _dict(run.get("task"))
    return run, run


def model_and_task(state: dict, source: str) -> tuple[dict, dict]:
    """The pretrained model's configuration and its task configuration, as plain dicts.

    A fine-tuned checkpoint nests the pretraining run's configuration in w2v_args; its own
    task settings (normalize) win over the pretraining ones.
    """
    if state.get("cfg") is not None:
        run = _dict(plain(state["cfg"]))
    elif state.get("args") is not None:
        run = _dict(plain(state["args"]))
    else:
        raise ConversionError(f"{source}: no 'cfg' or 'args' in the checkpoint, so no model configuration")
    model, task = _split_run_config(run)
    if "w2v_args" not in model:
        return model, task
    inner = _dict(plain(model["w2v_args"]))
    if not inner:
        raise ConversionError(f"{source}: a fine-tuned checkpoint without the pretrained model's w2v_args")
    inner_model, inner_task = _split_run_config(inner)
    return inner_model, {**inner_task, **task, **({"normalize": model["normalize"]} if "normalize" in model else {})}


# ---------------------------------------------------------------------------
# Vocabulary


def read_letter_dict(path: Path) -> dict[str, int]:
    """fairseq's dictionary file (one "SYMBOL COUNT" a line) as the CTC vocabulary, in fairseq's order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read the dictionary ({e})") from None
    vocab = {s: i for i, s in enumerate(FAIRSEQ_SPECIAL_SYMBOLS)}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        symbol = line.rstrip().rsplit(" ", 1)[0] if " " in line.strip() else line.strip()
        if symbol in vocab:
            raise ConversionError(f"{path}:{number}: symbol {symbol!r} appears twice")
        vocab[symbol] = len(vocab)
    return vocab


# ---------------------------------------------------------------------------
# The reader


# Tensors that only a family's pretraining loss reads, dropped knowingly (transformers' models have no
# place for them, and its converters drop them too). HuBERT: the label sets' cluster embeddings that
# final_proj's output is scored against (a fine-tuned HuBERT keeps them, under w2v_encoder.w2v_model.).
# data2vec-audio: the regression head onto the teacher's averaged layers, and the EMA teacher's own
# copy of the transformer (a dict of tensors).
LOSS_ONLY = {"hubert": {"label_embs_concat"},
             "data2vec_audio": {"final_proj.weight", "final_proj.bias", "_ema"}}
# A conformer's pretraining heads (transformers has Wav2Vec2ConformerForPreTraining, which npw2v2 does not
# run: its encoder converts as Wav2Vec2ConformerModel) and its rotary layers' inv_freq buffers (computed).
CONFORMER_DROPPED = ("quantizer.", "project_q.", "final_proj.")


def is_conformer(model: dict) -> bool:
    """Whether a (pretrained) wav2vec2 model configuration has conformer layers (layer_type "conformer")."""
    return family(model) == "wav2vec2" and model.get("layer_type", "transformer") == "conformer"


# fairseq's pos_enc_type -> transformers' position_embeddings_type
CONFORMER_POSITIONS = {"rel_pos": "relative", "rope": "rotary"}


def conformer_config(model: dict) -> dict:
    """The config.json keys of a fairseq conformer (ConformerEncoder) beyond wav2vec 2.0's; ConversionError for
    the arrangements transformers' Wav2Vec2ConformerModel has no place for, naming the fairseq option."""
    positions = model.get("pos_enc_type", "abs")
    if positions not in CONFORMER_POSITIONS:
        raise ConversionError(f"a conformer with pos_enc_type={positions!r:.60}: fairseq then runs its positional conv "
                              "before conformer layers, which transformers' Wav2Vec2ConformerModel has no place for "
                              "(it converts rel_pos and rope)")
    if model.get("attn_type", "") != "espnet":
        raise ConversionError(f"a conformer with attn_type={model.get('attn_type', '')!r:.60}: fairseq's own attention "
                              "in conformer layers, where transformers' conformer has ESPnet's (attn_type espnet)")
    if not model.get("layer_norm_first", False):
        raise ConversionError("a conformer with layer_norm_first=False: fairseq layer-norms before the first block, "
                              "transformers' conformer after the last (layer_norm_first=True)")
    return {"model_type": "wav2vec2-conformer", "hidden_act": "swish",  # fairseq's conformer layers are swish
            "position_embeddings_type": CONFORMER_POSITIONS[positions], "rotary_embedding_base": 10000,
            "conv_depthwise_kernel_size": _whole(model, "depthwise_conv_kernel_size", 31)}


def rename(weights: dict, source: str, model_family: str = "wav2vec2", conformer: bool = False) -> dict:
    """fairseq tensor names to Hugging Face names; any unknown name is an error, listed.

    HuBERT's final_proj keeps its name (wav2vec 2.0's is project_hid); the family's loss-only
    tensors (LOSS_ONLY) are dropped, and a conformer's pretraining heads and rotary buffers.
    """
    hubert, dropped = model_family == "hubert", LOSS_ONLY.get(model_family, set())
    tensors, unknown = {}, []
    for name, value in weights.items():
        inner = name.removeprefix(FINE_TUNED_PREFIX)
        if inner in dropped or conformer and (inner.startswith(CONFORMER_DROPPED) or ROTARY_BUFFER.match(inner)):
            continue
        hf = name if hubert and name.startswith("final_proj.") else fairseq_to_hf(name, model_family == "data2vec_audio",
                                                                                 conformer)
        if hf is None:
            unknown.append(name)
        else:
            tensors[hf] = value
    if unknown:
        raise ConversionError(f"{source}: tensors with no known Hugging Face name: {', '.join(sorted(unknown))}")
    return tensors


def ctc_vocab(state: dict, path: Path, dict_path: Path | None, rows: int) -> dict[str, int]:
    """The CTC vocabulary: --dict, else the checkpoint's own target dictionary, else dict.ltr.txt beside it."""
    target = _dict(state.get("task_state")).get("target_dictionary")
    if dict_path is None and isinstance(target, Dictionary) and target.vocab():
        vocab, origin = target.vocab(), f"{path} (task_state)"
    else:
        dict_path = dict_path or path.with_name("dict.ltr.txt")
        if not dict_path.is_file():
            raise ConversionError(f"{path}: a fine-tuned CTC checkpoint needs its letter dictionary: "
                                  f"--dict dict.ltr.txt (none at {dict_path})")
        vocab, origin = read_letter_dict(dict_path), str(dict_path)
    if len(vocab) != rows:
        raise ConversionError(f"{origin}: {len(vocab)} symbols with fairseq's 4 special ones, "
                              f"but the checkpoint's CTC head has {rows} outputs")
    return vocab


# Pretraining options that add heads transformers' Wav2Vec2ForPreTraining has no place for.
UNSUPPORTED_PRETRAINING = {
    "quantize_input": "a second quantizer on the transformer's input",
    "target_glu": "a GLU over the targets",
}


def check_pretraining_heads(model: dict, weights: dict, source: str) -> None:
    """Refuse, by the option's name, pretrained checkpoints whose heads transformers cannot hold.

    ``weights`` under fairseq's names; fine-tuned checkpoints have no pretraining heads left.
    """
    if "project_q.weight" not in weights:
        return
    if "quantizer.vars" not in weights:
        raise ConversionError(f"{source}: pretrained without a quantizer (quantize_targets=False), "
                              "which transformers' Wav2Vec2ForPreTraining does not have")
    for option, what in UNSUPPORTED_PRETRAINING.items():
        if model.get(option):
            raise ConversionError(f"{source}: pretrained with {option}=True ({what}), "
                                  "which transformers' Wav2Vec2ForPreTraining has no place for")
    if (model.get("quantizer_depth") or 1) != 1:
        raise ConversionError(f"{source}: pretrained with quantizer_depth={model['quantizer_depth']!r:.60}, "
                              "but transformers' quantizer has a single linear layer")


def add_identity_projection(tensors: dict, config: dict) -> None:
    """fairseq has no post_extract_proj when the conv and model widths are equal: npw2v2 uses an identity.

    Only when the tensors confirm the width (the encoder's layer norm is that wide): an identity
    is never allocated from the configuration's number alone; else the shape check names the gap.
    """
    if "feature_projection.projection.weight" in tensors or config["conv_dim"][-1] != config["hidden_size"]:
        return
    size = config["hidden_size"]
    norm = tensors.get("encoder.layer_norm.weight")
    if norm is None or tuple(np.shape(norm)) != (size,):
        return
    tensors["feature_projection.projection.weight"] = np.eye(size, dtype=np.float32)
    tensors["feature_projection.projection.bias"] = np.zeros(size, dtype=np.float32)


def read_file(path: Path, dict_path: Path | None = None) -> Checkpoint:
    """Read an original fairseq wav2vec 2.0 or HuBERT checkpoint, pretrained or fine-tuned for CTC (hubert_ctc)."""
    source = str(path)
    state = load_torch_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConversionError(
            f"{source}: not a fairseq checkpoint (no 'model' state dict); "
            "a Hugging Face pytorch_model.bin converts from its folder, with config.json"
        )
    from . import wavlm  # imports this module: here, not at the top

    if wavlm.is_original(state):  # microsoft/unilm's WavLM: a flat cfg of its own fields, its attention's tensors
        return wavlm.read_state(state, source, SAMPLING_RATE)
    model, task = model_and_task(state, source)
    hubert = is_hubert(model)
    if not is_conformer(model):  # a conformer's pretraining heads are dropped (CONFORMER_DROPPED)
        check_pretraining_heads(model, state["model"], source)
    tensors = rename(state["model"], source, family(model), is_conformer(model))
    vocab = None
    if "lm_head.weight" in tensors:
        vocab = ctc_vocab(state, path, dict_path, tensors["lm_head.weight"].shape[0])
    final_proj = tensors.get("final_proj.weight") if hubert else None
    try:
        config = hf_config(model, len(vocab) if vocab else None, None if final_proj is None else final_proj.shape[0])
    except ConversionError as e:
        raise ConversionError(f"{source}: {e}") from None
    add_identity_projection(tensors, config)
    normalize = bool(task.get("normalize", False))
    preprocessor = {"do_normalize": normalize, "sampling_rate": SAMPLING_RATE, "feature_size": 1,
                    "padding_value": 0.0, "padding_side": "right", "return_attention_mask": normalize}
    return Checkpoint(tensors=tensors, config=config, source_format="fairseq", vocab=vocab, preprocessor=preprocessor)
