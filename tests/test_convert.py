"""The converter: every fixture layout to one .safetensors file that reproduces the recordings."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npw2v2
from convert.cli import main
from convert.errors import ConversionError
from convert.fairseq import hf_config, parse_conv_layers, read_letter_dict
from golden import GOLDEN, golden_error, recorded_case, stage_error, tolerance

CHECKPOINTS = GOLDEN / "checkpoints"
MMS_BIN = CHECKPOINTS / "hf_mms_bin"  # tiny_mms as .bin files, with adapter.LANG.bin files
HF_LAYOUTS = sorted(p.name for p in CHECKPOINTS.iterdir() if p.is_dir() and p != MMS_BIN)  # of tiny_ctc
PUBLISHED = json.loads((Path(__file__).parent / "data" / "published_configs.json").read_text())["pairs"]
# The fields that decide the architecture, compared with the published Hugging Face configs.
ARCHITECTURE_KEYS = ["conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "hidden_size",
                     "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                     "do_stable_layer_norm", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
                     "layer_norm_eps", "feat_extract_activation", "num_codevectors_per_group",
                     "num_codevector_groups", "proj_codevector_dim"]


def convert_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_reproduces(model, recording: str, tol: float):
    """Every recorded case's logits and last hidden state, on valid frames."""
    for case in ("single", "batch", "nomask", "alone.1", "alone.2"):
        ref = recorded_case(recording, case)
        out = model(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        for stage in ("last_hidden_state", "logits"):
            err = golden_error(getattr(out, stage), ref[stage], out.frame_mask)
            assert err <= tol, f"{case} {stage}: {err:.2e}"


@pytest.mark.parametrize("layout", HF_LAYOUTS)
def test_every_hugging_face_layout_converts_to_the_recorded_model(layout, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    code, stdout, stderr = convert_cli(capsys, CHECKPOINTS / layout, out)
    assert code == 0, stderr
    assert "Wav2Vec2ForCTC, 2 layers" in stdout and "vocabulary of 32" in stdout
    model = npw2v2.load(out)
    assert "masked_spec_embed" in model.params  # nothing is dropped: the mask embedding serves mask_time_indices
    assert_reproduces(model, "tiny_ctc", tolerance("tiny_ctc"))


def test_converted_file_is_self_contained(tmp_path, capsys):
    out = tmp_path / "a" / "model.safetensors"
    out.parent.mkdir()
    assert convert_cli(capsys, CHECKPOINTS / "hf_bin", out)[0] == 0
    alone = tmp_path / "b" / "only.safetensors"
    alone.parent.mkdir()
    shutil.copy(out, alone)
    model = npw2v2.load(alone)
    assert model.vocab["<pad>"] == 0 and model.vocab["|"] == 4 and len(model.vocab) == 32
    with safe_open(str(alone), "np") as f:
        metadata = f.metadata()
        names = set(f.keys())
    assert metadata["source_format"] == "huggingface-bin"
    assert metadata["format_version"] == "1"
    assert json.loads(metadata["preprocessor"])["sampling_rate"] == 16000
    assert json.loads(metadata["config"])["architectures"] == ["Wav2Vec2ForCTC"]
    assert "encoder.pos_conv_embed.conv.weight" in names  # weight norm folded
    assert not any("weight_g" in n or "parametrizations" in n or n.startswith("wav2vec2.") for n in names)


def test_float16_output_is_half_the_size_and_still_close(tmp_path, capsys):
    full, half = tmp_path / "f32.safetensors", tmp_path / "f16.safetensors"
    assert convert_cli(capsys, CHECKPOINTS / "hf_bin", full)[0] == 0
    assert convert_cli(capsys, CHECKPOINTS / "hf_bin", half, "--dtype", "float16")[0] == 0
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model = npw2v2.load(half)
    assert model.params["lm_head"]["weight"].dtype == np.float32
    assert_reproduces(model, "tiny_ctc", 5e-3)


def test_failure_is_one_line_and_leaves_no_file(tmp_path, capsys):
    folder = tmp_path / "broken"
    shutil.copytree(CHECKPOINTS / "hf_bin", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = convert_cli(capsys, folder, out)
    assert code == 1
    reason = next(line for line in stderr.splitlines() if line.startswith("npw2v2-convert: error:"))
    assert str(folder) in reason and "do not match the config" in reason
    assert "missing: encoder.layers.2.attention.q_proj.weight" in stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("args, message", [
    (["/no/such/checkpoint"], "no such file or folder"),
    ([GOLDEN / "tiny_ctc" / "config.json"], "not a PyTorch checkpoint"),
    ([CHECKPOINTS / "hf_bin" / "pytorch_model.bin"], "converts from its folder"),
])
def test_bad_sources_are_named(args, message, tmp_path, capsys):
    code, _, stderr = convert_cli(capsys, *args, tmp_path / "out.safetensors")
    assert code == 1
    assert message in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_derived_from_fairseq_matches_the_published_one(name):
    pair = PUBLISHED[name]
    derived = hf_config(pair["fairseq_model"], 32 if pair["fine_tuned"] else None)
    published = pair["huggingface"]
    compared = [k for k in ARCHITECTURE_KEYS if k in published]
    assert len(compared) >= 15
    assert {k: derived[k] for k in compared} == {k: published[k] for k in compared}
    if pair["fine_tuned"]:
        assert derived["vocab_size"] == published["vocab_size"]


def test_conv_layers_are_parsed_without_eval():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    for hostile in ["__import__('os').system('echo pwned')", "[(1, 2, 3)] * 10**9", "[0] * 1000 * 1000 * 1000",
                    "[(1, 2)]", "x", "2 * [(1, 2, 3)]"]:
        with pytest.raises(ConversionError, match="conv_feature_layers"):
            parse_conv_layers(hostile)


def test_letter_dictionary_in_fairseq_order(tmp_path):
    path = tmp_path / "dict.ltr.txt"
    path.write_text("| 94802\nE 51860\nT 38431\n' 1000\n")
    assert read_letter_dict(path) == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "'": 7}
    path.write_text("| 1\nE 2\n| 3\n")
    with pytest.raises(ConversionError, match="appears twice"):
        read_letter_dict(path)


FAIRSEQ = GOLDEN / "fairseq"
FAIRSEQ_FIXTURES = sorted(p.stem for p in FAIRSEQ.glob("*.pt"))


def fairseq_recorded(name: str, case: str) -> dict:
    from safetensors.numpy import load_file

    prefix = f"{name}.{case}."
    return {k.removeprefix(prefix): v for k, v in load_file(str(FAIRSEQ / "activations.safetensors")).items()
            if k.startswith(prefix)}


FAIRSEQ_STAGES = ("last_hidden_state", "logits", "projected_states", "projected_quantized_states", "codevector_ids",
                  "codevector_perplexity")


def fairseq_stages(model, ref: dict) -> tuple[dict, dict]:
    """npw2v2's value of each stage fairseq recorded, and the frame masks to compare them on."""
    mask = None if "padding_mask" not in ref else ~ref["padding_mask"]
    # fairseq's conv encoder sees the padding, as transformers' does
    out = model(ref["input_values"], mask, norm_over_padding=True, mask_time_indices=ref.get("mask_time_indices"))
    if "frame_padding_mask" in ref:
        np.testing.assert_array_equal(out.frame_mask, ~ref["frame_padding_mask"])
    ours = {stage: getattr(out, stage) for stage in FAIRSEQ_STAGES if getattr(out, stage) is not None}
    if "sampled_negative_indices" in ref:
        # with hidden frames transformers (and npw2v2) count only those in the perplexity, fairseq all
        del ours["codevector_perplexity"]
        ours["contrastive_logits"] = model.contrastive_logits(out, ref["sampled_negative_indices"])
    return ours, {"encoder": out.frame_mask, "output": out.frame_mask}


@pytest.mark.parametrize("name", FAIRSEQ_FIXTURES)
def test_fairseq_checkpoints_convert_to_what_fairseq_computes(name, tmp_path, capsys):
    """Real fairseq files (made by fairseq itself), against fairseq's own forward pass, heads included."""
    out = tmp_path / "model.safetensors"
    code, stdout, stderr = convert_cli(capsys, FAIRSEQ / f"{name}.pt", out, "--dict", FAIRSEQ / "dict.ltr.txt")
    assert code == 0, stderr
    assert stdout.startswith(f"{FAIRSEQ / name}.pt: fairseq, ")
    model = npw2v2.load(out)
    compared = set()
    for case in ("single", "batch", "masked"):
        ref = fairseq_recorded(name, case)
        if not ref:
            continue
        ours, masks = fairseq_stages(model, ref)
        for stage, value in ((k, v) for k, v in ours.items() if k in ref):
            err = stage_error(stage, value, ref[stage], masks)
            assert err <= 1e-4, f"{case} {stage}: {err:.2e}"
        compared |= set(ours) & set(ref)
    kind = "Wav2Vec2ForCTC" if model.has_ctc_head else "Wav2Vec2ForPreTraining"
    assert model.kind == kind and f", {kind}, " in stdout
    heads = {"logits"} if model.has_ctc_head else {"projected_states", "codevector_ids", "contrastive_logits"}
    assert heads <= compared


def test_fairseq_fixtures_cover_both_eras_and_kinds():
    assert {"w2v_pretrained_args", "w2v_pretrained_cfg", "w2v_pretrained_dictconfig", "w2v_pretrained_legacy",
            "w2v_ctc_args", "w2v_ctc_cfg", "w2v_large_cfg", "w2v_noproj_cfg"} <= set(FAIRSEQ_FIXTURES)


def test_fine_tuned_vocabulary_is_fairseqs_order(tmp_path, capsys):
    out = tmp_path / "ctc.safetensors"
    assert convert_cli(capsys, FAIRSEQ / "w2v_ctc_args.pt", out, "--dict", FAIRSEQ / "dict.ltr.txt")[0] == 0
    vocab = npw2v2.load(out).vocab
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:6] == ["<s>", "<pad>", "</s>", "<unk>", "|", "E"]


def test_fine_tuned_checkpoint_without_dictionary_is_refused(tmp_path, capsys):
    lonely = tmp_path / "ctc.pt"
    shutil.copy(FAIRSEQ / "w2v_ctc_args.pt", lonely)  # an args-era file has no dictionary inside
    code, _, stderr = convert_cli(capsys, lonely, tmp_path / "out.safetensors")
    assert code == 1 and "needs its letter dictionary: --dict dict.ltr.txt" in stderr


def test_cfg_era_fine_tuned_checkpoint_brings_its_own_dictionary(tmp_path, capsys):
    lonely = tmp_path / "ctc.pt"
    shutil.copy(FAIRSEQ / "w2v_ctc_cfg.pt", lonely)
    assert convert_cli(capsys, lonely, tmp_path / "out.safetensors")[0] == 0
    assert len(npw2v2.load(tmp_path / "out.safetensors").vocab) == 32


def test_wrong_dictionary_size_is_named(tmp_path, capsys):
    small = tmp_path / "dict.ltr.txt"
    small.write_text("| 1\nE 1\n")
    code, _, stderr = convert_cli(capsys, FAIRSEQ / "w2v_ctc_args.pt", tmp_path / "o.safetensors", "--dict", small)
    assert code == 1 and "6 symbols with fairseq's 4 special ones, but the checkpoint's CTC head has 32" in stderr
