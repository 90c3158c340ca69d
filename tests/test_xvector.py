"""The x-vector speaker head (npw2v2.core.xvector): what is its own beside the golden checks every family
shares (tests/test_family_golden.py runs tiny_xvector* against transformers' Wav2Vec2ForXVector and
Data2VecAudioForXVector, golden/record_xvector.py): the TDNN layers against a direct dilated convolution,
their frame counts, the statistics against numpy's mean and std, where transformers lets padding in."""
import re

import numpy as np
import pytest

import npw2v2
from convert.cli import main as convert_main
from golden import GOLDEN, XVECTOR, golden_error, model, recorded_case, tolerance
from npw2v2.core import heads, xvector
from npw2v2.core.lengths import frame_lengths
from npw2v2.io.weights import CheckpointError

TINY = model("tiny_xvector").config


def direct_tdnn(x, weight, bias, kernel, dilation):
    """A dilated convolution written out frame by frame in float64: y[t] = relu(b + sum_j W_j x[t + j d])."""
    width = x.shape[-1]
    frames = x.shape[1] - dilation * (kernel - 1)
    y = np.zeros((x.shape[0], frames, weight.shape[0]))
    for t in range(frames):
        y[:, t] = bias
        for j in range(kernel):
            y[:, t] += x[:, t + j * dilation].astype(np.float64) @ weight[:, j * width:(j + 1) * width].T.astype(np.float64)
    return np.maximum(y, 0)


