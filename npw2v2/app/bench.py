"""``npw2v2 bench``: how fast, and how much memory, against the machine's own limits and PyTorch.

Models are built from the published base/large architectures with random weights (nothing to
download). For each case (lengths of the items of one batch, padded with a mask when they
differ) it prints the forward pass's median/min/max seconds after a warm-up, the real-time
factor, the effective GFLOP/s (the products each item needs alone: padding excluded), the
share of this machine's float32 matmul peak (measured here, by the same command) and the
peak memory growth during a forward pass. With ``--vs-torch`` the same weights go into
transformers' Wav2Vec2Model (HubertModel, Data2VecAudioModel for those architectures); with
``--vs-onnxruntime`` that model, exported by torch.onnx, runs in ONNX Runtime. The engines are
timed in turn, run by run.

Memory is measured in a fresh process per engine, as the growth of its peak resident set
(VmHWM, reset through /proc/self/clear_refs) over its resident set just before a second
forward pass. glibc is told to return large blocks to the system at once
(MALLOC_MMAP_THRESHOLD_), so memory freed by the first pass cannot hide the second's needs.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

from ..core import threads
from ..core.backend import asnumpy
from ..core.config import Config
from ..core.fbank import fbank_batch, feature_lengths
from ..core.lengths import conv_lengths, length_mask
from ..core.params import random_weights
from .model import BUILT_IN as ARCHITECTURES  # the architectures known by name: base, large, hubert-base, ...
from .model import from_tensors
from .torch_bridge import bare_model_class, transformers_model

STANDARD_CASES = ((10.0,), (10.0, 8.0, 6.0, 4.0), (60.0,))  # the rows of the targets table
SAMPLING_RATE = 16000
WEIGHT_SEED = 0


# ---------------------------------------------------------------------------
# What is measured


def make_inputs(seconds, seed: int = 0):
    """Noise of the given lengths as one batch: ([B, S] float32, [B, S] bool mask or None)."""
    lengths = [round(s * SAMPLING_RATE) for s in seconds]
    rng = np.random.RandomState(seed)
    x = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.standard_normal(n)
    mask = None if len(set(lengths)) == 1 else length_mask(lengths, x.shape[1])
    return x, mask


def model_inputs(cfg: Config, x, mask):
    """What the model reads of make_inputs' batch: the samples as they are, or for w2v-BERT their filter-bank
    features [B, T, 160] and frame mask (None when make_inputs gave none), computed once, before any timing, as
    transformers' feature extractor runs before its model."""
    if cfg.model_type != "wav2vec2-bert":
        return x, mask
    lengths = [x.shape[1]] * x.shape[0] if mask is None else mask.sum(axis=1)
    features, frames = fbank_batch([row[:n] for row, n in zip(x, lengths)])
    return features, None if mask is None else frames


def forward_flops(cfg: Config, sample_lengths) -> float:
    """Multiply-adds x 2 of the forward pass, each item at its own length (padding not counted)."""
    if cfg.model_type == "wav2vec2-bert":
        return sum(w2v_bert_flops(cfg, int(t)) for t in feature_lengths(sample_lengths))
    total = 0.0
    for n in sample_lengths:
        per_layer = [int(t[0]) for t in conv_lengths([n], cfg)]
        c_in = 1
        for t, c_out, k in zip(per_layer, cfg.conv_dim, cfg.conv_kernel):
            total += 2.0 * t * k * c_in * c_out
            c_in = c_out
        t, d, f = per_layer[-1], cfg.hidden_size, cfg.intermediate_size
        total += 2.0 * t * c_in * d  # feature projection
        if cfg.model_type == "wav2vec2-conformer":
            total += cfg.num_hidden_layers * conformer_block_flops(cfg, t)
            continue
        taps = cfg.num_conv_pos_embeddings  # the kernel; data2vec-audio: that many convs of conv_pos_kernel_size
        if cfg.model_type == "data2vec-audio":
            taps *= cfg.conv_pos_kernel_size
        total += 2.0 * t * taps * d * d / cfg.num_conv_pos_embedding_groups
        per_block = 4 * 2.0 * t * d * d + 2 * 2.0 * t * t * d + 2 * 2.0 * t * d * f  # q k v out, QK^T, PV, FFN
        if cfg.model_type == "wavlm":  # the gate (D/H -> 8 per head and frame), then gate x bias added to the scores
            per_block += 2.0 * t * d * 8 + 2.0 * t * t * cfg.num_attention_heads
        total += cfg.num_hidden_layers * per_block
    return total


