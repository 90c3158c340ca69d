"""Audio to text and features: batching, long inputs in windows, errors kept per file, the CLI."""
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

import npw2v2
from npw2v2.io.audio import AudioError
from npw2v2.app.pipeline import _Input, _read_window, _windows
from golden import GOLDEN

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = GOLDEN / "checkpoints" / "hf_safetensors_sharded"  # tiny_ctc with vocab.json and preprocessor


@pytest.fixture(scope="module")
def model():
    return npw2v2.load(MODEL_DIR)


def voice(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A gliding tone with noise: enough structure for varied CTC output from a random model."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 100 * np.sin(2 * np.pi * 0.5 * t)) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def test_file_and_array_give_the_same_text(model, tmp_path):
    x = voice(3.0)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    from_file, from_array = model.transcribe([tmp_path / "a.wav", x])
    assert from_file.text == from_array.text and from_file.text
    assert from_file.source == str(tmp_path / "a.wav") and from_array.source == "<array>"
    np.testing.assert_array_equal(from_file.frame_tokens, from_array.frame_tokens)


def test_batching_changes_nothing(model):
    inputs = [voice(s, seed=i) for i, s in enumerate([2.0, 0.5, 3.3, 0.025, 1.2])]
    together = model.transcribe(inputs, batch_size=8)
    alone = model.transcribe(inputs, batch_size=1)
    assert [r.text for r in together] == [r.text for r in alone]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a.frame_tokens, b.frame_tokens)


def test_44k_stereo_file_is_mixed_and_resampled(model, tmp_path):
    x = resample_poly(voice(2.0), 441, 160)  # to 44.1 kHz
    sf.write(tmp_path / "b.wav", np.stack([x, x], axis=1), 44100, subtype="FLOAT")
    expected = resample_poly(x.astype(np.float32), 160, 441).astype(np.float32)
    from_file, from_array = model.transcribe([tmp_path / "b.wav", expected])
    np.testing.assert_array_equal(from_file.frame_tokens, from_array.frame_tokens)


