"""Make real fairseq wav2vec 2.0 checkpoints, tiny ones, and record fairseq's activations.

The checkpoint converter (convert/fairseq.py) reads original fairseq checkpoints without
torch. These fixtures are made by fairseq itself, so their state-dict names and pickled
configuration objects are the real ones, in both eras of fairseq's checkpoint layout:

- "args" era (fairseq <= 0.10, e.g. wav2vec_small.pt, wav2vec_small_960h.pt):
  ``state["args"]`` is an ``argparse.Namespace``; a fine-tuned model nests the
  pretraining Namespace as ``args.w2v_args``.
- "cfg" era (hydra fairseq, here fairseq-fixed 0.12.3.1): ``state["args"]`` is None and
  ``state["cfg"]`` is what ``Trainer.state_dict`` writes, the config as plain containers;
  a fine-tuned model nests the whole pretraining config under ``cfg["model"]["w2v_args"]``.

Run it in a separate environment, never in the project's own (it needs fairseq and torch):

    python3 -m venv /work/venv-fairseq
    /work/venv-fairseq/bin/pip install torch==2.13.0 fairseq-fixed numpy safetensors
    /work/venv-fairseq/bin/python golden/fairseq_fixtures.py   # rewrites golden/data/fairseq/

Every model is built through fairseq's own parser, config conversion and task, then its
parameters are redrawn from a seeded torch generator (nothing is trivially 0 or 1), saved
with fairseq's ``checkpoint_utils.torch_persistent_save``, loaded back with fairseq's
``checkpoint_utils.load_model_ensemble_and_task`` and checked to reproduce the recording.
Outputs, all under golden/data/fairseq/:

- ``NAME.pt``: the checkpoints (see FIXTURES), and ``dict.ltr.txt`` for the CTC ones.
- ``activations.safetensors``: ``NAME.CASE.STAGE`` arrays, CASE in {single, batch}.
- ``manifest.json``: versions, seeds, the pickle globals of every file, each config.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import pickletools
import platform
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import omegaconf
import torch
from omegaconf import OmegaConf
from safetensors.numpy import save_file
from signals import speech_like_batch

import fairseq
from fairseq import checkpoint_utils, options, tasks
from fairseq.data.dictionary import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.logging import metrics
from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Model
from fairseq.models.wav2vec.wav2vec2_asr import Wav2VecCtc

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "fairseq"
# fairseq's LibriSpeech letter dictionary (facebookresearch/fairseq, MIT), symbol and count per
# line; fairseq's Dictionary puts <s> (the CTC blank), <pad>, </s>, <unk> before it: 32 outputs.
LETTER_DICTIONARY = """\
| 94802
E 51860
T 38431
A 33152
O 31495
N 28855
I 28794
H 27187
S 26071
R 23546
D 18289
L 16308
U 12400
M 10685
W 10317
C 9844
F 9062
G 8924
Y 8226
P 6890
B 6339
V 3936
K 3456
' 1023
X 636
J 598
Q 437
Z 213
"""
INPUT_SEED = 5678
LENGTHS = [5000, 3217]  # the batch case, right-padded with zeros; single = the first alone
MASK_SEED = 91  # the pretrained models' "masked" case: which frames are hidden, which negatives are scored
NUM_NEGATIVES = 5
COMMAND = "python golden/fairseq_fixtures.py"

# The model fields of the original wav2vec_small.pt (fairseq's base pretraining config).
BASE_MODEL = dict(
    extractor_mode="default", conv_bias=False, layer_norm_first=False,
    activation_fn="gelu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    dropout_input=0.1, dropout_features=0.1, encoder_layerdrop=0.05, feature_grad_mult=0.1,
    quantize_targets=True, quantize_input=False, same_quantizer=False, target_glu=False,
    latent_dim=0, latent_temp=(2.0, 0.5, 0.999995), logit_temp=0.1,
    quantizer_depth=1, quantizer_factor=3, num_negatives=100, negatives_from_everywhere=False,
    cross_sample_negatives=0, codebook_negatives=0,
    mask_length=10, mask_prob=0.65, mask_selection="static", mask_other=0.0, no_mask_overlap=False,
    mask_min_space=1, mask_channel_length=10, mask_channel_prob=0.0, mask_channel_before=False,
    mask_channel_selection="static", mask_channel_other=0.0, no_mask_channel_overlap=False,
    mask_channel_min_space=1,
)
# Tiny sizes with the standard conv geometry (400-sample receptive field, 320-sample stride).
TINY = dict(
    conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    encoder_embed_dim=48, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_embed_dim=96,
    conv_pos=16, conv_pos_groups=4, latent_vars=8, latent_groups=2, final_dim=16,
)
# What wav2vec_vox_new.pt (wav2vec2-large-lv60) changes besides the sizes.
LARGE_STYLE = dict(
    extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True, dropout=0.0,
    encoder_layerdrop=0.0, feature_grad_mult=1.0, latent_temp=(2.0, 0.1, 0.999995),
)
# The fine-tuning fields of the original wav2vec_small_960h.pt (model.* besides w2v_args).
CTC_MODEL = dict(
    apply_mask=True, mask_prob=0.5, mask_length=10, mask_selection="static", mask_other=0.0,
    no_mask_overlap=False, mask_channel_prob=0.1, mask_channel_length=64,
    mask_channel_selection="static", mask_channel_other=0.0, no_mask_channel_overlap=False,
    mask_channel_before=False, dropout=0.0, attention_dropout=0.0, activation_dropout=0.1,
    dropout_input=0.0, final_dropout=0.0, layerdrop=0.1, feature_grad_mult=0.0,
    freeze_finetune_updates=0, normalize=False, blank_weight=0.0, blank_mode="add",
)
# wav2vec2 model fields that fairseq 0.12 has but a 2020 args-era checkpoint never wrote
# (conformer, adapters, activation checkpointing, pos_conv_depth...): the converter must
# default them, so the args-era fixtures leave them out. (required_seq_len_multiple stays:
# the flat Namespace shares it with the dataset options.)
NEWER_MODEL_FIELDS = (
    "layer_type", "pos_conv_depth", "max_positions", "checkpoint_activations",
    "crop_seq_to_multiple", "depthwise_conv_kernel_size",
    "attn_type", "pos_enc_type", "adp_num", "adp_dim", "adp_act_fn", "adp_trf_idx",
    "require_same_masks", "mask_dropout",
)

# fairseq <= 0.10's Wav2VecEncoder overrode these pretraining fields (keys) with the
# fine-tuning ones (values) when it loaded w2v_path, and saved the result as args.w2v_args.
OLD_ENCODER_OVERRIDES = {
    **{k: k for k in ("dropout", "activation_dropout", "dropout_input", "attention_dropout",
                      "mask_length", "mask_prob", "mask_selection", "mask_other", "no_mask_overlap",
                      "mask_channel_length", "mask_channel_prob", "mask_channel_selection",
                      "mask_channel_other", "no_mask_channel_overlap", "feature_grad_mult")},
    "encoder_layerdrop": "layerdrop",
}

# name -> (era, model fields, weight seed). Pairs that share a seed have the same weights,
# so their conversions must agree tensor for tensor.
PRETRAINED = {
    "w2v_pretrained_args": ("args", dict(BASE_MODEL, **TINY), 1234),
    "w2v_pretrained_cfg": ("cfg", dict(BASE_MODEL, **TINY), 1234),
    "w2v_large_cfg": ("cfg", dict(BASE_MODEL, **TINY, **LARGE_STYLE), 1235),
    "w2v_noproj_cfg": ("cfg", dict(BASE_MODEL, **dict(TINY, encoder_embed_dim=32)), 1236),
    # w2v_pretrained_args again, in torch's legacy (pre-1.6, non-zip) serialization format
    "w2v_pretrained_legacy": ("args", dict(BASE_MODEL, **TINY), 1234),
    # w2v_pretrained_cfg again, with cfg pickled as the omegaconf DictConfig itself, as some
    # hydra-era files hold it (fairseq 0.12 stores plain containers)
    "w2v_pretrained_dictconfig": ("dictconfig", dict(BASE_MODEL, **TINY), 1234),
}
LEGACY_FORMAT = {"w2v_pretrained_legacy"}
# name -> (era, the pretrained fixture it is fine-tuned from, weight seed)
CTC = {
    "w2v_ctc_args": ("args", "w2v_pretrained_args", 1237),
    "w2v_ctc_cfg": ("cfg", "w2v_pretrained_cfg", 1237),
}
FIXTURES = list(PRETRAINED) + list(CTC)


# --- configs, through fairseq's own parser -------------------------------------------------

def cli_flags(fields: dict) -> list[str]:
    """Command-line flags for fairseq's training parser: encoder_embed_dim=48 -> --encoder-embed-dim 48."""
    flags = []
    for key, value in fields.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                flags.append(flag)  # store_true flags; False is the default
        elif isinstance(value, tuple):
            flags += [flag, "(" + ",".join(str(v) for v in value) + ")"]
        else:
            flags += [flag, str(value)]
    return flags


