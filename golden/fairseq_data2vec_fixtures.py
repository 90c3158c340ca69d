"""Make real fairseq data2vec-audio checkpoints, tiny ones, and record fairseq's activations.

Run in fairseq's environment (see golden/README.md; fairseq_fixtures.py's helpers are reused):

    /work/venv-fairseq/bin/python golden/fairseq_data2vec_fixtures.py   # rewrites golden/data/fairseq_data2vec/

- ``data2vec_pretrained.pt``: fairseq's own Data2VecAudioModel (examples/data2vec), built from its
  Data2VecAudioConfig, parameters redrawn by fairseq_fixtures.randomize, saved in the "cfg" era's
  layout with what pretraining saves beside the encoder: the regression head ``final_proj`` and
  the EMA teacher's copy of the transformer (``_ema``, a dict of tensors), as audio_base_ls.pt has.
- ``data2vec_ctc.pt``: fine-tuned for CTC as audio_base_ls_960h.pt: fairseq's Wav2VecCtc, whose
  Wav2VecEncoder rebuilds a second pretrained model (an even positional kernel, conv bias) from its
  file, nested as ``w2v_encoder.w2v_model.*`` under the ``w2v_encoder.proj`` head, with the letter
  dictionary (``dict.ltr.txt`` beside it).

Recorded per model, each input alone (fairseq's frame padding mask for a padded batch is a
reshape of the sample mask, not transformers' conv lengths): the pretrained model's
``hidden_states.N`` (forward's ``layer=N - 1``: the output of layer N) and ``last_hidden_state``;
the fine-tuned model's CTC ``logits``.
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
from fairseq_fixtures import (LETTER_DICTIONARY, ctc_logits, each_alone, extra_state, finetuning_args,  # noqa: E402
                              finetuning_task, optimizer_history, quiet, randomize, versions)

from fairseq import checkpoint_utils  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq.examples.data2vec.models.data2vec_audio import Data2VecAudioConfig, Data2VecAudioModel  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "fairseq_data2vec"
WEIGHT_SEED = 2468
INPUT_SEED = 5678
LENGTHS = [5000, 400, 3217]  # golden/record.py's tiny lengths, each input alone
CONV = "[(16, 10, 5), (16, 3, 2), (24, 3, 2), (24, 3, 2), (24, 3, 2), (24, 2, 2), (24, 2, 2)]"
# data2vec-audio-base's shape, tiny: layer-normed conv layers, post-LN, pos_conv_depth convs of
# kernel max(3, conv_pos // pos_conv_depth) (base: 5 of 95 // 5 = 19)
TINY = dict(extractor_mode="layer_norm", conv_feature_layers=CONV, encoder_layers=2, encoder_embed_dim=32,
            encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos_groups=4, layer_norm_first=False)
PRETRAINED = {
    "data2vec_pretrained": dict(TINY, conv_pos=21, pos_conv_depth=3),  # 3 convs of kernel 7
    "data2vec_for_ctc": dict(TINY, conv_pos=12, pos_conv_depth=2, conv_bias=True),  # 2 of kernel 6: SamePad drops one
}


def pretraining_cfg(fields: dict) -> dict:
    """The cfg a data2vec pretraining run saves: the model and task sections as plain containers."""
    model = OmegaConf.structured(Data2VecAudioConfig(**fields))
    model.ema_anneal_end_step = model.max_update = 400000  # interpolated from the optimization section in a run
    return {"model": {**OmegaConf.to_container(model, resolve=True, enum_to_str=True), "_name": "data2vec_audio"},
            "task": {"_name": "audio_pretraining", "data": "manifest", "normalize": True, "sample_rate": 16000}}


def make_pretrained(name: str) -> tuple[Data2VecAudioModel, dict]:
    """Build, randomize and save NAME.pt with its EMA teacher, as a pretraining run saves it."""
    cfg = pretraining_cfg(PRETRAINED[name])
    model = Data2VecAudioModel(OmegaConf.create(cfg["model"])).eval()
    randomize(model, WEIGHT_SEED)
    model.make_ema_teacher()  # what set_num_updates does at the first update: _ema joins the state dict
    state = {"args": None, "cfg": cfg, "model": model.state_dict(), "criterion": None,
             "optimizer_history": optimizer_history("model"), "task_state": {}, "extra_state": extra_state()}
    checkpoint_utils.torch_persistent_save(state, f"{name}.pt")
    return model, cfg


def make_ctc(pretrained: str) -> tuple[torch.nn.Module, dict]:
    """data2vec_ctc.pt: fairseq's Wav2VecCtc fine-tuned from PRETRAINED.pt (its cfg nests the pretraining run's)."""
    cfg = convert_namespace_to_omegaconf(finetuning_args(f"{pretrained}.pt", "audio_finetuning"))
    cfg.model.normalize = cfg.task.normalize = True  # as the pretraining task: Wav2VecEncoder insists
    task = finetuning_task()
    with contextlib.redirect_stdout(io.StringIO()):  # load_model_weights prints the model
        model = task.build_model(cfg.model)
    randomize(model, WEIGHT_SEED + 1)
    state = {"args": None, "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
             "model": model.state_dict(), "criterion": None, "optimizer_history": optimizer_history("ctc"),
             "task_state": {}, "extra_state": extra_state()}
    checkpoint_utils.torch_persistent_save(state, "data2vec_ctc.pt")
    return model.eval(), state["cfg"]


@torch.no_grad()
def record_pretrained(name: str, model: Data2VecAudioModel) -> dict:
    arrays = {}
    for case, x in each_alone(LENGTHS, INPUT_SEED):
        source = torch.from_numpy(x)
        arrays[f"{name}.{case}.input_values"] = x
        arrays[f"{name}.{case}.last_hidden_state"] = model.extract_features(source, None)["x"].numpy()
        for layer in range(1, len(model.encoder.layers) + 1):
            out = model.extract_features(source, None, layer=layer - 1)["x"]  # forward stops after layer index N - 1
            arrays[f"{name}.{case}.hidden_states.{layer}"] = out.numpy()
    return arrays


def main() -> None:
    quiet()
    arrays, configs = {}, {}
    # relative paths (manifest/ for data, w2v_path) keep the saved configs machine-independent
    with tempfile.TemporaryDirectory() as work, contextlib.chdir(work):
        Path("manifest").mkdir()
        Path("manifest/dict.ltr.txt").write_text(LETTER_DICTIONARY)
        for name in PRETRAINED:
            model, configs[name] = make_pretrained(name)
            arrays.update(record_pretrained(name, model))
        model, configs["data2vec_ctc"] = make_ctc("data2vec_for_ctc")
        arrays.update(ctc_logits("data2vec_ctc", model, each_alone(LENGTHS, INPUT_SEED)))
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        for name in ("data2vec_pretrained", "data2vec_ctc"):
            shutil.copyfile(f"{name}.pt", OUT / f"{name}.pt")
    (OUT / "dict.ltr.txt").write_text(LETTER_DICTIONARY)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()},
              str(OUT / "activations.safetensors"))
    manifest = {"command": "python golden/fairseq_data2vec_fixtures.py", "versions": versions(),
                "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED, "lengths": LENGTHS,
                "fixtures": {"data2vec_pretrained": configs["data2vec_pretrained"],
                             "data2vec_ctc": {"fine_tuned_from": PRETRAINED["data2vec_for_ctc"],
                                              "cfg": configs["data2vec_ctc"]}}}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    print(f"wrote {OUT}: {sorted(p.name for p in OUT.iterdir())}")


if __name__ == "__main__":
    main()
