"""npw2v2 bench: the work it counts and the table it prints (timings themselves are not tested)."""
import importlib.util
import re

import pytest

from npw2v2 import BASE
from npw2v2.app import bench
from npw2v2.app.cli import main

HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
HAS_ONNXRUNTIME = HAS_TORCH and all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx"))


def test_flops_of_base_on_10_seconds_match_the_published_breakdown():
    """Issue 6 counts about 150 GFLOP for 10 s in base: ~49 conv encoder, ~5 positional conv, ~94 transformer."""
    assert bench.forward_flops(BASE, [160000]) == pytest.approx((49 + 5 + 94) * 1e9, rel=0.02)


def test_flops_of_a_padded_batch_are_its_items_alone():
    one = [bench.forward_flops(BASE, [n]) for n in (160000, 64000)]
    assert bench.forward_flops(BASE, [160000, 64000]) == pytest.approx(sum(one))
    assert one[0] > 2.5 * one[1]  # attention grows with the square of the length


def test_inputs_are_padded_with_a_mask_only_when_lengths_differ():
    x, mask = bench.make_inputs([1.0, 0.5])
    assert x.shape == (2, 16000) and mask.sum(axis=1).tolist() == [16000, 8000]
    assert (x[1, 8000:] == 0).all()
    assert bench.make_inputs([1.0, 1.0])[1] is None


def table_row(out: str, engine: str) -> list[float]:
    line = next(line for line in out.splitlines() if re.match(rf"\s+{engine}\s+[\d.]+\s+[\d.]+\s", line))
    return [float(v.rstrip("%")) for v in line.split()[1:] if v != "n/a"]


def test_bench_prints_times_speed_and_memory(capsys):
    assert main(["bench", "--seconds", "0.5", "--batch", "2", "--runs", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    peak = float(re.search(r"matmul peak: ([\d.]+) GFLOP/s", out).group(1))
    gflop = float(re.search(r"0.5 s x 2: ([\d.]+) GFLOP", out).group(1))
    median, low, high, rtf, speed, share, memory_mb = table_row(out, "npw2v2")
    assert 0 < low <= median <= high
    assert rtf == pytest.approx(median / 1.0, abs=2e-3)  # two items of 0.5 s
    assert speed == pytest.approx(gflop / median, rel=0.02)
    assert share == pytest.approx(100 * speed / peak, abs=1)
    assert memory_mb >= 0


def test_bench_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--runs", "0"])
    assert "--runs" in capsys.readouterr().err


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here: the missing-torch message cannot show")
def test_vs_torch_without_torch_is_a_clear_error(capsys):
    assert main(["bench", "--seconds", "0.5", "--runs", "1", "--vs-torch", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npw2v2: error: --vs-torch needs torch and transformers") and "Traceback" not in err


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch and transformers (pip install torch transformers)")
def test_vs_torch_times_both_and_agrees_with_transformers(capsys):
    assert main(["bench", "--seconds", "0.5", "0.3", "--runs", "1", "--warmup", "0", "--vs-torch",
                 "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert len(table_row(out, "torch")) == 6  # no memory column value: n/a
    difference = float(re.search(r"largest \|difference\| ([\d.e+-]+)", out).group(1))
    assert difference < 5e-4


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is not None, reason="onnxruntime is installed here")
def test_vs_onnxruntime_without_it_is_a_clear_error(capsys):
    assert main(["bench", "--seconds", "0.5", "--runs", "1", "--vs-onnxruntime", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npw2v2: error: --vs-onnxruntime needs onnxruntime") and "Traceback" not in err


@pytest.mark.skipif(not HAS_ONNXRUNTIME, reason="needs onnxruntime, onnx, torch and transformers")
def test_vs_onnxruntime_times_all_three_and_each_agrees(capsys):
    assert main(["bench", "--seconds", "0.5", "0.3", "--runs", "1", "--warmup", "0", "--vs-torch",
                 "--vs-onnxruntime", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert len(table_row(out, "torch")) == 6 and len(table_row(out, "onnxruntime")) == 6
    ratios = re.findall(r"npw2v2 / (\w+): time [\d.]+x, memory n/a, largest \|difference\| ([\d.e+-]+)", out)
    assert [name for name, _ in ratios] == ["torch", "onnxruntime"]
    assert all(float(difference) < 5e-4 for _, difference in ratios)


def test_vs_a_peer_on_a_device_is_refused(capsys):
    assert main(["bench", "--vs-onnxruntime", "--device", "cuda"]) == 2
    assert "--vs-onnxruntime compares on the CPU: leave out --device" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["hubert-base", "data2vec-audio-base", "wavlm-base-plus"])
def test_bench_runs_the_family_architectures(name, capsys):
    assert main(["bench", "--model", name, "--seconds", "0.3", "--runs", "1", "--warmup", "0", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"npw2v2 bench: {name} architecture") and len(table_row(out, "npw2v2")) == 6


def test_flops_count_data2vec_audios_stack_of_positional_convs():
    """Its num_conv_pos_embeddings counts convs of conv_pos_kernel_size taps: 5 x 19 against base's 128."""
    from npw2v2.core.config import DATA2VEC_AUDIO_BASE

    extra = bench.forward_flops(DATA2VEC_AUDIO_BASE, [160000]) - bench.forward_flops(BASE, [160000])
    frames, d, groups = 499, 768, 16
    assert extra == pytest.approx(2.0 * frames * (5 * 19 - 128) * d * d / groups)


def test_flops_count_wavlms_gate_and_position_bias():
    """Per layer, the gate's D/H -> 8 map for each head and frame and the gated bias added to the T x T scores."""
    from npw2v2.core.config import WAVLM_BASE_PLUS

    extra = bench.forward_flops(WAVLM_BASE_PLUS, [160000]) - bench.forward_flops(BASE, [160000])
    frames, d, heads, layers = 499, 768, 12, 12
    assert extra == pytest.approx(layers * (2.0 * frames * d * 8 + 2.0 * frames * frames * heads))