def parse_training_args(data: str, task: str, arch: str, criterion: str, fields: dict,
                        extra: list[str] = ()) -> argparse.Namespace:
    """The flat Namespace fairseq-train builds from a command line (the args-era config)."""
    parser = options.get_training_parser()
    argv = [data, "--task", task, "--arch", arch, "--criterion", criterion,
            "--optimizer", "adam", "--lr-scheduler", "polynomial_decay", "--lr", "0.0005",
            "--max-update", "400000", "--total-num-update", "400000", "--fp16", *extra, *cli_flags(fields)]
    return options.parse_args_and_arch(parser, argv)


def pretraining_args(fields: dict, old: bool) -> argparse.Namespace:
    """A wav2vec2 pretraining Namespace; old=True drops the fields newer than the args era."""
    args = parse_training_args("manifest", "audio_pretraining", "wav2vec2", "wav2vec", fields,
                               ["--log-keys", '["prob_perplexity","code_perplexity","temp"]'])
    if old:
        for key in NEWER_MODEL_FIELDS:
            if hasattr(args, key):
                delattr(args, key)
        # a 2020 parser kept --latent-temp as the string the model eval'd
        args.latent_temp = "(" + ",".join(f"{v:g}" for v in fields["latent_temp"]) + ")"
    return args


