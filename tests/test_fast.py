"""The fast path against the reference path: each fast function against its reference, and its mechanics.

npw2v2.core.fast must give the numbers of npw2v2.core.layers (and conv_encoder's feature
encoder) to float32 rounding, on padded batches, odd shapes and long inputs; then its
own machinery: query blocks, the exp2 range guard, segments, rows shared among threads.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import npw2v2
from npw2v2 import _openblas
from npw2v2.core import conv_encoder, fast, layers, threads
from npw2v2.core.lengths import conv_lengths, length_mask
from npw2v2.core.params import random_weights, unflatten
from npw2v2.core.wav2vec2 import forward
from test_layers import attention_params, randn


def assert_same(fast_value, reference, rtol=1e-5):
    """Equal to float32 rounding, relative to the reference's largest magnitude."""
    assert fast_value.shape == reference.shape and fast_value.dtype == reference.dtype == np.float32
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    np.testing.assert_allclose(fast_value, reference, rtol=0, atol=rtol * scale)


# ---------------------------------------------------------------------------
# Each fast function against its reference


def random_conv_cases(count=40, seed=40):
    """Random (L, C_in, C_out, K, stride, padding, groups), the wide strided case included."""
    rng = np.random.RandomState(seed)
    cases = []
    for _ in range(count):
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in = groups * int(rng.choice([1, 2, 5, 64, 130]))
        k, stride = int(rng.randint(1, 9)), int(rng.randint(1, 6))
        padding = int(rng.randint(0, k))
        length = int(rng.randint(max(1, k - 2 * padding), 60))
        cases.append((length, c_in, groups * int(rng.randint(1, 5)), k, stride, padding, groups))
    return cases


@pytest.mark.parametrize("length, c_in, c_out, k, stride, padding, groups", random_conv_cases())
def test_conv1d(length, c_in, c_out, k, stride, padding, groups):
    rng = np.random.RandomState(length * 7 + c_in)
    x, w, b = randn(rng, 2, length, c_in), randn(rng, c_out, c_in // groups, k), randn(rng, c_out)
    assert_same(fast.conv1d(x, w, b, stride, padding, groups), layers.conv1d(x, w, b, stride, padding, groups))


def test_conv1d_in_blocks(monkeypatch):
    """Copied windows in blocks of a few frames give what one block gives."""
    rng = np.random.RandomState(41)
    x, w = randn(rng, 2, 50, 3), randn(rng, 4, 3, 5)
    monkeypatch.setattr(fast, "CONV_BLOCK_ELEMENTS", 2 * 5 * 3 * 4)  # 4 output frames a block
    assert_same(fast.conv1d(x, w, stride=2), layers.conv1d(x, w, stride=2))


@pytest.mark.parametrize("shape", [(3, 7, 13), (1, 1, 5), (2, 300, 64), (4, 2)])
def test_layer_norm(shape, monkeypatch):
    rng = np.random.RandomState(42)
    x = 3 * randn(rng, *shape) + 2
    w, b = randn(rng, shape[-1]), randn(rng, shape[-1])
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 7 * shape[-1])  # blocks of 7 rows, the last short
    assert_same(fast.layer_norm(x, w, b, eps=1e-5), layers.layer_norm(x, w, b, eps=1e-5))


def test_gelu_over_its_whole_range():
    """Within the erf approximation's error (< 1.5e-7, so |x| * 0.75e-7 in GELU) of the exact erf GELU,
    from deep negatives to large positives."""
    x = np.concatenate([np.linspace(-12, 12, 4000), [-1e4, -50, 0, 50, 1e4]]).astype(np.float32).reshape(5, -1)
    reference = layers.gelu(x)
    gap = np.abs(fast.gelu(x) - reference)
    assert (gap <= 1e-7 * (1 + np.abs(x)) + 1e-6 * np.abs(reference)).all(), gap.max()
    in_place = x.copy()
    fast.gelu(in_place, out=in_place)
    np.testing.assert_array_equal(in_place, fast.gelu(x))


def test_fast_activations_differ_from_the_reference_only_in_gelu():
    for name in layers.ACTIVATIONS:
        same = fast.activation(name) is layers.activation(name)
        assert same == (name != "gelu"), name


@pytest.mark.parametrize("lengths, heads", [([7, 5], 2), ([1, 9, 4], 3), ([6], 1), ([3, 3], 4), ([1, 1], 2)])
def test_attention_on_padded_batches(lengths, heads):
    """Every row, padded query rows included: both paths let each query see its item's valid keys only."""
    rng = np.random.RandomState(sum(lengths) + heads)
    dim = 4 * heads
    x, p = randn(rng, len(lengths), max(lengths), dim), attention_params(rng, dim)
    valid = length_mask(lengths, max(lengths))
    assert_same(fast.attention(x, valid, p, heads), layers.attention(x, valid, p, heads))
    assert_same(fast.attention(x, None, p, heads), layers.attention(x, None, p, heads))


