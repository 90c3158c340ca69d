"""Make real fairseq HuBERT checkpoints, tiny ones, and record fairseq's activations.

Run in fairseq's environment (see golden/README.md; fairseq_fixtures.py's helpers are reused):

    /work/venv-fairseq/bin/python golden/fairseq_hubert_fixtures.py   # rewrites golden/data/fairseq_hubert/

Each model is fairseq's own HubertModel (fairseq.models.hubert), built from its HubertConfig
with label dictionaries as HubertPretrainingTask would give it, its parameters redrawn by
fairseq_fixtures.randomize, and saved with fairseq's ``checkpoint_utils.torch_persistent_save``
in the "cfg" era's layout (``cfg`` as plain containers, model and task sections, as
hubert_base_ls960.pt has it) or the "args" era's (an argparse Namespace from fairseq-train's
own parser, as the first HuBERT and ContentVec files). Recorded per model, on single inputs (fairseq's frame padding
mask for a padded batch is a reshape of the sample mask, not transformers' conv lengths):
``hidden_states.N`` = ``extract_features(output_layer=N)`` (the output of layer N, fairseq's
1-based count), ``last_hidden_state``, and ``final_proj.N``, fairseq's final_proj on layer N.

``hubert_ctc.pt`` is a fine-tuned HuBERT as fairseq-hydra-train's hubert_ctc saves it: fairseq's own
HubertCtc, built by HubertEncoder from ``hubert_pretrained.pt`` (w2v_path) with a letter dictionary
(``dict.ltr.txt`` beside it), all its parameters redrawn; recorded: its CTC ``logits``.
"""
from __future__ import annotations

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
from fairseq_fixtures import (ctc_logits, each_alone, extra_state, optimizer_history, parse_training_args,  # noqa: E402
                              quiet, randomize, versions)
from signals import speech_like_batch  # noqa: E402

from fairseq import checkpoint_utils  # noqa: E402
from fairseq.data.dictionary import Dictionary  # noqa: E402
from fairseq.models.hubert.hubert import HubertConfig, HubertModel  # noqa: E402
from fairseq.models.hubert.hubert_asr import HubertCtc, HubertCtcConfig  # noqa: E402
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig, HubertPretrainingTask  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "fairseq_hubert"
WEIGHT_SEED = 4321
INPUT_SEED = 5678
LENGTHS = [5000, 400, 3217]  # golden/record.py's tiny lengths, each input alone
CONV = "[(16, 10, 5), (16, 3, 2), (24, 3, 2), (24, 3, 2), (24, 3, 2), (24, 2, 2), (24, 2, 2)]"
TINY = dict(label_rate=50, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
            encoder_attention_heads=4, conv_feature_layers=CONV, conv_pos=16, conv_pos_groups=4, final_dim=12)
FIXTURES = {
    # like hubert_base_ls960.pt: group norm, post-LN, one label set (its cluster embeddings dropped)
    "hubert_pretrained": dict(TINY),
    # ContentVec-style untied projection over two label sets: final_proj is 2 x 12 = 24 wide; conv bias
    "hubert_untied": dict(TINY, untie_final_proj=True, conv_bias=True, conv_pos=15, conv_pos_groups=2),
    # the "args" era (a flat argparse Namespace from fairseq-train's parser), as the first HuBERT and
    # ContentVec checkpoints were saved; pre-LN with layer-normed conv layers, as hubert_large_ll60k
    "hubert_args": dict(TINY, layer_norm_first=True, extractor_mode="layer_norm", conv_bias=True),
}
ARGS_ERA = {"hubert_args"}
LABEL_SETS = {"hubert_pretrained": [7], "hubert_untied": [5, 9], "hubert_args": [6]}  # clusters per label set


def dictionary(size: int) -> Dictionary:
    d = Dictionary()
    for i in range(size):
        d.add_symbol(str(i))
    return d


def make(name: str) -> tuple[HubertModel, dict]:
    """Build, randomize and save one fixture; returns the model and its cfg as saved."""
    cfg = HubertConfig(**FIXTURES[name])
    task = HubertPretrainingConfig(label_rate=50, sample_rate=16000, labels=[f"km{i}" for i in range(len(LABEL_SETS[name]))])
    model = HubertModel(cfg, task, [dictionary(n) for n in LABEL_SETS[name]]).eval()
    randomize(model, WEIGHT_SEED)
    plain = {"model": {**OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True),
                       "_name": "hubert"},
             "task": {**OmegaConf.to_container(OmegaConf.structured(task), resolve=True, enum_to_str=True),
                      "_name": "hubert_pretraining"}}
    if name in ARGS_ERA:
        fields = {k: v for k, v in FIXTURES[name].items() if k != "extractor_mode"}
        args = parse_training_args("manifest", "hubert_pretraining", "hubert", "hubert", fields,
                                   ["--label-dir", "labels", "--labels", '["km"]', "--extractor-mode",
                                    FIXTURES[name].get("extractor_mode", "default")])
        state = {"args": args, "model": model.state_dict(), "optimizer_history": optimizer_history("hubert"),
                 "extra_state": extra_state()}
        plain = {"args": vars(args)}
    else:
        state = {"args": None, "cfg": plain, "model": model.state_dict(), "criterion": None,
                 "optimizer_history": optimizer_history("hubert"), "task_state": {}, "extra_state": extra_state()}
    checkpoint_utils.torch_persistent_save(state, str(OUT / f"{name}.pt"))
    return model, plain