def finetuning_args(w2v_path: str, task: str) -> argparse.Namespace:
    """A wav2vec_ctc fine-tuning Namespace over the letter labels."""
    return parse_training_args("manifest", task, "wav2vec_ctc", "ctc", dict(CTC_MODEL, w2v_path=w2v_path),
                               ["--labels", "ltr", "--post-process", "letter"])


def finetuning_task():
    """fairseq's audio_finetuning task over the letter dictionary in ./manifest."""
    cfg = convert_namespace_to_omegaconf(finetuning_args("unused.pt", "audio_finetuning"))
    return tasks.setup_task(cfg.task)


# --- weights ---------------------------------------------------------------------------------

FEATURE_CONVS = "feature_extractor.conv_layers."


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter from a seeded generator, in named_parameters order.

    Matrices and kernels: N(0, 1/fan_in), except the feature extractor's conv kernels,
    N(0, 2/fan_in), so the features keep their scale through seven conv + GELU layers.
    Norm weights: 1 + 0.1 N; biases and other vectors (mask_emb): 0.1 N; the codebook
    quantizer.vars: N(0, 1). The positional conv's
    weight-norm magnitude weight_g ([1, 1, K]) is ||weight_v|| over dims (0, 1) times
    (1 + 0.1 N), drawn last, once weight_v is final.
    """
    generator = torch.Generator().manual_seed(seed)
    norm_params = {f"{m}.{p}" if m else p
                   for m, module in model.named_modules()
                   if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm))
                   for p, _ in module.named_parameters(recurse=False)}
    params = dict(model.named_parameters())
    magnitudes = [name for name in params if name.endswith("weight_g")]
    with torch.no_grad():
        for name, p in params.items():
            if name in magnitudes:
                continue
            noise = torch.randn(p.shape, generator=generator)
            if name in norm_params and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("quantizer.vars"):
                p.copy_(noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            elif FEATURE_CONVS in name:
                p.copy_(noise * math.sqrt(2 / p[0].numel()))  # He: a GELU follows each conv
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
        for name in magnitudes:
            g, v = params[name], params[name[:-1] + "v"]
            g.copy_(v.norm(dim=(0, 1), keepdim=True) * (1 + 0.1 * torch.randn(g.shape, generator=generator)))


# --- checkpoints, in each era's layout -------------------------------------------------------

def extra_state() -> dict:
    """extra_state as fairseq's trainer and save_checkpoint fill it (fixed numbers, no clocks)."""
    metrics.reset()
    with metrics.aggregate("train"):
        metrics.log_scalar("loss", 3.25, 8, round=3)
        metrics.log_scalar("wps", 1234.5, priority=90, round=1)
    return {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
            "val_loss": 3.25, "best": 3.25,
            "metrics": metrics.state_dict(), "previous_training_time": 3600.0}