@pytest.mark.parametrize("scale, subtracts_max", [(0.1, False), (1.0, False), (10.0, True)])
def test_attention_with_and_without_max_subtraction(scale, subtracts_max, monkeypatch):
    """Small |q||k| skips the row-maximum subtraction, large takes it; both give the reference's softmax."""
    taken = []
    exp_kernel = fast._exp2_kernel
    monkeypatch.setattr(fast, "_exp2_kernel", lambda subtract_max: taken.append(subtract_max) or exp_kernel(
        subtract_max))
    rng = np.random.RandomState(28)
    x, p = scale * randn(rng, 2, 6, 8), attention_params(rng, 8)
    valid = length_mask([6, 4], 6)
    y = fast.attention(x, valid, p, heads=2)
    assert set(taken) == {subtracts_max}
    assert_same(y, layers.attention(x, valid, p, heads=2))


def test_attention_query_blocks(monkeypatch):
    """Queries in blocks of 3 rows (the last short) give what one block gives."""
    rng = np.random.RandomState(18)
    x, p = randn(rng, 2, 7, 8), attention_params(rng, 8)
    valid = length_mask([7, 5], 7)
    monkeypatch.setattr(fast, "ATTENTION_BLOCK_ELEMENTS", 3 * 7)  # rows * T: 3 query rows a block
    assert_same(fast.attention(x, valid, p, heads=2), layers.attention(x, valid, p, heads=2))


def encoder_config(norm: str, **changes):
    return npw2v2.Config(conv_dim=(6, 5, 7), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), feat_extract_norm=norm,
                         conv_bias=norm == "layer", hidden_size=8, num_attention_heads=2, intermediate_size=16,
                         num_hidden_layers=2, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, **changes)


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("sample_lengths", [[230, 97, 30], [30], [200, 200]])
@pytest.mark.parametrize("segment_frames", [None, 3])
def test_feature_encoder(norm, sample_lengths, segment_frames, monkeypatch):
    """Fold and segments change nothing: every frame of every item, with valid-frame statistics or without."""
    cfg = encoder_config(norm)
    p = unflatten(random_weights(cfg, seed=3))["feature_extractor"]
    rng = np.random.RandomState(len(sample_lengths))
    x = randn(rng, len(sample_lengths), max(sample_lengths))
    x *= length_mask(sample_lengths, x.shape[1])
    if segment_frames:  # segments of 3 output frames: the first layer's output of 3 * 4 frames of 6 channels
        monkeypatch.setattr(fast, "SEGMENT_ELEMENTS", len(sample_lengths) * 3 * 4 * 6)
    for norm_lengths in (None, conv_lengths(sample_lengths, cfg)[0]):
        assert_same(fast.feature_encoder(x, p, cfg, norm_lengths),
                    conv_encoder.feature_encoder(x, p, cfg, norm_lengths))


def test_feature_encoder_runs_long_inputs_in_segments(monkeypatch):
    """Long inputs really go in several segments; a trace asks for one, the whole input."""
    cfg = encoder_config("group")
    p = unflatten(random_weights(cfg, seed=4))["feature_extractor"]
    x = randn(np.random.RandomState(5), 1, 2000)
    segments = []
    encode = fast._encode_segment
    monkeypatch.setattr(fast, "_encode_segment", lambda segment, *rest: segments.append(segment.shape[1]) or encode(
        segment, *rest))
    monkeypatch.setattr(fast, "SEGMENT_ELEMENTS", 10 * 4 * 6)  # 10 frames a segment
    fast.feature_encoder(x, p, cfg)
    assert len(segments) > 5 and segments[0] == 9 * cfg.frame_stride + cfg.receptive_field
    segments.clear()
    fast.feature_encoder(x, p, cfg, trace=lambda name, value, **facts: None)
    assert segments == [2000]


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_whole_forward_pass(stable, norm):
    """The whole pass on both paths, a padded batch with a mask and without, every output."""
    cfg = encoder_config(norm, do_stable_layer_norm=stable, architectures=("Wav2Vec2ForCTC",), vocab_size=5)
    params = unflatten(random_weights(cfg, seed=6))
    rng = np.random.RandomState(7)
    lengths = [1500, 400, 977]
    x = randn(rng, 3, 1500) * length_mask(lengths, 1500)
    for mask in (length_mask(lengths, 1500), None):
        a = forward(params, cfg, x, mask, output_hidden_states=True)
        b = forward(params, cfg, x, mask, output_hidden_states=True, reference=True)
        for name in ("extract_features", "last_hidden_state", "logits"):
            assert_same(getattr(a, name), getattr(b, name), rtol=1e-4)
        for h, h_reference in zip(a.hidden_states, b.hidden_states):
            assert_same(h, h_reference, rtol=1e-4)


