"""Make real fairseq conformer wav2vec 2.0 checkpoints, tiny ones, and record fairseq's activations.

Run in fairseq's environment (see golden/README.md; fairseq_fixtures.py's helpers are reused):

    /work/venv-fairseq/bin/python golden/fairseq_conformer_fixtures.py   # rewrites golden/data/fairseq_conformer/

Each model is fairseq's own Wav2Vec2Model with ``layer_type="conformer"`` and ESPnet attention
(``attn_type="espnet"``), as the published wav2vec2-conformer checkpoints were trained: relative
positions (``pos_enc_type="rel_pos"``) or rotary ones (``"rope"``), pre-LN (``layer_norm_first``:
the encoder's LayerNorm after the last block, as transformers' conformer has it), layer-normed
conv layers with bias. Its parameters are redrawn by fairseq_fixtures.randomize, the conv modules'
batch-norm running statistics too (they are buffers), and it is saved with fairseq's
``checkpoint_utils.torch_persistent_save`` in the "cfg" era's layout (a pretraining checkpoint:
quantizer, project_q and final_proj included). Recorded on single inputs: ``hidden_states.N`` =
``extract_features(layer=N - 1)['x']`` (the output of block N, before the encoder's LayerNorm) and
``last_hidden_state`` = ``extract_features()['x']``. ``conformer_ctc.pt`` is fine-tuned: fairseq's
``Wav2VecCtc``, which its ``Wav2VecEncoder`` builds from ``conformer_rel_pos.pt`` (w2v_path), all its
parameters redrawn, with ``dict.ltr.txt`` beside it; recorded: its CTC ``logits``.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fairseq_fixtures import (LETTER_DICTIONARY, extra_state, finetuning_args, finetuning_task,  # noqa: E402
                              optimizer_history, quiet, randomize, versions)
from signals import speech_like_batch  # noqa: E402

from fairseq import checkpoint_utils  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq.models.wav2vec import wav2vec2  # noqa: E402
from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model  # noqa: E402
from fairseq.tasks.audio_pretraining import AudioPretrainingConfig  # noqa: E402

# fairseq 0.12.3's TransformerEncoder passes keywords added with its adapter layers (layer_idx= to
# build_encoder_layer, corpus_key= to extract_features) that ConformerEncoder's overrides do not take: a
# TypeError before any conformer is built or run. These shims drop the keyword and call ConformerEncoder's
# own methods, which compute what they always did.
_conformer_layer = wav2vec2.ConformerEncoder.build_encoder_layer
wav2vec2.ConformerEncoder.build_encoder_layer = lambda self, args, **_: _conformer_layer(self, args)
_conformer_features = wav2vec2.ConformerEncoder.extract_features
wav2vec2.ConformerEncoder.extract_features = \
    lambda self, x, padding_mask=None, tgt_layer=None, corpus_key=None: _conformer_features(self, x, padding_mask,
                                                                                             tgt_layer)

OUT = Path(__file__).resolve().parent / "data" / "fairseq_conformer"
WEIGHT_SEED = 4322
INPUT_SEED = 5678
LENGTHS = [5000, 400, 3217]  # golden/record.py's tiny lengths, each input alone
CONV = "[(16, 10, 5), (16, 3, 2), (24, 3, 2), (24, 3, 2), (24, 3, 2), (32, 2, 2), (32, 2, 2)]"
TINY = dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
            conv_feature_layers=CONV, conv_pos=16, conv_pos_groups=4, final_dim=12, latent_vars=8, latent_groups=2,
            layer_type="conformer", attn_type="espnet", layer_norm_first=True, extractor_mode="layer_norm",
            conv_bias=True, quantize_targets=True)
FIXTURES = {
    # like wav2vec2_conformer_relpos (wav2vec2-conformer-rel-pos-large): relative positions
    "conformer_rel_pos": dict(TINY, pos_enc_type="rel_pos", depthwise_conv_kernel_size=7),
    # like wav2vec2_conformer_rope (...-rope-large): rotary positions, another kernel
    "conformer_rope": dict(TINY, pos_enc_type="rope", depthwise_conv_kernel_size=5),
}


def redraw_batch_norm_statistics(model: torch.nn.Module, seed: int) -> None:
    """The conv modules' running statistics, which randomize leaves at 0 and 1: means 0.1 N, variances 1 + 0.1 |N|."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(1 + 0.1 * torch.randn(module.running_var.shape, generator=generator).abs())