def optimizer_history(criterion: str) -> list[dict]:
    """One optimizer_history entry as fairseq writes it (optimizer state itself left out)."""
    return [{"criterion_name": criterion, "optimizer_name": "FairseqAdam",
             "lr_scheduler_state": {"best": 3.25}, "num_updates": 400000}]


def args_era_state(args: argparse.Namespace, model, criterion: str) -> dict:
    """fairseq <= 0.10 checkpoint_utils.save_state's layout: args, model, history, extra_state."""
    return {"args": args, "model": model.state_dict(),
            "optimizer_history": optimizer_history(criterion), "extra_state": extra_state()}


def cfg_era_state(cfg, model, task, criterion: str, keep_dictconfig: bool = False) -> dict:
    """fairseq 0.12 Trainer.state_dict's layout, without the optimizer state."""
    return {"args": None,
            "cfg": cfg if keep_dictconfig else OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "model": model.state_dict(), "criterion": None,
            "optimizer_history": optimizer_history(criterion),
            "task_state": task.state_dict(), "extra_state": extra_state()}


def save(state: dict, name: str) -> None:
    """Write NAME.pt as fairseq does (torch.save through torch_persistent_save), or for the
    LEGACY_FORMAT fixtures as torch < 1.6 did: a stream of pickles and raw storages, no zip."""
    if name in LEGACY_FORMAT:
        torch.save(state, f"{name}.pt", _use_new_zipfile_serialization=False)
    else:
        checkpoint_utils.torch_persistent_save(state, f"{name}.pt")


# --- building each fixture -------------------------------------------------------------------

def make_pretrained(name: str) -> tuple[Wav2Vec2Model, dict]:
    """Build, randomize and save one pretrained Wav2Vec2Model fixture; returns it and its configs."""
    era, fields, seed = PRETRAINED[name]
    args = pretraining_args(fields, old=(era == "args"))
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    check_fields(cfg.model, fields)
    model = task.build_model(cfg.model)
    randomize(model, seed)
    if era == "args":
        save(args_era_state(args, model, "Wav2vecCriterion"), name)
    else:
        save(cfg_era_state(cfg, model, task, "Wav2vecCriterion", keep_dictconfig=(era == "dictconfig")), name)
    return model.eval(), configs(args if era == "args" else cfg, cfg.model)


def make_ctc(name: str) -> tuple[Wav2VecCtc, dict]:
    """Build, randomize and save one fine-tuned Wav2VecCtc fixture; returns it and its configs.

    cfg era: fairseq's Wav2VecEncoder loads the pretrained fixture from w2v_path and nests its
    config as model.w2v_args (criterion and lr_scheduler set to None), as fine-tuning does.
    args era: the pretraining Namespace is nested as args.w2v_args, as fairseq <= 0.10 did.
    """
    era, pretrained, seed = CTC[name]
    task = finetuning_task()
    if era == "args":
        args = finetuning_args(f"{pretrained}.pt", "audio_pretraining")  # 2020 fine-tuning used this task
        args.w2v_args = torch.load(f"{pretrained}.pt", weights_only=False)["args"]
        for inner, outer in OLD_ENCODER_OVERRIDES.items():  # as fairseq <= 0.10's Wav2VecEncoder
            setattr(args.w2v_args, inner, CTC_MODEL[outer])
        args.w2v_args.data = args.data
        cfg = args_era_ctc_config(args)
    else:
        cfg = convert_namespace_to_omegaconf(finetuning_args(f"{pretrained}.pt", "audio_finetuning"))
    check_fields(cfg.model, CTC_MODEL)
    with contextlib.redirect_stdout(io.StringIO()):  # load_model_weights prints the model
        model = task.build_model(cfg.model)
    randomize(model, seed)
    if era == "args":
        save(args_era_state(args, model, "CtcCriterion"), name)
    else:
        save(cfg_era_state(cfg, model, task, "CtcCriterion"), name)
    ctc = {k: v for k, v in plain(cfg.model).items() if k != "w2v_args"}
    stored = args if era == "args" else cfg
    return model.eval(), dict(configs(stored, cfg.model.w2v_args.model), ctc_config=ctc)