# ---------------------------------------------------------------------------
# Element-wise work in blocks, over threads


def test_rowwise_blocks_give_identical_results(monkeypatch):
    """Blocks of rows give bit-identical results to one block, the short tail block included."""
    rng = np.random.RandomState(30)
    x = randn(rng, 1001, 37)
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 1 << 20)  # one block: the whole array at once
    whole = fast.gelu(x)
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 37 * 16)  # 16 rows a block: 63 blocks, the last short
    np.testing.assert_array_equal(fast.gelu(x), whole)
    inplace = x.copy()
    fast.gelu(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, whole)


def test_rowwise_threads_give_identical_results(monkeypatch):
    """Rows shared among threads give bit-identical results, and helper threads do part of the work."""
    rng = np.random.RandomState(31)
    x = randn(rng, 1001, 37)
    weight, bias = randn(rng, 37), randn(rng, 37)
    one_thread = fast.gelu(x), fast.layer_norm(x, weight, bias)
    monkeypatch.setattr(threads, "ELEMENT_THREADS", 3)
    monkeypatch.setattr(threads, "THREAD_PART_ELEMENTS", 37 * 300)  # 3 parts of 333-334 rows
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 37 * 16)
    parts = []  # the thread of each part

    def in_blocks(kernel, rows, out, blocks=threads._in_blocks):
        parts.append(threading.current_thread())
        blocks(kernel, rows, out)

    monkeypatch.setattr(threads, "_in_blocks", in_blocks)
    np.testing.assert_array_equal(fast.gelu(x), one_thread[0])
    np.testing.assert_array_equal(fast.layer_norm(x, weight, bias), one_thread[1])
    inplace = x.copy()
    fast.gelu(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, one_thread[0])
    assert len(parts) == 3 * 3  # three calls, three parts each
    assert threading.main_thread() in parts and len(set(parts)) >= 2  # (a helper may take two parts)
    parts.clear()
    np.testing.assert_array_equal(threads.rowwise(fast._gelu_kernel, x, threaded=False), one_thread[0])
    assert parts == [threading.main_thread()]


def test_rowwise_threads_pass_on_errors(monkeypatch):
    """An error in a helper thread's part reaches the caller."""
    monkeypatch.setattr(threads, "ELEMENT_THREADS", 2)
    monkeypatch.setattr(threads, "THREAD_PART_ELEMENTS", 8)

    def kernel(rows, out, xp):
        if threading.current_thread() is not threading.main_thread():
            raise FloatingPointError("from a helper")
        out[...] = rows

    with pytest.raises(FloatingPointError, match="from a helper"):
        threads.rowwise(kernel, np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("rows, parts", [(10, 3), (2, 3), (0, 2), (7, 1), (1001, 4)])
def test_row_ranges_cover_every_row_once(rows, parts):
    ranges = threads._row_ranges(rows, parts)
    assert len(ranges) == parts
    assert [i for r in ranges for i in range(rows)[r]] == list(range(rows))
    sizes = [len(range(rows)[r]) for r in ranges]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("value, numpy_first, sleep", [
    (None, False, True),  # npw2v2 sets the variable before OpenBLAS is loaded
    (None, True, False),  # too late: OpenBLAS already read it
    ("4", True, True),  # the user's value, set before Python started
    ("19", False, True),
    ("28", False, False),  # the user asked for OpenBLAS's long spin
    ("soon", False, False),
])
def test_openblas_idle_threads_sleep(value, numpy_first, sleep):
    assert _openblas.idle_threads_sleep(value, numpy_first) is sleep


@pytest.mark.parametrize("first, value, expected", [
    ("import npw2v2", None, "19 True"),
    ("import numpy, npw2v2", None, "19 False"),
    ("import npw2v2", "28", "28 False"),
])
def test_openblas_variable_set_on_import(first, value, expected):
    """In a fresh interpreter: npw2v2 sets OPENBLAS_THREAD_TIMEOUT, and knows whether it took effect."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = value
    code = f"{first}; import os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], npw2v2._openblas.IDLE_THREADS_SLEEP)"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == expected


def test_element_threads_follow_cores_and_blas_limits(monkeypatch):
    blas = threads.blas_build().get("name", "")
    if "openblas" not in blas:
        pytest.skip(f"NumPy's BLAS here is {blas or 'unknown'}, not OpenBLAS")
    monkeypatch.setattr(_openblas, "IDLE_THREADS_SLEEP", True)
    for limit in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(limit, raising=False)
    assert threads._element_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as Ray sets it for a one-CPU worker
    assert threads._element_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(_openblas, "IDLE_THREADS_SLEEP", False)  # OpenBLAS's threads would spin
    assert threads._element_threads() == 1