@pytest.mark.parametrize("tdnn", [xvector.tdnn_layer, xvector.tdnn_layer_fast], ids=["reference", "fast"])
@pytest.mark.parametrize("kernel,dilation", [(5, 1), (3, 2), (3, 3), (1, 1), (2, 4)])
def test_tdnn_layer_is_a_dilated_convolution_without_padding(tdnn, kernel, dilation):
    rng = np.random.default_rng(kernel * 10 + dilation)
    x = rng.standard_normal((2, 23, 6)).astype(np.float32)
    weight = rng.standard_normal((4, kernel * 6)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    y = tdnn(x, weight, bias, kernel, dilation)
    assert y.shape == (2, 23 - dilation * (kernel - 1), 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, direct_tdnn(x, weight, bias, kernel, dilation), atol=1e-5)


def test_tdnn_lengths_count_the_frames_the_layers_make():
    """npw2v2's count is the TDNN output's length for an input alone; transformers' leaves the dilation out."""
    cfg = npw2v2.Config()  # transformers' TDNN: kernels 5, 3, 3, 1, 1; dilations 1, 2, 3, 1, 1
    assert xvector.tdnn_reduction(cfg) == 4 * 1 + 2 * 2 + 2 * 3
    params = npw2v2.core.params.unflatten(npw2v2.random_weights(TINY, seed=1))
    for frames in (16, 17, 40):
        h = np.ones((1, frames, TINY.tdnn_dim[0]), dtype=np.float32)
        for layer, k, d in zip(params["tdnn"], TINY.tdnn_kernel, TINY.tdnn_dilation):
            h = xvector.tdnn_layer(h, layer["kernel"]["weight"], layer["kernel"]["bias"], k, d)
        assert xvector.tdnn_lengths([frames], TINY)[0] == h.shape[1]
    reduction = sum(k - 1 for k in TINY.tdnn_kernel)  # transformers' _get_tdnn_output_lengths
    assert xvector.tdnn_lengths([40], TINY, as_transformers=True)[0] == 40 - reduction > 40 - 14


def test_statistics_are_mean_and_unbiased_std_over_valid_frames():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 11, 5)).astype(np.float32)
    x[1, 6:] = 1e3  # padding that must not count
    pooled = xvector.statistics_pooling(x, np.array([11, 6, 2]))
    for i, n in enumerate([11, 6, 2]):
        np.testing.assert_allclose(pooled[i, :5], x[i, :n].mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[i, 5:], x[i, :n].std(axis=0, ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xvector.statistics_pooling(x), np.concatenate([x.mean(1), x.std(1, ddof=1)], -1),
                               rtol=1e-5, atol=1e-6)
    # a count past the frames is a slice's: every frame
    np.testing.assert_allclose(xvector.statistics_pooling(x, [30, 30, 30]), xvector.statistics_pooling(x), atol=1e-6)


def test_transformers_count_lets_the_padding_in_and_norm_over_padding_reproduces_it():
    """tiny_xvector_weighted is layer-normed and pre-LN: transformers' encoder keeps each item of the batch
    honest, so where its embeddings differ from the item alone, the head's frame count let padding in."""
    name = "tiny_xvector_weighted"
    batch, alone = recorded_case(name, "batch"), recorded_case(name, "alone.1")
    frames = alone["last_hidden_state"].shape[1]
    assert golden_error(batch["last_hidden_state"][1:2, :frames], alone["last_hidden_state"]) <= 1e-4
    assert golden_error(batch["embeddings"][1:2], alone["embeddings"]) > 1e-2
    m = model(name)
    ours = m(batch["input_values"], batch["attention_mask"])
    assert golden_error(ours.embeddings[1:2], alone["embeddings"]) <= tolerance(name)
    assert golden_error(ours.embeddings, batch["embeddings"]) > 1e-2
    leaky = m(batch["input_values"], batch["attention_mask"], norm_over_padding=True)
    assert golden_error(leaky.embeddings, batch["embeddings"]) <= tolerance(name)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_each_item_of_any_batch_gets_its_embedding_alone(reference):
    """Batches of every order and padding against each input alone, lengths down to the head's minimum."""
    m = model("tiny_xvector")
    rng = np.random.default_rng(3)
    lengths = [xvector.min_samples(m.config), 9000, 6001, xvector.min_samples(m.config) + 319]
    waves = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    alone = [m(w[None], reference=reference).embeddings[0] for w in waves]
    batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
    mask = np.zeros(batch.shape, dtype=bool)
    for i, w in enumerate(waves):
        batch[i, :len(w)], mask[i, :len(w)] = w, True
    out = m(batch, mask, reference=reference)
    for i in range(len(waves)):
        assert golden_error(out.embeddings[i], alone[i]) <= 1e-5, i


def test_too_short_inputs_are_refused_with_the_minimum():
    m = model("tiny_xvector")
    shortest = xvector.min_samples(m.config)
    assert frame_lengths([shortest], m.config)[0] == xvector.min_frames(m.config) == 14 + 2
    m(np.zeros((1, shortest), dtype=np.float32))
    with pytest.raises(ValueError, match=f"at least 16 frames \\({shortest} samples\\).*item 0 has 15"):
        m(np.zeros((1, shortest - 1), dtype=np.float32))
    mask = np.ones((2, 9000), dtype=bool)
    mask[1, shortest - 1:] = False
    with pytest.raises(ValueError, match="item 1 has 15"):
        m(np.zeros((2, 9000), dtype=np.float32), mask)


def test_heads_are_told_apart_and_named():
    for name in XVECTOR:
        assert model(name).kind == heads.XVECTOR
        assert "x-vector head" in repr(model(name))
    assert heads.class_name(heads.XVECTOR, "data2vec-audio") == "Data2VecAudioForXVector"
    assert heads.kind_of_names(["projector.weight", "classifier.weight", "tdnn.0.kernel.weight"]) == heads.XVECTOR
    cfg = npw2v2.Config(model_type="hubert", architectures=("Wav2Vec2ForXVector",))
    with pytest.raises(ValueError, match="hubert models have no x-vector head"):
        heads.model_kind(cfg)
    assert heads.class_name(heads.XVECTOR, "wavlm") == "WavLMForXVector"  # wavlm-base-plus-sv's class
    with pytest.raises(ValueError, match="UniSpeechSatForPreTraining: npw2v2 does not run UniSpeech-SAT's pretraining"):
        heads.model_kind(npw2v2.Config(model_type="unispeech-sat", architectures=("UniSpeechSatForPreTraining",)))


def test_config_tdnn_fields_are_checked():
    with pytest.raises(ValueError, match="tdnn_dim, tdnn_kernel and tdnn_dilation must have the same length"):
        npw2v2.Config(tdnn_dim=(8, 8), tdnn_kernel=(3,), tdnn_dilation=(1,))
    with pytest.raises(ValueError, match=r"tdnn_dilation\[1\] must be a whole number >= 1"):
        npw2v2.Config(tdnn_dilation=(1, 0, 3, 1, 1))
    with pytest.raises(ValueError, match="xvector_output_dim must be a whole number"):
        npw2v2.Config.from_dict({"xvector_output_dim": "512"})


def test_the_loss_weights_load_and_no_other_stray_tensor(tmp_path):
    """Checkpoints hold the AM-softmax loss's objective.weight (saved by transformers in golden/data): it is
    accepted, as a training-only tensor; a tensor the head does not have is still refused."""
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(GOLDEN / "tiny_xvector" / "model.safetensors"))
    assert tensors["objective.weight"].shape == (TINY.xvector_output_dim, TINY.num_labels)
    tensors["tdnn.9.kernel.bias"] = np.zeros(3, dtype=np.float32)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_bytes((GOLDEN / "tiny_xvector" / "config.json").read_bytes())
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="tdnn.9.kernel.bias"):
        npw2v2.load(folder)