def args_era_ctc_config(args: argparse.Namespace):
    """The DictConfig fairseq 0.12 means for an args-era fine-tuned Namespace.

    fairseq's convert_namespace_to_omegaconf turns a nested w2v_args Namespace into
    "model.w2v_args.common..." overrides, which hydra 1.3 refuses (model.w2v_args is None
    there), so fairseq 0.12 cannot load such a file by itself: convert the outer Namespace
    without it, then nest the converted pretraining config, as Wav2VecEncoder does.
    """
    outer = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "w2v_args"})
    cfg = convert_namespace_to_omegaconf(outer)
    with omegaconf.open_dict(cfg):
        cfg.model.w2v_args = convert_namespace_to_omegaconf(args.w2v_args)
    return cfg


def check_fields(model_cfg, fields: dict) -> None:
    """Fail unless fairseq's parsed model config holds every intended field value."""
    for key, value in fields.items():
        want = list(value) if isinstance(value, tuple) else value
        if model_cfg[key] != want:
            raise AssertionError(f"{key}: fairseq parsed {model_cfg[key]!r}, not {want!r}")


def plain(config) -> dict:
    """A Namespace or DictConfig (nested ones too) as JSON-ready dicts and lists."""
    if isinstance(config, argparse.Namespace):
        return {k: plain(v) for k, v in sorted(vars(config).items())}
    if OmegaConf.is_config(config):
        return plain(OmegaConf.to_container(config, resolve=True, enum_to_str=True))
    if isinstance(config, dict):
        return {k: plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [plain(v) for v in config]
    return config


def configs(stored, model_cfg) -> dict:
    """The manifest's view of a fixture's configuration: what the file stores (config) and
    the wav2vec2 model fields fairseq 0.12 derives from it, defaults filled (model_config)."""
    return {"model_config": plain(model_cfg), "config": plain(stored)}


# --- inputs and activations ------------------------------------------------------------------

def each_alone(lengths: list[int], seed: int) -> list[tuple[str, np.ndarray]]:
    """(case, [1, n] input) of signals.speech_like_batch's inputs, each alone: "single" the first, then "alone.i"."""
    batch, _ = speech_like_batch(lengths, seed)
    return [("single" if i == 0 else f"alone.{i}", batch[i:i + 1, :n]) for i, n in enumerate(lengths)]


@torch.no_grad()
def ctc_logits(name: str, model, inputs: list[tuple[str, np.ndarray]]) -> dict:
    """NAME.CASE.input_values and NAME.CASE.logits [1, T, V] of a fine-tuned fairseq model (its
    w2v_encoder, as fairseq's inference runs it), for each (case, input) of ``inputs``."""
    arrays = {}
    for case, x in inputs:
        arrays[f"{name}.{case}.input_values"] = x
        out = model.w2v_encoder(source=torch.from_numpy(x), padding_mask=None)
        arrays[f"{name}.{case}.logits"] = out["encoder_out"].transpose(0, 1).numpy()  # fairseq's [T, B, V]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def make_inputs(lengths: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The recorded batch and its padding mask, True = padding (fairseq's convention)."""
    batch, mask = speech_like_batch(lengths, seed)
    return batch, ~mask


@torch.no_grad()
def run_case(model, source: np.ndarray, padding: np.ndarray | None) -> dict:
    """fairseq's forward pass with mask=False: conv features [B, T, C], the transformer output
    [B, T, D], the frame padding mask when padded, and for CTC the logits [B, T, V]."""
    w2v = model.w2v_encoder.w2v_model if isinstance(model, Wav2VecCtc) else model
    captured = {}
    hook = w2v.feature_extractor.register_forward_hook(lambda m, i, o: captured.update(conv=o))
    x = torch.from_numpy(source)
    mask = None if padding is None else torch.from_numpy(padding)
    res = w2v.extract_features(x, mask, mask=False)
    stages = {"input_values": source,
              "features": captured["conv"].transpose(1, 2).numpy(),
              "last_hidden_state": res["x"].numpy()}
    if padding is not None:
        stages["padding_mask"] = padding
        stages["frame_padding_mask"] = res["padding_mask"].numpy()
    if isinstance(model, Wav2VecCtc):
        out = model(source=x, padding_mask=mask)
        stages["logits"] = out["encoder_out"].transpose(0, 1).numpy()  # [T, B, V] -> [B, T, V]
    hook.remove()
    if not isinstance(model, Wav2VecCtc):
        stages.update(pretraining_stages(model, x, mask))
    return stages


@torch.no_grad()
def pretraining_stages(w2v: Wav2Vec2Model, x, padding, mask_indices=None, negatives=None) -> dict:
    """The pretraining heads on every frame, by fairseq's own modules, under transformers' names.

    quantizer (eval: argmax per group) on the unmasked features, project_q on its codevectors,
    final_proj on the context vectors; with ``negatives`` ([B, T, N] indices into the B * T
    frames) also compute_preds' logits [1 + N, B, T] (cosine / logit_temp, -inf where a
    negative equals its target). ``mask_indices`` hides frames behind mask_emb, as training does.
    """
    res = w2v(x, padding_mask=padding, mask=mask_indices is not None, mask_indices=mask_indices, features_only=True)
    q = w2v.quantizer(res["features"], produce_targets=True)
    targets = w2v.project_q(q["x"])
    context = w2v.final_proj(res["x"])
    stages = {"codevector_ids": q["targets"].numpy(), "projected_quantized_states": targets.numpy(),
              "projected_states": context.numpy(), "codevector_perplexity": q["code_perplexity"].numpy()}
    if negatives is not None:
        batch, frames, width = targets.shape
        picked = targets.reshape(batch * frames, width)[torch.from_numpy(negatives).reshape(-1)]
        stages["contrastive_logits"] = w2v.compute_preds(
            context, targets, picked.view(batch, frames, -1, width).permute(2, 0, 1, 3)).numpy()
    return stages


def masked_case(w2v: Wav2Vec2Model, source: np.ndarray) -> dict:
    """One input with half its frames hidden and NUM_NEGATIVES negatives per frame (fixed by MASK_SEED)."""
    frames = int(w2v._get_feat_extract_output_lengths(torch.tensor([source.shape[1]]))[0])
    rng = np.random.RandomState(MASK_SEED)
    hidden = np.zeros((1, frames), bool)
    hidden[0, rng.choice(frames, frames // 2, replace=False)] = True
    negatives = rng.randint(0, frames, size=(1, frames, NUM_NEGATIVES))
    stages = pretraining_stages(w2v, torch.from_numpy(source), None, torch.from_numpy(hidden), negatives)
    return {"input_values": source, "mask_time_indices": hidden, "sampled_negative_indices": negatives, **stages}


def record(name: str, model, inputs: tuple[np.ndarray, np.ndarray]) -> dict:
    """All stages of every case of one fixture, as NAME.CASE.STAGE arrays."""
    batch, padding = inputs
    cases = {"single": (batch[:1, :LENGTHS[0]], None), "batch": (batch, padding)}
    arrays = {f"{name}.{case}.{stage}": np.ascontiguousarray(value)
              for case, (x, m) in cases.items() for stage, value in run_case(model, x, m).items()}
    if not isinstance(model, Wav2VecCtc):
        arrays.update({f"{name}.masked.{stage}": np.ascontiguousarray(value)
                       for stage, value in masked_case(model, batch[:1, :LENGTHS[0]]).items()})
    return arrays


@contextlib.contextmanager
def _environment(variables: dict):
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_reload(name: str, arrays: dict) -> None:
    """Load NAME.pt with fairseq's own loader and check it reproduces the recorded stages.

    fairseq 0.12 cannot load an args-era fine-tuned file by itself (see args_era_ctc_config):
    that one is rebuilt from its stored Namespace and loaded with load_state_dict(strict=True).
    """
    # fairseq's torch.load runs with torch's weights_only default: allow the two classes these
    # files pickle besides tensors (args-era Namespace, fine-tuning's task_state Dictionary)
    allowed = [argparse.Namespace, Dictionary]
    # a pickled DictConfig needs a dozen omegaconf and typing globals: trust this file we just wrote
    trusting = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} if PRETRAINED.get(name, ("",))[0] == "dictconfig" else {}
    with torch.serialization.safe_globals(allowed), contextlib.redirect_stdout(io.StringIO()), \
            _environment(trusting):
        if name in CTC and CTC[name][0] == "args":
            state = torch.load(f"{name}.pt")
            model = finetuning_task().build_model(args_era_ctc_config(state["args"]).model)
            model.load_state_dict(state["model"], strict=True)
        else:
            task = finetuning_task() if name in CTC else None
            models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
                [f"{name}.pt"], arg_overrides={"data": "manifest"}, task=task)
            model = models[0]
    reloaded = record(name, model.eval(), make_inputs(LENGTHS, INPUT_SEED))
    for key, value in arrays.items():
        if not np.array_equal(reloaded[key], value):
            raise AssertionError(f"{name}: fairseq's loader gives a different {key}")


# --- the manifest ----------------------------------------------------------------------------

def pickle_globals(path: Path) -> list[str]:
    """The module.name globals a checkpoint's pickles reference (GLOBAL and STACK_GLOBAL).

    Zip format: archive/data.pkl. Legacy format: the leading pickles (magic number,
    protocol, sys_info, the object, the storage keys); the raw storages follow them.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pickles = [archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))]
    else:
        stream, pickles = io.BytesIO(path.read_bytes()), []
        for _ in range(5):
            start = stream.tell()
            for _op in pickletools.genops(stream):
                pass
            pickles.append(stream.getvalue()[start:stream.tell()])
    found = set()
    for data in pickles:
        found |= globals_of(data)
    return sorted(found)


def globals_of(data: bytes) -> set[str]:
    """The globals one pickle references; STACK_GLOBAL's two strings may come from the memo."""
    found, memo, pushed = set(), {}, []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
            pushed.append(None)
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{pushed[-2]}.{pushed[-1]}")
            pushed.append(None)
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1]
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            pushed.append(arg)
        else:
            pushed.append(None)
    return found