LETTERS = "| E T A O N I H S R D L U".split()  # dict.ltr.txt's symbols after fairseq's 4 special ones


def letter_dictionary() -> str:
    return "".join(f"{symbol} 1\n" for symbol in LETTERS)


def make_fine_tuned(pretrained: str) -> tuple[HubertCtc, dict]:
    """hubert_ctc.pt: fairseq's HubertCtc on the pretrained fixture, as hubert_ctc fine-tuning saves it.

    HubertEncoder rebuilds the pretrained model from its checkpoint (its task reads the label
    dictionaries from the data folder, so a temporary one holds them) and removes final_proj;
    the saved cfg nests the pretraining run's in w2v_args, as fine-tuned hubert-large-ft has it.
    """
    with tempfile.TemporaryDirectory() as data:
        for i, size in enumerate(LABEL_SETS[pretrained]):
            dictionary(size).save(f"{data}/dict.km{i}.txt")
        (Path(data) / "dict.ltr.txt").write_text(letter_dictionary())
        cfg = HubertCtcConfig(w2v_path=str(OUT / f"{pretrained}.pt"), normalize=False, data=data)
        cfg.autoregressive = False  # HubertEncoder reads it; fairseq 0.12's HubertCtcConfig lacks the field
        task_cfg = HubertPretrainingConfig(data=data, labels=["ltr"], fine_tuning=True, label_rate=-1,
                                           sample_rate=16000)
        model = HubertCtc.build_model(cfg, HubertPretrainingTask(task_cfg)).eval()
    randomize(model, WEIGHT_SEED + 1)
    (OUT / "dict.ltr.txt").write_text(letter_dictionary())
    model_cfg = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False, enum_to_str=True)
    model_cfg.update(_name="hubert_ctc", w2v_args=OmegaConf.to_container(cfg.w2v_args, resolve=True, enum_to_str=True),
                     data="manifest")
    plain = {"model": model_cfg,
             "task": {**OmegaConf.to_container(OmegaConf.structured(task_cfg), resolve=True, enum_to_str=True),
                      "_name": "hubert_pretraining", "data": "manifest"}}
    state = {"args": None, "cfg": plain, "model": model.state_dict(), "criterion": None,
             "optimizer_history": optimizer_history("ctc"), "task_state": {}, "extra_state": extra_state()}
    checkpoint_utils.torch_persistent_save(state, str(OUT / "hubert_ctc.pt"))
    return model, plain


@torch.no_grad()
def record(name: str, model: HubertModel) -> dict:
    """NAME.CASE.STAGE arrays: each input alone ("single" the longest), every layer and final_proj."""
    batch, mask = speech_like_batch(LENGTHS, INPUT_SEED)
    arrays = {}
    for i, n in enumerate(LENGTHS):
        case = "single" if i == 0 else f"alone.{i}"
        x = torch.from_numpy(batch[i:i + 1, :n])
        arrays[f"{name}.{case}.input_values"] = batch[i:i + 1, :n]
        arrays[f"{name}.{case}.last_hidden_state"] = model.extract_features(x, None, mask=False)[0].numpy()
        for layer in range(1, len(model.encoder.layers) + 1):
            h = model.extract_features(x, None, mask=False, output_layer=layer)[0]
            arrays[f"{name}.{case}.hidden_states.{layer}"] = h.numpy()
            arrays[f"{name}.{case}.final_proj.{layer}"] = model.final_proj(h).numpy()
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def main() -> None:
    quiet()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    arrays, configs = {}, {}
    for name in FIXTURES:
        model, plain = make(name)
        arrays.update(record(name, model))
        configs[name] = {"fields": FIXTURES[name], "label_sets": LABEL_SETS[name], "cfg": plain}
    fine_tuned, plain = make_fine_tuned("hubert_pretrained")
    arrays.update(ctc_logits("hubert_ctc", fine_tuned, each_alone(LENGTHS, INPUT_SEED)))
    configs["hubert_ctc"] = {"fine_tuned_from": "hubert_pretrained", "letters": LETTERS, "cfg": plain}
    save_file(arrays, str(OUT / "activations.safetensors"))
    manifest = {"command": "python golden/fairseq_hubert_fixtures.py", "versions": versions(),
                "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED, "lengths": LENGTHS, "fixtures": configs}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    print(f"wrote {OUT}: {sorted(p.name for p in OUT.iterdir())}")


if __name__ == "__main__":
    main()