@pytest.mark.parametrize("change,message", [
    ({"tdnn_dim": [8, 8, 8, 16], "tdnn_kernel": [5, 3, 3, 1], "tdnn_dilation": [1, 2, 3, 1]},
     "config says len(tdnn_dim) 4, the file holds 5 TDNN layers"),
    ({"tdnn_dim": [8, 8, 9, 8, 16]}, "config says tdnn_dim[2] 9, the file's tdnn.2.kernel.weight has 8 rows"),
    ({"tdnn_kernel": [5, 3, 2, 1, 1]}, "wrong shape: tdnn.2.kernel.weight is [8, 24], the config says [8, 16]"),
    ({"xvector_output_dim": 7}, "wrong shape: classifier.weight is [6, 6], the config says [7, 7]"),
])
def test_a_config_that_does_not_match_the_tdnn_tensors_is_named(change, message, tmp_path):
    import json
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "tiny_xvector", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        npw2v2.load(folder)


def test_a_hugging_face_bin_folder_converts(tmp_path, capsys):
    out = tmp_path / "sv.safetensors"
    code, printed = convert_main([str(GOLDEN / "xvector_checkpoints" / "hf_bin"), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    converted = npw2v2.load(out)
    assert converted.kind == heads.XVECTOR
    for case in ("single", "batch", "alone.2"):
        ref = recorded_case("tiny_xvector", case)
        got = converted(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        assert golden_error(got.embeddings, ref["embeddings"]) <= tolerance("tiny_xvector"), case


# ---------------------------------------------------------------------------
# model.embed_speaker and npw2v2 similarity


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """Three WAV files of noise, 0.6, 0.45 and 0.9 s: three 'speakers' of a random model."""
    import soundfile as sf
    folder = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(11)
    paths = []
    for i, seconds in enumerate((0.6, 0.45, 0.9)):
        path = folder / f"voice{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
        paths.append(str(path))
    return paths


def test_embed_speaker_gives_each_inputs_embedding_whatever_the_batch(voices):
    from npw2v2.io import audio
    m = model("tiny_xvector")
    one = m.embed_speaker(voices[1])
    assert isinstance(one, np.ndarray) and one.shape == (TINY.xvector_output_dim,)
    together = m.embed_speaker(voices, batch_size=3)
    apart = m.embed_speaker(voices, batch_size=1)
    assert len(together) == 3 and all(e.shape == one.shape for e in together)
    for a, b in zip(together, apart):
        assert golden_error(a, b) <= 1e-5
    x = audio.load(voices[1], 16000, 400)[None]  # the model's own forward pass on the normalised samples
    expected = m(audio.normalize(x, np.ones(x.shape, dtype=bool))).embeddings[0]
    assert golden_error(one, expected) <= 1e-5 and golden_error(together[1], expected) <= 1e-5


def test_embed_speaker_keeps_going_past_bad_files_when_asked(voices):
    from npw2v2.app import pipeline
    m = model("tiny_xvector")
    results = pipeline.embed_speaker(m, [voices[0], "/no/such.wav", voices[2]], errors="keep")
    assert isinstance(results[1], npw2v2.io.audio.AudioError) and "/no/such.wav" in str(results[1])
    for got, alone in zip((results[0], results[2]), m.embed_speaker([voices[0], voices[2]])):
        assert golden_error(got, alone) <= 1e-5


def test_embed_speaker_refuses_other_models_and_short_audio():
    with pytest.raises(ValueError, match="Wav2Vec2ForCTC, not a speaker embedding model"):
        model("tiny_ctc").embed_speaker(np.zeros(16000, dtype=np.float32))
    with pytest.raises(npw2v2.io.audio.AudioError, match=str(xvector.min_samples(TINY))):
        model("tiny_xvector").embed_speaker(np.zeros(xvector.min_samples(TINY) - 1, dtype=np.float32))


def test_similarity_is_the_cosine_of_the_normalised_embeddings():
    from npw2v2.app import speaker
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(7), rng.standard_normal(7)
    assert speaker.similarity(a, b) == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-6)
    assert speaker.similarity(a, 3 * a) == pytest.approx(1.0, abs=1e-6)
    assert speaker.similarity(a, -a) == pytest.approx(-1.0, abs=1e-6)
    assert speaker.verdict(0.9, 0.86) == "same speaker" and speaker.verdict(0.8, 0.86) == "different speakers"
    cached = "/home/u/.cache/huggingface/hub/models--microsoft--wavlm-base-plus-sv/snapshots/abc"
    assert speaker.known_threshold(model("tiny_xvector"), cached) == (0.86, "the microsoft/wavlm-base-plus-sv model card")
    assert speaker.known_threshold(model("tiny_xvector"), "my-model") == (None, "")


def test_cli_similarity_scores_the_first_file_against_each_other(voices, capsys):
    from npw2v2.app import speaker
    from npw2v2.app.cli import main
    folder = str(GOLDEN / "tiny_xvector")
    assert main(["similarity", *voices, "-m", folder]) == 0
    out, err = capsys.readouterr()
    lines = [line.split("\t") for line in out.splitlines()]
    assert [line[:2] for line in lines] == [[voices[0], voices[1]], [voices[0], voices[2]]]
    embeddings = model("tiny_xvector").embed_speaker(voices)
    for line, other in zip(lines, embeddings[1:]):
        assert len(line) == 3 and float(line[2]) == pytest.approx(speaker.similarity(embeddings[0], other), abs=1e-4)
    assert "no threshold known" in err
    assert main(["similarity", *voices[:2], "-m", folder, "--threshold", "-1"]) == 0
    assert capsys.readouterr().out.endswith("\tsame speaker\n")
    assert main(["similarity", *voices[:2], "-m", folder, "-t", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("\tdifferent speakers\n") and "the threshold of --threshold" in err


def test_cli_similarity_takes_the_threshold_from_the_converted_file(voices, tmp_path, capsys):
    from npw2v2.app.cli import main
    out = tmp_path / "sv.safetensors"
    assert convert_main([str(GOLDEN / "xvector_checkpoints" / "hf_bin"), str(out), "--speaker-threshold", "1"]) == 0
    assert npw2v2.load(out).metadata["speaker_threshold"] == 1.0
    capsys.readouterr()
    assert main(["similarity", *voices[:2], "-m", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.endswith("\tdifferent speakers\n") and "the model file's metadata" in printed.err
    assert convert_main([str(GOLDEN / "xvector_checkpoints" / "hf_bin"), str(tmp_path / "x.safetensors"),
                         "--speaker-threshold", "2"]) == 1
    assert "--speaker-threshold: a speaker threshold must be a number from -1 to 1" in capsys.readouterr().err


def test_a_bad_threshold_in_a_files_metadata_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    source = tmp_path / "sv.safetensors"
    assert convert_main([str(GOLDEN / "xvector_checkpoints" / "hf_bin"), str(source)]) == 0
    with safe_open(str(source), "np") as f:
        metadata = f.metadata()
    save_file(load_file(str(source)), str(tmp_path / "bad.safetensors"), metadata={**metadata, "speaker_threshold": "high"})
    with pytest.raises(CheckpointError, match="speaker_threshold in the metadata: a speaker threshold must be"):
        npw2v2.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("args,message", [
    (["/no/such.wav", "VOICE"], "/no/such.wav"),
    (["VOICE", "VOICE", "-m", str(GOLDEN / "tiny_ctc")], "Wav2Vec2ForCTC, not a speaker embedding model"),
    (["VOICE"], "similarity compares two files or more"),
    (["VOICE", "VOICE", "--threshold", "1.5"], "--threshold: a speaker threshold must be a number from -1 to 1"),
])
def test_cli_similarity_errors_are_one_line(args, message, voices, capsys):
    from npw2v2.app.cli import main
    args = [voices[0] if a == "VOICE" else a for a in args]
    if "-m" not in args:
        args += ["-m", str(GOLDEN / "tiny_xvector")]
    assert main(["similarity", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("npw2v2: error:") == 1