def zip_members(path: Path) -> list[str] | None:
    """The member names of a torch zip checkpoint (None for the legacy format)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "fairseq": fairseq.__version__, "fairseq_distribution": "fairseq-fixed",
            "omegaconf": omegaconf.__version__, "numpy": np.__version__}


# --- main ------------------------------------------------------------------------------------

def quiet() -> None:
    """Silence fairseq's and hydra's chatter (info logs, deprecation warnings)."""
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")


def main() -> None:
    """Make every fixture in a scratch folder, then replace golden/data/fairseq/ with them."""
    quiet()
    torch.manual_seed(0)
    # relative paths (manifest/ for data, w2v_path) keep the saved configs machine-independent
    with tempfile.TemporaryDirectory() as work, contextlib.chdir(work):
        Path("manifest").mkdir()
        Path("manifest/dict.ltr.txt").write_text(LETTER_DICTIONARY)
        inputs = make_inputs(LENGTHS, INPUT_SEED)
        arrays, configs = {}, {}
        for name in FIXTURES:
            model, configs[name] = make_pretrained(name) if name in PRETRAINED else make_ctc(name)
            recorded = record(name, model, inputs)
            check_reload(name, recorded)
            arrays.update(recorded)
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        (OUT / "dict.ltr.txt").write_text(LETTER_DICTIONARY)
        for name in FIXTURES:
            shutil.copyfile(f"{name}.pt", OUT / f"{name}.pt")
    save_file(arrays, str(OUT / "activations.safetensors"))
    write_manifest(configs)


NOTES = [
    "zip files are byte-for-byte reproducible; the legacy file is not: torch's legacy format "
    "keys storages by memory address, so only its keys (and offsets) change between runs.",
    "cfg era: cfg is a plain dict (Trainer.state_dict calls OmegaConf.to_container), nested w2v_args too; "
    "w2v_pretrained_dictconfig keeps it as the pickled omegaconf DictConfig instead.",
    "args era: latent_temp is the string '(2,0.5,0.999995)' and fields newer than 2020 "
    "(layer_type, pos_conv_depth, ...) are absent; model_config shows fairseq 0.12's defaults for them.",
    "w2v_ctc_cfg's task_state holds the target dictionary as a pickled fairseq.data.dictionary.Dictionary.",
    "fairseq 0.12 + hydra 1.3 cannot load an args-era fine-tuned file (nested w2v_args Namespace); "
    "w2v_ctc_args was checked by rebuilding it from its Namespace (see args_era_ctc_config).",
    "fairseq's torch.load uses torch's weights_only default: args-era files need argparse.Namespace "
    "allowed, w2v_ctc_cfg needs fairseq.data.dictionary.Dictionary.",
    "padded frames of batch outputs are fairseq's values (finite, meaningless): compare valid frames only; "
    "default-mode (group norm) models see the zero padding in the group norm statistics.",
    "pairs with the same weight_seed hold identical tensors: "
    "w2v_pretrained_args/_cfg/_legacy, w2v_ctc_args/_cfg.",
]


def fixture_entry(name: str, configs: dict) -> dict:
    """One fixture's manifest entry: how it was made, its file's layout, its configs."""
    path = OUT / f"{name}.pt"
    era, source, seed = PRETRAINED.get(name) or CTC[name]
    return {
        "file": path.name, "era": era, "kind": "ctc" if name in CTC else "pretrained",
        "weight_seed": seed, "finetuned_from": source if name in CTC else None,
        "format": "legacy" if name in LEGACY_FORMAT else "zip",
        "zip_members": zip_members(path),
        "pickle_globals": pickle_globals(path),
        **configs,
    }


def write_manifest(configs: dict) -> None:
    """manifest.json: how the data was made and what each checkpoint holds."""
    manifest = {
        "command": f"{COMMAND}  (in a venv with torch==2.13.0 and fairseq-fixed)",
        "versions": versions(),
        "input_seed": INPUT_SEED, "lengths": LENGTHS,
        "cases": {"single": "the first input alone", "batch": "both inputs right-padded with zeros",
                  "masked": f"pretrained models: the first input, half its frames behind mask_emb, "
                            f"{NUM_NEGATIVES} negatives per frame (seed {MASK_SEED})"},
        "stages": {
            "input_values": "[B, S] float32",
            "padding_mask": "[B, S] bool, True = padding (batch only)",
            "features": "[B, T, C]: feature_extractor output, transposed from [B, C, T]",
            "last_hidden_state": "[B, T, D]: extract_features(source, padding_mask, mask=False)['x']",
            "frame_padding_mask": "[B, T] bool, True = padding: extract_features' padding_mask (batch only)",
            "logits": "[B, T, V]: Wav2VecEncoder's proj output (CTC only; before get_logits' padding fill)",
            "codevector_ids": "[B, T, G]: quantizer(features, produce_targets=True)['targets'] (pretrained only)",
            "projected_quantized_states": "[B, T, P]: project_q(quantizer(features)['x'])",
            "projected_states": "[B, T, P]: final_proj(x)",
            "codevector_perplexity": "[]: quantizer's code_perplexity (all B * T frames, log(p + 1e-7))",
            "mask_time_indices": "[B, T] bool: the frames hidden behind mask_emb (masked only)",
            "sampled_negative_indices": "[B, T, N]: negatives, indices into the B * T frames (masked only)",
            "contrastive_logits": "[1 + N, B, T]: compute_preds(final_proj(x), targets, negatives) (masked only)",
        },
        "vocabulary": "fairseq Dictionary over dict.ltr.txt: <s>=0 (CTC blank), <pad>, </s>, <unk>, "
                      "then the file's symbols",
        "notes": NOTES,
        "fixtures": {name: fixture_entry(name, configs[name]) for name in FIXTURES},
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