@pytest.mark.parametrize("total", [320_000, 330_000, 431_240, 480_000, 9_600_000])
def test_windows_keep_every_frame_once(total):
    frame, chunk, stride = 320, 320_000, 53_440
    windows = _windows(total, chunk, stride, frame)
    kept = []
    for start, end, keep_from, keep_to in windows:
        frames = (end - start - 400) // frame + 1
        keep_to = frames if keep_to is None else keep_to
        assert 0 <= keep_from < keep_to <= frames
        kept += range(start // frame + keep_from, start // frame + keep_to)
    assert kept == list(range((total - 400) // frame + 1))
    assert all(end - start <= chunk for start, end, _, _ in windows)


def test_window_reading_matches_whole_file_resampling(tmp_path):
    native = resample_poly(voice(5.0), 441, 160).astype(np.float32)  # 44.1 kHz
    sf.write(tmp_path / "c.wav", native, 44100, subtype="FLOAT")
    whole = resample_poly(native, 160, 441).astype(np.float32)
    item = _Input("c", len(whole), long=True, path=tmp_path / "c.wav", rate=44100)
    for start, end in [(0, 32000), (16000, 48000), (48000, len(whole))]:
        np.testing.assert_allclose(_read_window(item, start, end, 16000), whole[start:end], atol=1e-5)


def test_long_input_in_windows_keeps_most_frames(model, tmp_path):
    x = voice(10.0)
    sf.write(tmp_path / "long.flac", x, 16000)
    whole = model.transcribe([tmp_path / "long.flac"], chunk_seconds=60)[0]
    windowed = model.transcribe([tmp_path / "long.flac"], chunk_seconds=2, stride_seconds=0.5)[0]
    assert len(windowed.frame_tokens) == len(whole.frame_tokens) == 499
    agreement = np.mean(windowed.frame_tokens == whole.frame_tokens)
    assert 0.8 < agreement < 1.0  # windows change a little at their edges, never everything


def test_memory_does_not_grow_with_the_length_of_the_file(model, tmp_path):
    peaks = {}
    for seconds in (30, 120):
        path = tmp_path / f"{seconds}.flac"
        sf.write(path, voice(seconds), 16000)
        tracemalloc.start()
        result = model.transcribe([path], chunk_seconds=4)[0]
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(result.frame_tokens) == (seconds * 16000 - 400) // 320 + 1
    # 4x the audio; what grows is only the token list (8 bytes a frame)
    assert peaks[120] < 1.2 * peaks[30], peaks


def test_bad_inputs_are_kept_as_errors_or_raised(model, tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    good = voice(1.0)
    results = model.transcribe([tmp_path / "text.wav", good, tmp_path / "missing.wav"], errors="keep")
    assert [r.error is None for r in results] == [False, True, False]
    assert "not readable as audio" in results[0].error and "no such file" in results[2].error
    assert results[1].text
    with pytest.raises(AudioError, match="text.wav"):
        model.transcribe([good, tmp_path / "text.wav"])


def test_word_times_are_ordered_and_inside_the_input(model):
    result = model.transcribe([voice(4.0)], timestamps=True)[0]
    assert result.words and " ".join(w.text for w in result.words) == result.text
    for a, b in zip(result.words, result.words[1:]):
        assert a.start < a.end <= b.start
    assert result.words[-1].end <= result.seconds


def test_model_without_vocabulary_cannot_transcribe():
    cfg = npw2v2.Config(conv_dim=(8,) * 7, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                        num_hidden_layers=1, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    model = npw2v2.from_tensors(npw2v2.random_weights(cfg), cfg)
    with pytest.raises(ValueError, match="no CTC head"):
        model.transcribe([voice(1.0)])


def test_embed_gives_chosen_layers(model):
    x = voice(1.0)
    (features,) = model.embed([x], layers=[0, 2])
    assert features.shape == (2, 49, 32)
    normalized = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    out = model(normalized[None], output_hidden_states=True)
    np.testing.assert_allclose(features[1], out.hidden_states[2][0], atol=1e-5)
    (last,) = model.embed([x])
    np.testing.assert_allclose(last[0], out.last_hidden_state[0], atol=1e-5)
    with pytest.raises(ValueError, match="between 0 and 2"):
        model.embed([x], layers=[3])


# ---------------------------------------------------------------------------
# The command line, as a user runs it


def npw2v2_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "npw2v2", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "one.wav", voice(1.5), 16000, subtype="PCM_16")
    sf.write(folder / "sub" / "two.flac", resample_poly(voice(2.0, seed=1), 3, 1), 48000)
    (folder / "broken.wav").write_text("this is text")
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "short.wav", voice(0.01), 16000)
    (folder / "notes.txt").write_text("not audio, not picked up")
    return folder


def test_cli_transcribes_good_files_and_names_bad_ones(mixed_folder):
    run = npw2v2_cli("transcribe", mixed_folder, "--model", MODEL_DIR, "--format", "json", "--timestamps")
    assert run.returncode == 1
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == ["one.wav", "two.flac"]
    assert all(r["text"] and r["words"] and {"word", "start", "end"} <= set(r["words"][0]) for r in records)
    errors = [line for line in run.stderr.splitlines() if line.startswith("npw2v2: error:")]
    assert len(errors) == 3
    assert any("broken.wav" in e and "not readable as audio" in e for e in errors)
    assert any("empty.wav" in e and "empty file" in e for e in errors)
    assert any("short.wav" in e and "fewer than the 400" in e for e in errors)
    assert "Traceback" not in run.stderr and "notes.txt" not in run.stderr
    assert "5/5 files" not in run.stderr  # progress is shown on a terminal only (tests/test_cli.py)


def test_cli_output_folder_and_formats(mixed_folder, tmp_path):
    out = tmp_path / "out"
    run = npw2v2_cli("transcribe", mixed_folder / "one.wav", mixed_folder / "sub", "--model", MODEL_DIR,
                     "--format", "srt", "--output", out)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["one.srt", "two.srt"]
    assert (out / "one.srt").read_text().startswith("1\n00:00:00,")
    tsv = npw2v2_cli("transcribe", mixed_folder / "one.wav", "--model", MODEL_DIR, "--format", "tsv")
    path, seconds, text = tsv.stdout.rstrip("\n").split("\t")
    assert Path(path).name == "one.wav" and seconds == "1.50" and text


def test_cli_usage_errors_are_one_line(mixed_folder, tmp_path):
    srt = npw2v2_cli("transcribe", mixed_folder / "one.wav", mixed_folder / "sub", "--model", MODEL_DIR,
                     "--format", "srt")
    assert srt.returncode == 2 and "give --output DIR" in srt.stderr
    missing_model = npw2v2_cli("transcribe", mixed_folder, "--model", tmp_path / "nope.safetensors")
    assert missing_model.returncode == 2 and "no such file or folder" in missing_model.stderr
    for run in (srt, missing_model):
        assert "Traceback" not in run.stderr


def test_cli_embed_to_safetensors_and_npy(mixed_folder, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "features.safetensors"
    run = npw2v2_cli("embed", mixed_folder / "one.wav", mixed_folder / "broken.wav", "--model", MODEL_DIR,
                     "--layers", "1,2", "-o", out)
    assert run.returncode == 1 and "broken.wav" in run.stderr
    with safe_open(str(out), "np") as f:
        assert list(f.keys()) == [str(mixed_folder / "one.wav")]
        assert f.get_tensor(str(mixed_folder / "one.wav")).shape == (2, 74, 32)
        assert f.metadata()["layers"] == "1,2"
    npy = tmp_path / "one.npy"
    assert npw2v2_cli("embed", mixed_folder / "one.wav", "--model", MODEL_DIR, "-o", npy).returncode == 0
    assert np.load(npy).shape == (1, 74, 32)


def test_cli_help_lists_the_commands():
    run = npw2v2_cli("--help")
    assert run.returncode == 0
    for command in ("transcribe", "embed", "explain", "compare"):
        assert command in run.stdout
    assert "--chunk-seconds" in npw2v2_cli("transcribe", "--help").stdout