def make(name: str) -> tuple[Wav2Vec2Model, dict]:
    """Build, randomize and save one fixture; returns the model and its cfg as saved."""
    cfg = Wav2Vec2Config(**FIXTURES[name])
    model = Wav2Vec2Model(cfg).eval()
    randomize(model, WEIGHT_SEED)
    redraw_batch_norm_statistics(model, WEIGHT_SEED + 1)
    task = OmegaConf.to_container(OmegaConf.structured(AudioPretrainingConfig(data="manifest", sample_rate=16000,
                                                                              normalize=False)), enum_to_str=True)
    task.update(_name="audio_pretraining", seed=1, tpu=False)  # fairseq resolves these from common.*
    plain = {"model": {**OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True),
                       "_name": "wav2vec2"}, "task": task}
    state = {"args": None, "cfg": plain, "model": model.state_dict(), "criterion": None,
             "optimizer_history": optimizer_history("wav2vec"), "task_state": {}, "extra_state": extra_state()}
    checkpoint_utils.torch_persistent_save(state, f"{name}.pt")
    return model, plain


def make_ctc(pretrained: str) -> tuple[torch.nn.Module, dict]:
    """conformer_ctc.pt: fairseq's Wav2VecCtc fine-tuned from PRETRAINED.pt (its cfg nests the pretraining run's)."""
    cfg = convert_namespace_to_omegaconf(finetuning_args(f"{pretrained}.pt", "audio_finetuning"))
    cfg.model.layer_type = "conformer"  # fairseq 0.12.3's Wav2VecEncoder puts the fine-tuning layer_type over w2v_args'
    task = finetuning_task()
    with contextlib.redirect_stdout(io.StringIO()):  # load_model_weights prints the model
        model = task.build_model(cfg.model)
    randomize(model, WEIGHT_SEED + 2)
    redraw_batch_norm_statistics(model, WEIGHT_SEED + 3)
    state = {"args": None, "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
             "model": model.state_dict(), "criterion": None, "optimizer_history": optimizer_history("ctc"),
             "task_state": {}, "extra_state": extra_state()}
    checkpoint_utils.torch_persistent_save(state, "conformer_ctc.pt")
    return model.eval(), state["cfg"]


@torch.no_grad()
def record_ctc(model) -> dict:
    """conformer_ctc.CASE.logits: the CTC logits [1, T, V], each input alone."""
    batch, _ = speech_like_batch(LENGTHS, INPUT_SEED)
    arrays = {}
    for i, n in enumerate(LENGTHS):
        case = "single" if i == 0 else f"alone.{i}"
        arrays[f"conformer_ctc.{case}.input_values"] = batch[i:i + 1, :n]
        out = model.w2v_encoder(source=torch.from_numpy(batch[i:i + 1, :n]), padding_mask=None)
        arrays[f"conformer_ctc.{case}.logits"] = out["encoder_out"].transpose(0, 1).numpy()  # fairseq's [T, B, V]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


@torch.no_grad()
def record(name: str, model: Wav2Vec2Model) -> dict:
    """NAME.CASE.STAGE arrays: each input alone ("single" the longest), every block's output and the last state."""
    batch, _ = speech_like_batch(LENGTHS, INPUT_SEED)
    arrays = {}
    for i, n in enumerate(LENGTHS):
        case = "single" if i == 0 else f"alone.{i}"
        x = torch.from_numpy(batch[i:i + 1, :n])
        arrays[f"{name}.{case}.input_values"] = batch[i:i + 1, :n]
        arrays[f"{name}.{case}.last_hidden_state"] = model.extract_features(x, None, mask=False)["x"].numpy()
        for layer in range(1, len(model.encoder.layers) + 1):
            h = model.extract_features(x, None, mask=False, layer=layer - 1)["x"]
            arrays[f"{name}.{case}.hidden_states.{layer}"] = h.numpy()
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def main() -> None:
    quiet()
    torch.manual_seed(0)
    arrays, configs = {}, {}
    # relative paths (manifest/ for data, w2v_path) keep the saved configs machine-independent
    with tempfile.TemporaryDirectory() as work, contextlib.chdir(work):
        Path("manifest").mkdir()
        Path("manifest/dict.ltr.txt").write_text(LETTER_DICTIONARY)
        for name in FIXTURES:
            model, plain = make(name)
            arrays.update(record(name, model))
            configs[name] = {"fields": FIXTURES[name], "cfg": plain, "names": sorted(model.state_dict())}
        model, plain = make_ctc("conformer_rel_pos")
        arrays.update(record_ctc(model))
        configs["conformer_ctc"] = {"fine_tuned_from": "conformer_rel_pos", "cfg": plain,
                                    "names": sorted(model.state_dict())}
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        for name in [*FIXTURES, "conformer_ctc"]:
            shutil.copyfile(f"{name}.pt", OUT / f"{name}.pt")
    (OUT / "dict.ltr.txt").write_text(LETTER_DICTIONARY)
    save_file(arrays, str(OUT / "activations.safetensors"))
    manifest = {"command": "python golden/fairseq_conformer_fixtures.py", "versions": versions(),
                "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED, "lengths": LENGTHS, "fixtures": configs}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    print(f"wrote {OUT}: {sorted(p.name for p in OUT.iterdir())}")


if __name__ == "__main__":
    main()