def conformer_block_flops(cfg: Config, t: int) -> float:
    """One conformer block's multiply-adds x 2 on T frames (npw2v2.core.conformer; no positional conv runs)."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    flops = 2 * 2 * 2.0 * t * d * f  # two feed-forwards, two products each
    flops += 4 * 2.0 * t * d * d + 2 * 2.0 * t * t * d  # q k v out, QK^T, PV
    if cfg.position_embeddings_type == "relative":  # linear_pos on 2T - 1 offsets, their scores against the queries
        flops += 2.0 * (2 * t - 1) * d * d + 2.0 * t * (2 * t - 1) * d
    flops += 2.0 * t * d * 2 * d + 2.0 * t * d * cfg.conv_depthwise_kernel_size + 2.0 * t * d * d  # the conv module
    return flops


def w2v_bert_flops(cfg: Config, t: int) -> float:
    """w2v-BERT's multiply-adds x 2 on T feature vectors (npw2v2.core.w2v_bert): the projection of the 160
    features, its conformer blocks (relative_key: each query against the L + R + 1 distance embeddings), and the
    intermediate FFN and adapter when there are."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    total = 2.0 * t * cfg.feature_projection_input_dim * d
    block = conformer_block_flops(cfg, t)
    if cfg.position_embeddings_type == "relative_key":
        block += 2.0 * t * (cfg.left_max_position_embeddings + cfg.right_max_position_embeddings + 1) * d
    total += cfg.num_hidden_layers * block
    if cfg.use_intermediate_ffn_before_adapter:
        total += 2 * 2.0 * t * d * f
    if cfg.add_adapter:
        o, k = cfg.adapter_width, cfg.adapter_kernel_size
        if o != d:
            total += 2.0 * t * d * o
        for _ in range(cfg.num_adapter_layers):
            t = (t + 2 * (k // 2) - k) // cfg.adapter_stride + 1
            total += 2 * 2.0 * t * k * o * 2 * o + 4 * 2.0 * t * o * o + 2 * 2.0 * t * t * o + 2 * 2.0 * t * o * f
    return total


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul speed in GFLOP/s: the best of a few n x n x n products."""
    rng = np.random.RandomState(0)
    a, b = rng.standard_normal((2, n, n)).astype(np.float32)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# The engines: npw2v2, transformers on PyTorch, and its export on ONNX Runtime


class NumpyEngine:
    name = "npw2v2"

    def __init__(self, cfg: Config, weights: dict, device: str = "cpu", reference: bool = False):
        self.model = from_tensors(weights, cfg, device=device)
        self.reference = reference

    def __call__(self, x, mask, norm_over_padding=False):
        xp = self.model.xp
        out = self.model(xp.asarray(x), None if mask is None else xp.asarray(mask),
                         norm_over_padding=norm_over_padding, reference=self.reference)
        return asnumpy(out.last_hidden_state)  # on a GPU this also waits for the work to finish


class TorchEngine:
    name = "torch"

    def __init__(self, cfg: Config, weights: dict):
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as e:
            raise ImportError(f"--vs-torch needs torch and transformers ({e}): "
                              "pip install torch transformers") from None

        self.torch = torch
        self.model = transformers_model(bare_model_class(cfg.model_type), cfg.to_dict(), weights).eval()
        self.description = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                            f"attention {self.model.config._attn_implementation}")

    def __call__(self, x, mask, norm_over_padding=None):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x), attention_mask=None if mask is None else torch.from_numpy(mask))
        return out.last_hidden_state.numpy()


class OnnxEngine:
    """transformers' model on the same weights, exported by torch.onnx and run by ONNX Runtime with
    every graph optimisation: the route to deployment without PyTorch that users take today.

    One graph per input kind, exported when first needed: without a mask, and with one.
    """
    name = "onnxruntime"

    def __init__(self, cfg: Config, weights: dict):
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError(f"--vs-onnxruntime needs onnxruntime, and torch and transformers to export the model "
                              f"({e}): pip install onnxruntime onnx torch transformers") from None
        import tempfile

        self.ort = onnxruntime
        self.torch_engine = TorchEngine(cfg, weights)
        self.folder = tempfile.TemporaryDirectory(prefix="npw2v2-bench-onnx-")
        self.sessions = {}
        self.description = f"onnxruntime {onnxruntime.__version__} (all graph optimisations), exported by torch.onnx"

    def session(self, x, mask):
        """The graph for inputs like these (samples [B, S] or w2v-BERT's features [B, T, 160], with or
        without a mask), exported from them the first time."""
        masked = mask is not None
        if masked not in self.sessions:
            torch = self.torch_engine.torch
            path = os.path.join(self.folder.name, f"model{'-masked' if masked else ''}.onnx")
            names = ["input_values", "attention_mask"] if masked else ["input_values"]
            example = tuple(torch.from_numpy(a) for a in self.feeds(x, mask).values())
            axes = {n: {0: "batch", 1: "length"} for n in names} | {"last_hidden_state": {0: "batch", 1: "frames"}}
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracing notes
                torch.onnx.export(self.torch_engine.model, example, path, input_names=names, dynamo=False,
                                  output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17)
            options = self.ort.SessionOptions()
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[masked] = self.ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return self.sessions[masked]

    @staticmethod
    def feeds(x, mask) -> dict:
        return {"input_values": x} if mask is None else {"input_values": x, "attention_mask": mask.astype(np.int64)}

    def __call__(self, x, mask, norm_over_padding=None):
        return self.session(x, mask).run(None, self.feeds(x, mask))[0]


PEERS = {"torch": TorchEngine, "onnxruntime": OnnxEngine}  # the engines npw2v2 is timed against


def build_engine(name: str, architecture: str, device: str = "cpu", reference: bool = False):
    cfg = ARCHITECTURES[architecture]
    weights = random_weights(cfg, seed=WEIGHT_SEED)
    return NumpyEngine(cfg, weights, device, reference) if name == "npw2v2" else PEERS[name](cfg, weights)


# ---------------------------------------------------------------------------
# Peak memory growth, in a process of its own


def _memory_kib() -> dict:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def probe_memory(engine, architecture: str, seconds) -> int | None:
    """Bytes of peak resident-set growth during one forward pass, or None where Linux cannot tell."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    name = engine.name + ("-reference" if getattr(engine, "reference", False) else "")
    command = [sys.executable, "-m", "npw2v2.app.bench", name, architecture, *map(str, seconds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {name} failed:\n{done.stderr.strip()}")
    growth = json.loads(done.stdout)["growth_bytes"]
    return None if growth is None else int(growth)


def _probe_main(argv) -> None:
    """``python -m npw2v2.app.bench ENGINE ARCHITECTURE SECONDS...``: prints {"growth_bytes": ...}.

    ENGINE is npw2v2, npw2v2-reference (its reference path), torch or onnxruntime.
    """
    engine_name, architecture, *seconds = argv
    engine = build_engine(engine_name.removesuffix("-reference"), architecture,
                          reference=engine_name.endswith("-reference"))
    x, mask = model_inputs(ARCHITECTURES[architecture], *make_inputs([float(s) for s in seconds]))
    engine(x, mask)  # warm-up: one-time allocations (thread pools, BLAS buffers) are not the pass's needs
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
    except OSError:
        print(json.dumps({"growth_bytes": None}))
        return
    before = _memory_kib()["VmRSS"]
    engine(x, mask)
    print(json.dumps({"growth_bytes": (_memory_kib()["VmHWM"] - before) * 1024}))


# ---------------------------------------------------------------------------
# The command


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"


def _blas_name() -> str:
    blas = threads.blas_build()
    return f"{blas['name']} {blas.get('version', '')}".strip() if "name" in blas else "unknown"


# Pause before each timed run. After a product, OpenBLAS's threads (and PyTorch's OpenMP
# threads) keep spinning for a while, waiting for more work; an engine started at once
# shares its cores with the other engine's spinning threads (docs/performance.md).
SETTLE_SECONDS = 0.5


def time_alternating(engines, x, mask, runs: int, warmup: int) -> dict:
    """Seconds per run of each engine, the engines taking turns run by run, each starting on quiet cores."""
    for _ in range(warmup):
        for engine in engines:
            engine(x, mask)
    times = {engine.name: [] for engine in engines}
    for _ in range(runs):
        for engine in engines:
            time.sleep(SETTLE_SECONDS)
            times[engine.name].append(_seconds(lambda e=engine: e(x, mask)))
    return times


def largest_difference(ours_engine, peer, x, mask) -> float:
    """Largest |npw2v2 - peer| of last_hidden_state on valid frames, with transformers' padded-batch numbers."""
    ours, theirs = ours_engine(x, mask, norm_over_padding=True), peer(x, mask)
    valid = np.ones(ours.shape[:2], dtype=bool)
    if mask is not None and ours_engine.model.config.model_type == "wav2vec2-bert":
        valid = mask  # already the frames' (model_inputs)
    elif mask is not None:
        valid = length_mask(conv_lengths(mask.sum(axis=1), ours_engine.model.config)[-1], ours.shape[1])
    return float(np.abs(ours - theirs)[valid].max())


def engines_config(engines) -> Config:
    return engines[0].model.config


def case_label(seconds) -> str:
    if len(set(seconds)) == 1:
        return f"{seconds[0]:g} s x {len(seconds)}"
    return f"{'/'.join(f'{s:g}' for s in seconds)} s, padded, mask"


def run_case(engines, architecture: str, seconds, runs: int, warmup: int, memory: bool, peak: float, out=print):
    cfg = engines_config(engines)
    x, mask = model_inputs(cfg, *make_inputs(seconds))
    flops = forward_flops(cfg, [round(s * SAMPLING_RATE) for s in seconds])
    times = time_alternating(engines, x, mask, runs, warmup)
    growth = {e.name: probe_memory(e, architecture, seconds) if memory else None for e in engines}
    out(f"\n{architecture}, {case_label(seconds)}: {flops / 1e9:.1f} GFLOP, {runs} runs after {warmup} warm-up, "
        f"each after a {SETTLE_SECONDS:g} s pause")
    out(f"  {'engine':11} {'median s':>9} {'min s':>7} {'max s':>7} {'RTF':>6} {'GFLOP/s':>8} {'% peak':>7} "
        f"{'memory +MB':>11}")
    for e in engines:
        t = times[e.name]
        median = statistics.median(t)
        mb = "n/a" if growth[e.name] is None else f"{growth[e.name] / 2**20:.0f}"
        out(f"  {e.name:11} {median:9.3f} {min(t):7.3f} {max(t):7.3f} {median / sum(seconds):6.3f} "
            f"{flops / median / 1e9:8.1f} {100 * flops / median / 1e9 / peak:6.0f}% {mb:>11}")
    ours = engines[0]
    for peer in engines[1:]:
        ratio = statistics.median(times[ours.name]) / statistics.median(times[peer.name])
        mem = ("n/a" if growth[ours.name] is None or not growth[peer.name]
               else f"{growth[ours.name] / growth[peer.name]:.2f}x")
        out(f"  npw2v2 / {peer.name}: time {ratio:.2f}x, memory {mem}, largest |difference| "
            f"{largest_difference(ours, peer, x, mask):.1e} (last_hidden_state, valid frames)")


def peers(args) -> list[str]:
    """The engines asked for besides npw2v2 (--vs-torch, --vs-onnxruntime)."""
    return [name for name, wanted in (("torch", args.vs_torch), ("onnxruntime", args.vs_onnxruntime)) if wanted]


def run(args, out=print) -> int:
    """The ``npw2v2 bench`` command (arguments from cli.py)."""
    if not args.seconds:
        cases = list(STANDARD_CASES)
    elif len(args.seconds) == 1:
        cases = [tuple(args.seconds) * args.batch]  # equal lengths, no mask
    else:
        cases = [tuple(args.seconds)]  # one item per length: a padded batch
    engines = [build_engine("npw2v2", args.model, args.device, args.reference)]
    engines += [build_engine(peer, args.model) for peer in peers(args)]
    memory = args.memory and args.device == "cpu"
    out(f"npw2v2 bench: {args.model} architecture, random weights; {machine_description()}")
    helpers = threads.ELEMENT_THREADS
    if args.reference:
        out(f"  npw2v2, reference path: matrix products by NumPy's BLAS ({_blas_name()}), element-wise work on "
            "whole arrays, on one thread")
    else:
        out(f"  npw2v2, fast path: matrix products by NumPy's BLAS ({_blas_name()}), large element-wise jobs on "
            f"{helpers} thread{'s' if helpers > 1 else ''}")
    for peer in engines[1:]:
        out(f"  {peer.description}")
    peak = matmul_peak()
    out(f"  float32 matmul peak: {peak:.1f} GFLOP/s (NumPy, best of 5 products of 2048 x 2048 matrices)")
    for seconds in cases:
        run_case(engines, args.model, seconds, args.runs, args.warmup, memory, peak, out)
    return 0


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
