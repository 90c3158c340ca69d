"""Safety of the restricted PyTorch checkpoint reader (convert.torch_pickle), without torch.

Hostile checkpoints are built by hand from raw pickle opcodes, ``zipfile`` and ``struct``.
Every hostile file must be refused with a ConversionError that names the file and says why,
and a sentinel proves that no payload ran: each payload, if executed, would create a file in
tmp_path and/or set os.environ["NPW2V2_PWNED"].

Sections: opcode and file helpers; the sentinel; a reference decoder (the stdlib's pure-Python
unpickler behind a stand-in-only ``find_class``) used as the fuzz oracle; positive controls;
the hostile corpus; the fuzz test; and, last, the weaknesses a review of the reader found, now
fixed (each docstring holds the reproduction of the old failure).
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import shlex
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import convert.torch_pickle as torch_pickle
from convert.errors import ConversionError
from convert.torch_pickle import load_torch_file

ROOT = Path(__file__).resolve().parent.parent
ZIP_CKPT = ROOT / "golden/data/checkpoints/hf_bin/pytorch_model.bin"
LEGACY_CKPT = ROOT / "golden/data/checkpoints/hf_bin_legacy/pytorch_model.bin"
ENV_FLAG = "NPW2V2_PWNED"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
Q_PROJ = "wav2vec2.encoder.layers.0.attention.q_proj.weight"


# ---------------------------------------------------------------------------
# Pickle opcodes, written by hand


def pkl(*ops: bytes, proto: int = 2) -> bytes:
    """A whole pickle: PROTO, the opcodes, STOP."""
    return b"\x80" + bytes([proto]) + b"".join(ops) + b"."


def glob(module: str, name: str) -> bytes:
    """GLOBAL module.name (the classic way a pickle names a callable)."""
    return b"c" + f"{module}\n{name}\n".encode()


def val(x) -> bytes:
    """Opcodes that push the Python value x; bytes are taken as opcodes already."""
    if isinstance(x, bytes):
        return x
    if x is None:
        return b"N"
    if isinstance(x, bool):
        return b"\x88" if x else b"\x89"
    if isinstance(x, int):
        if 0 <= x < 256:
            return b"K" + bytes([x])
        if -2**31 <= x < 2**31:
            return b"J" + struct.pack("<i", x)
        raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8b" + struct.pack("<i", len(raw)) + raw  # LONG4
    if isinstance(x, float):
        return b"G" + struct.pack(">d", x)
    if isinstance(x, str):
        raw = x.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(x, tuple):
        return b"(" + b"".join(map(val, x)) + b"t" if x else b")"
    if isinstance(x, list):
        return b"]" + (b"(" + b"".join(map(val, x)) + b"e" if x else b"")
    if isinstance(x, dict):
        return b"}" + (b"(" + b"".join(val(k) + val(v) for k, v in x.items()) + b"u" if x else b"")
    raise TypeError(x)


def call(func: bytes, *args) -> bytes:
    """REDUCE: func(*args)."""
    return func + val(tuple(args)) + b"R"


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def state_dict(entries: dict) -> bytes:
    """collections.OrderedDict() filled by SETITEMS, the way torch.save writes a state dict."""
    return call(glob("collections", "OrderedDict")) + b"(" + b"".join(val(k) + val(v) for k, v in entries.items()) + b"u"


def storage(key: str, numel, dtype: str = "FloatStorage", legacy: bool = False) -> bytes:
    """BINPERSID of a storage id: zip ('storage', type, key, 'cpu', numel), legacy adds a view."""
    pid = ("storage", glob("torch", dtype), key, "cpu", numel) + ((None,) if legacy else ())
    return val(pid) + b"Q"


def tensor(key, numel, offset, size, stride, dtype="FloatStorage", legacy=False) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    return call(glob("torch._utils", "_rebuild_tensor_v2"), storage(key, numel, dtype, legacy), offset,
                tuple(size), tuple(stride), False, call(glob("collections", "OrderedDict")))


def write_zip(path: Path, data_pkl: bytes, storages: dict | None = None, extra: dict | None = None,
              prefix: str = "archive/") -> Path:
    """A zip checkpoint: PREFIX/data.pkl, PREFIX/data/KEY per storage (bytes or arrays), extra members."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(prefix + "data.pkl", data_pkl)
        z.writestr(prefix + "byteorder", b"little")
        for key, raw in (storages or {}).items():
            z.writestr(prefix + "data/" + key, raw.tobytes() if isinstance(raw, np.ndarray) else raw)
        for name, raw in (extra or {}).items():
            z.writestr(name, raw)
    return path


def write_legacy(path: Path, obj: bytes, keys=(), storages=(), magic=LEGACY_MAGIC, protocol=1001,
                 sys_info: bytes | None = None) -> Path:
    """A legacy checkpoint: magic, protocol, sys info, object and key pickles, then (numel, raw) per storage."""
    info = sys_info if sys_info is not None else val({"protocol_version": 1001, "little_endian": True})
    head = pkl(val(magic)) + pkl(val(protocol)) + pkl(info) + pkl(obj) + pkl(val(list(keys)))
    body = b"".join(struct.pack("<q", a.size) + a.tobytes() if isinstance(a, np.ndarray) else a for a in storages)
    path.write_bytes(head + body)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def legacy_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the five pickles at the head of a legacy checkpoint."""
    f, spans = io.BytesIO(data), []
    for _ in range(5):
        start = f.tell()
        for _op in pickletools.genops(f):
            pass
        spans.append((start, f.tell()))
    return spans


def golden_zip_members() -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(ZIP_CKPT) as z:
        return [(name, z.read(name)) for name in z.namelist()]


def golden_data_pkl() -> tuple[str, bytes]:
    return next((n, d) for n, d in golden_zip_members() if n.endswith("/data.pkl"))


def rezip(path: Path, data_pkl: bytes) -> Path:
    """The golden zip checkpoint with its data.pkl replaced."""
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in golden_zip_members():
            z.writestr(name, data_pkl if name.endswith("/data.pkl") else raw)
    return path


def refused(path: Path, match: str) -> str:
    """Loading must raise ConversionError naming the file and matching the reason."""
    with pytest.raises(ConversionError) as info:
        load_torch_file(path)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(match, message, re.IGNORECASE), f"{match!r} not in {message!r}"
    return message


def load_in_child(path: Path, timeout: float) -> str:
    """Load in a fresh interpreter: 'refused', 'loaded', 'timeout' or the crash's last line."""
    code = ("import sys\nfrom convert.torch_pickle import load_torch_file\nfrom convert.errors import ConversionError\n"
            "try:\n    load_torch_file(sys.argv[1])\nexcept ConversionError:\n    print('refused')\n"
            "else:\n    print('loaded')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "timeout"
    return done.stdout.strip() or (done.stderr.strip().splitlines() or ["crash"])[-1]


# ---------------------------------------------------------------------------
# The sentinel: what a payload would leave behind if it ran


class Sentinel:
    def __init__(self, directory: Path):
        self.path = directory / "pwned"

    @property
    def shell(self) -> str:
        return f"touch {shlex.quote(str(self.path))}"

    @property
    def python(self) -> str:
        return f"open({str(self.path)!r}, 'w').close(); __import__('os').environ[{ENV_FLAG!r}] = '1'"

    @property
    def expr(self) -> str:
        return f"(open({str(self.path)!r}, 'w').close(), __import__('os').environ.__setitem__({ENV_FLAG!r}, '1'))"

    def fired(self) -> bool:
        return self.path.exists() or ENV_FLAG in os.environ


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A fresh sentinel; the environment flag is removed again after the test whatever happens."""
    monkeypatch.setenv(ENV_FLAG, "")
    monkeypatch.delenv(ENV_FLAG)
    (tmp_path / "sentinel").mkdir()
    return Sentinel(tmp_path / "sentinel")


# Each payload: opcodes that would run code if unpickled by Python's pickle, and the word the refusal names.
PAYLOADS = {
    "os_system": (lambda s: call(glob("os", "system"), s.shell), r"os\.system"),
    "posix_system": (lambda s: call(glob("posix", "system"), s.shell), r"posix\.system"),
    "builtins_eval": (lambda s: call(glob("builtins", "eval"), s.expr), r"builtins\.eval"),
    "builtins_exec": (lambda s: call(glob("builtins", "exec"), s.python), r"builtins\.exec"),
    "subprocess_popen": (lambda s: call(glob("subprocess", "Popen"), ["touch", str(s.path)]), r"Popen"),
    "subprocess_check_output": (lambda s: call(glob("subprocess", "check_output"), ["touch", str(s.path)]),
                                r"check_output"),
    # import_module's result is memoized first, so importlib is the first global met.
    "importlib_import_module": (lambda s: call(glob("importlib", "import_module"), "os") + binput(0) + b"0"
                                + call(call(glob("builtins", "getattr"), binget(0), "system"), s.shell),
                                r"importlib\.import_module"),
    "builtins_getattr": (lambda s: call(call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), "os"),
                                             "system"), s.shell), r"builtins\.getattr"),
    # STACK_GLOBAL whose module and name come from the memo, never as literals beside the opcode.
    "stack_global_from_memo": (lambda s: val("os") + binput(0) + b"0" + val("system") + binput(1) + b"0"
                               + binget(0) + binget(1) + b"\x93" + val((s.shell,)) + b"R", r"os\.system"),
}


# ---------------------------------------------------------------------------
# A reference decoder for the fuzz oracle: Python's own pure-Python unpickler, whose
# find_class only hands out inert stand-ins, plus an independent numpy gather per tensor.


class RefStorageType:
    DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
              "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
              "BoolStorage": "?"}

    def __init__(self, name):
        self.dtype = np.dtype(self.DTYPES[name])


class RefTensor:
    def __init__(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class RefUnpickler(pickle._Unpickler):
    """Stdlib semantics, except that framing and the protocol byte are hints, as in the reader."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.PROTO[0]] = lambda self: self.read(1)
    dispatch[pickle.FRAME[0]] = lambda self: self.read(8)

    def __init__(self, file, persistent):
        super().__init__(file)
        self._persistent = persistent

    def persistent_load(self, pid):
        return self._persistent(pid)

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return RefTensor
        if module == "torch" and name in RefStorageType.DTYPES:
            return RefStorageType(name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def _count(n) -> bool:
    return type(n) is int and n >= 0


def _gather(t: RefTensor, storages: dict) -> np.ndarray:
    """The tensor's elements, one index at a time (no as_strided), or ValueError if it is invalid."""
    values = storages[t.storage]
    size, stride = tuple(t.size), tuple(t.stride)
    if not (all(map(_count, (t.offset, *size, *stride))) and len(size) == len(stride)):
        raise ValueError("bad geometry")
    if 0 in size:
        if t.offset > values.size:
            raise ValueError("offset past storage")
        return np.zeros(size, values.dtype)
    if np.prod(size, dtype=object) > 10**7 or t.offset + sum((n - 1) * s for n, s in zip(size, stride)) >= values.size:
        raise ValueError("too large or past the storage")
    index = np.full(size, t.offset, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(size, stride)):
        index = index + (np.arange(n) * s).reshape((n,) + (1,) * (len(size) - axis - 1))
    return np.asarray(values[index], dtype=values.dtype.newbyteorder("<"))  # asarray: 0-d stays an array


def _ref_materialise(obj, storages):
    if isinstance(obj, RefTensor):
        return _gather(obj, storages)
    if isinstance(obj, dict):
        for k in obj:
            obj[k] = _ref_materialise(obj[k], storages)
    elif isinstance(obj, list):
        obj[:] = [_ref_materialise(v, storages) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_ref_materialise(v, storages) for v in obj)
    return obj


def _values(raw: bytes, stype, numel, byteorder: str) -> np.ndarray:
    dtype = stype.dtype.newbyteorder(byteorder)
    if len(raw) < numel * dtype.itemsize:
        raise ValueError("short storage")
    return np.frombuffer(raw, dtype, count=numel)


def reference_load(path: Path):
    """Decode a checkpoint the reference way; raises (anything) when it is not a valid checkpoint."""
    data = path.read_bytes()
    if data[:2] == b"PK":
        with zipfile.ZipFile(path) as z:
            (pkl_name,) = [n for n in z.namelist() if n.endswith("data.pkl")]
            prefix = pkl_name[: -len("data.pkl")]
            storages, raw = {}, {}

            def zip_pid(pid):
                kind, stype, key, _location, numel = pid
                if kind != "storage" or not isinstance(stype, RefStorageType) or type(key) is not str:
                    raise ValueError("bad persistent id")
                if key not in storages:
                    if not _count(numel):
                        raise ValueError("bad numel")
                    raw[key] = _values(z.read(prefix + "data/" + key), stype, numel, "<")
                    storages[key] = key
                return key

            obj = RefUnpickler(io.BytesIO(z.read(pkl_name)), zip_pid).load()
        return _ref_materialise(obj, raw)

    f, declared = io.BytesIO(data), {}

    def no_pid(pid):
        raise ValueError("persistent id in a header")

    def legacy_pid(pid):
        kind, stype, key, _location, numel, view = pid
        if kind != "storage" or not isinstance(stype, RefStorageType) or type(key) is not str or view is not None:
            raise ValueError("bad persistent id")
        if not _count(numel):
            raise ValueError("bad numel")
        declared.setdefault(key, (stype, numel))
        return key

    if RefUnpickler(f, no_pid).load() != LEGACY_MAGIC or RefUnpickler(f, no_pid).load() != 1001:
        raise ValueError("not legacy")
    sys_info = RefUnpickler(f, no_pid).load()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    obj = RefUnpickler(f, legacy_pid).load()
    keys = RefUnpickler(f, no_pid).load()
    if not isinstance(keys, list) or sorted(keys) != sorted(declared) or len(set(keys)) != len(keys):
        raise ValueError("storage keys")
    raw = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        stype, declared_numel = declared[key]
        if numel != declared_numel:
            raise ValueError("numel")
        raw[key] = _values(f.read(numel * stype.dtype.itemsize), stype, numel, "<" if little else ">")
    return _ref_materialise(obj, raw)


def same(a, b) -> bool:
    """Structural equality; arrays must agree in type, dtype, shape and every bit."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict) and isinstance(b, dict):  # an OrderedDict may come back as a plain dict
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


# ---------------------------------------------------------------------------
# Positive controls: valid checkpoints load, exactly


def test_golden_zip_and_legacy_give_the_same_state_dict():
    """Both fixtures load into the same dict of float32 arrays."""
    zipped, legacy = load_torch_file(ZIP_CKPT), load_torch_file(LEGACY_CKPT)
    assert isinstance(zipped, dict) and isinstance(legacy, dict)
    assert list(zipped) == list(legacy) and len(zipped) == 53
    assert zipped[Q_PROJ].shape == (32, 32)
    assert zipped["wav2vec2.feature_extractor.conv_layers.0.conv.weight"].shape == (16, 1, 10)
    for name, array in zipped.items():
        assert isinstance(array, np.ndarray) and array.dtype == np.float32, name
        assert np.array_equal(array, legacy[name]), name
        assert np.all(np.isfinite(array)) and np.any(array != 0), name


@pytest.mark.parametrize("path", [ZIP_CKPT, LEGACY_CKPT], ids=["zip", "legacy"])
def test_golden_matches_the_reference_decoder(path):
    """The reader agrees with the independent reference decoder (which the fuzz test relies on)."""
    assert same(load_torch_file(path), reference_load(path))


STORAGE = np.arange(12, dtype=np.float32)
VIEWS = {  # name: (offset, size, stride, expected)
    "transposed": (0, (3, 4), (1, 3), STORAGE.reshape(4, 3).T),
    "offset": (5, (2, 3), (3, 1), STORAGE[5:11].reshape(2, 3)),
    "scalar": (7, (), (), np.array(7.0, np.float32)),
    "empty": (12, (0, 4), (4, 1), np.zeros((0, 4), np.float32)),
    "broadcast": (2, (2, 3), (0, 1), np.array([[2, 3, 4], [2, 3, 4]], np.float32)),
}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hand_built_views_of_one_storage(tmp_path, fmt):
    """Non-contiguous, offset, 0-d, empty and broadcast views of one storage come back exactly."""
    legacy = fmt == "legacy"
    obj = state_dict({name: tensor("s0", 12, off, size, stride, legacy=legacy)
                      for name, (off, size, stride, _) in VIEWS.items()})
    if legacy:
        path = write_legacy(tmp_path / "views.pt", obj, keys=["s0"], storages=[STORAGE])
    else:
        path = write_zip(tmp_path / "views.pt", pkl(obj), {"s0": STORAGE})
    result = load_torch_file(path)
    assert list(result) == list(VIEWS)
    for name, (*_, expected) in VIEWS.items():
        assert result[name].dtype == np.float32 and result[name].shape == expected.shape, name
        assert np.array_equal(result[name], expected), name
    assert same(result, reference_load(path))


def test_bfloat16_and_big_endian_storages(tmp_path):
    """bfloat16 widens exactly to float32; a big-endian archive reads back in native order."""
    words = np.array([0x3F80, 0xC000, 0x0000], np.uint16)  # 1.0, -2.0, 0.0
    path = write_zip(tmp_path / "bf16.pt", pkl(state_dict({"w": tensor("0", 3, 0, (3,), (1,), "BFloat16Storage")})),
                     {"0": words})
    assert np.array_equal(load_torch_file(path)["w"], np.array([1.0, -2.0, 0.0], np.float32))
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(big, "w") as z:
        z.writestr("archive/data.pkl", pkl(state_dict({"w": tensor("0", 3, 0, (3,), (1,), "IntStorage")})))
        z.writestr("archive/byteorder", b"big")
        z.writestr("archive/data/0", np.array([1, -2, 70000], ">i4").tobytes())
    assert np.array_equal(load_torch_file(big)["w"], np.array([1, -2, 70000], np.int32))


# ---------------------------------------------------------------------------
# The hostile corpus: every file must be refused, with the reason, and nothing may run.

HOSTILE = {}  # name: (builder(directory, sentinel) -> path, regex the message must match)


def hostile(match: str, name: str | None = None):
    def register(build):
        HOSTILE[name or build.__name__] = (build, match)
        return build
    return register


for _name, (_payload, _match) in PAYLOADS.items():
    hostile(_match, f"{_name}-zip")(lambda d, s, p=_payload: write_zip(d / "p.pt", pkl(p(s), proto=4)))
    hostile(_match, f"{_name}-legacy")(lambda d, s, p=_payload: write_legacy(d / "p.pt", p(s)))


@hostile(r"os\.system")
def payload_in_legacy_sys_info(d, s):
    return write_legacy(d / "p.pt", state_dict({}), sys_info=PAYLOADS["os_system"][0](s))


@hostile(r"os\.system")
def payload_nested_in_golden_zip(d, s):
    """The valid checkpoint plus one more entry, state_dict['evil'] = os.system(...), before STOP."""
    _, data = golden_data_pkl()
    assert data.endswith(b"b.")  # BUILD leaves the state dict on top of the stack
    return rezip(d / "p.pt", data[:-1] + val("evil") + PAYLOADS["os_system"][0](s) + b"s.")


@hostile(r"builtins\.exec")
def payload_as_storage_type_in_golden_zip(d, s):
    """The valid checkpoint whose first storage type is builtins.exec(...) instead of torch.FloatStorage."""
    _, data = golden_data_pkl()
    assert data.count(glob("torch", "FloatStorage")) == 1
    return rezip(d / "p.pt", data.replace(glob("torch", "FloatStorage"), PAYLOADS["builtins_exec"][0](s)))


@hostile(r"subprocess\.Popen")
def payload_nested_in_golden_legacy(d, s):
    """The valid legacy checkpoint with a subprocess.Popen entry spliced into its state dict."""
    data = LEGACY_CKPT.read_bytes()
    _, end = legacy_spans(data)[3]
    extra = val("evil") + PAYLOADS["subprocess_popen"][0](s) + b"s."
    (d / "p.pt").write_bytes(data[:end - 1] + extra + data[end:])
    return d / "p.pt"


@hostile(r"unsupported pickle opcode b'i'")
def inst_opcode_os_system(d, s):
    """Protocol 0's INST opcode, which imports and calls in one step."""
    return write_zip(d / "p.pt", b"(" + val(s.shell) + b"ios\nsystem\n.")


@hostile(r"unsupported pickle opcode b'\\x82'")
def ext1_opcode(d, s):
    """EXT1 looks a global up in copyreg's extension registry."""
    return write_zip(d / "p.pt", pkl(b"\x82\x01" + val((s.shell,)) + b"R"))


@hostile(r"TorchScript")
def torchscript_archive(d, s):
    return write_zip(d / "p.pt", pkl(PAYLOADS["os_system"][0](s)),
                     extra={"archive/constants.pkl": pkl(val(())), "archive/code/__torch__/m.py": b"import os\n",
                            "archive/version": b"3\n"})


@hostile(r"duplicate")
def duplicate_zip_entries(d, s):
    """A benign data.pkl and, under the same name, a hostile one (zip readers disagree on which wins)."""
    path = d / "p.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pkl(state_dict({})))
            z.writestr("archive/data.pkl", pkl(PAYLOADS["os_system"][0](s)))
    return path


@hostile(r"past the storage")
def offset_past_storage(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, 2, (4,), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"past the storage")
def stride_past_storage(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, 0, (2, 2), (1, 3))})), {"0": np.zeros(4, "f4")})


@hostile(r"past the storage")
def empty_tensor_offset_past_storage(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, 9, (0,), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"bad offset")
def negative_offset(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, -1, (2,), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"bad offset")
def negative_stride(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, 3, (2,), (-1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"bad offset")
def bool_size(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, 0, (True,), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"sizes \(2, 2\) and strides \(1,\) do not pair up")
def sizes_and_strides_disagree(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 4, 0, (2, 2), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"declares an impossible size 1000000000000000")
def huge_declared_storage(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", 10**15, 0, (4,), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"impossible size -4")
def negative_storage_size(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("0", -4, 0, (0,), (1,))})), {"0": b""})


@hostile(r"no data in the archive")
def storage_member_missing(d, s):
    return write_zip(d / "p.pt", pkl(state_dict({"w": tensor("7", 4, 0, (4,), (1,))})), {"0": np.zeros(4, "f4")})


@hostile(r"unexpected persistent id")
def persistent_id_of_wrong_shape(d, s):
    return write_zip(d / "p.pt", pkl(val(("storage", "0")) + b"Q"), {"0": b""})


@hostile(r"no known storage type")
def storage_type_not_a_storage(d, s):
    pid = val(("storage", glob("collections", "OrderedDict"), "0", "cpu", 1)) + b"Q"
    return write_zip(d / "p.pt", pkl(pid), {"0": b"\0" * 4})


@hostile(r"not a storage")
def tensor_on_a_string(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("torch._utils", "_rebuild_tensor_v2"), "0", 0, (1,), (1,))))


@hostile(r"unknown byte order")
def unknown_byte_order(d, s):
    path = d / "p.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl(state_dict({})))
        z.writestr("archive/byteorder", b"middle")
    return path


@hostile(r"expected one data\.pkl")
def zip_without_data_pkl(d, s):
    path = d / "p.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/other.pkl", pkl(PAYLOADS["os_system"][0](s)))
    return path


@hostile(r"not a readable zip")
def zip_cut_in_half(d, s):
    data = ZIP_CKPT.read_bytes()
    (d / "p.pt").write_bytes(data[: len(data) // 2])
    return d / "p.pt"


@hostile(r"data/16.* is damaged \(its checksum does not match\)")
def zip_storage_member_corrupted(d, s):
    """One flipped byte inside a stored storage member: the CRC check catches it."""
    data = bytearray(ZIP_CKPT.read_bytes())
    with zipfile.ZipFile(ZIP_CKPT) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data/16")))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 100] ^= 0xFF
    (d / "p.pt").write_bytes(bytes(data))
    return d / "p.pt"


for _cut in (1, 10, 16, 100, 5000, 11951, 13073, 13080, 60000, 144120):
    hostile(r"truncated", f"legacy_cut_at_{_cut}")(
        lambda d, s, c=_cut: write_bytes(d / "p.pt", LEGACY_CKPT.read_bytes()[:c]))

for _seed, (_head, _why) in enumerate([(b"", r"not a PyTorch checkpoint"), (b"PK\x03\x04", r"not a readable zip"),
                                       (b"\x80\x02", r"pickle"), (b"\x1f\x8b", r"tar or gzip")]):
    hostile(_why, f"random_garbage_{_seed}")(
        lambda d, s, h=_head, seed=_seed: write_bytes(d / "p.pt", h + np.random.RandomState(seed).bytes(4096)))


@hostile(r"not a PyTorch checkpoint")
def empty_file(d, s):
    (d / "p.pt").write_bytes(b"")
    return d / "p.pt"


@hostile(r"no such file")
def directory_instead_of_file(d, s):
    return d


@hostile(r"magic number")
def legacy_wrong_magic(d, s):
    return write_legacy(d / "p.pt", PAYLOADS["os_system"][0](s), magic=LEGACY_MAGIC + 1)


@hostile(r"legacy protocol version 1000")
def legacy_wrong_protocol(d, s):
    return write_legacy(d / "p.pt", PAYLOADS["os_system"][0](s), protocol=1000)


@hostile(r"persistent id in a header")
def legacy_persistent_id_in_header(d, s):
    return write_legacy(d / "p.pt", state_dict({}), sys_info=storage("0", 1, legacy=True))


@hostile(r"storage views")
def legacy_storage_view(d, s):
    pid = val(("storage", glob("torch", "FloatStorage"), "0", "cpu", 4, ("1", 0, 2))) + b"Q"
    return write_legacy(d / "p.pt", pid, keys=["0"], storages=[np.zeros(4, "f4")])


@hostile(r"storage keys does not match")
def legacy_keys_mismatch(d, s):
    obj = state_dict({"w": tensor("0", 4, 0, (4,), (1,), legacy=True)})
    return write_legacy(d / "p.pt", obj, keys=["1"], storages=[np.zeros(4, "f4")])


@hostile(r"holds 5 values, the pickle says 4")
def legacy_storage_size_mismatch(d, s):
    obj = state_dict({"w": tensor("0", 4, 0, (4,), (1,), legacy=True)})
    return write_legacy(d / "p.pt", obj, keys=["0"], storages=[np.zeros(5, "f4")])


@hostile(r"truncated inside storage")
def legacy_storage_shorter_than_declared(d, s):
    obj = state_dict({"w": tensor("0", 4, 0, (4,), (1,), legacy=True)})
    return write_legacy(d / "p.pt", obj, keys=["0"], storages=[struct.pack("<q", 4) + b"\0" * 15])


@hostile(r"refuses to call 5")
def reduce_on_an_int(d, s):
    return write_zip(d / "p.pt", pkl(call(val(5), s.shell)))


@hostile(r"refuses to call StorageType")
def reduce_on_a_storage_type(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("torch", "FloatStorage"), 4)))


@hostile(r"refuses to call torch\.nn\.parameter\.Parameter")
def reduce_on_the_parameter_marker(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("torch.nn.parameter", "Parameter"), s.shell)))


@hostile(r"refuses to call")
def newobj_on_a_string(d, s):
    return write_zip(d / "p.pt", pkl(val("os.system") + val((s.shell,)) + b"\x81"))


@hostile(r"refuses to call 'exec'")
def rebuild_from_type_with_a_string(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("torch._tensor", "_rebuild_from_type_v2"), "exec", None, (s.python,), {})))


@hostile(r"malformed pickle.*TypeError")
def allowed_class_with_wrong_args(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("collections", "OrderedDict"), 1, 2, 3)))


@hostile(r"malformed pickle.*TypeError")
def rebuild_tensor_with_no_args(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("torch._utils", "_rebuild_tensor_v2"))))


@hostile(r"with list arguments")
def reduce_with_a_list_of_args(d, s):
    return write_zip(d / "p.pt", pkl(glob("collections", "OrderedDict") + val([]) + b"R"))


@hostile(r"STACK_GLOBAL with names that are not strings")
def stack_global_with_non_strings(d, s):
    return write_zip(d / "p.pt", pkl(val(1) + val(2) + b"\x93", proto=4))


@hostile(r"stack grows past")
def stack_bomb_of_marks(d, s):
    return write_zip(d / "p.pt", pkl(b"(" * 2_000_000))


@hostile(r"stack grows past")
def stack_bomb_of_empty_lists(d, s):
    return write_zip(d / "p.pt", pkl(b"]" * 2_000_000))


@hostile(r"memo grows past")
def memo_bomb(d, s):
    return write_zip(d / "p.pt", pkl(b"N" + b"\x94" * 2_000_000, proto=4))


@hostile(r"memo entry 7")
def memo_read_before_write(d, s):
    return write_zip(d / "p.pt", pkl(binget(7)))


@hostile(r"nests deeper than 200")
def nesting_300_deep(d, s):
    return write_zip(d / "p.pt", pkl(b"]" * 300 + b"a" * 299))


@hostile(r"contains itself")
def list_containing_itself(d, s):
    return write_zip(d / "p.pt", pkl(b"]" + binput(0) + binget(0) + b"a"))


@hostile(r"stack underflow")
def reduce_on_an_empty_stack(d, s):
    return write_zip(d / "p.pt", pkl(b"R"))


@hostile(r"sets the state of a list")
def build_on_a_list(d, s):
    return write_zip(d / "p.pt", pkl(val([]) + val({"append": 1}) + b"b"))


@hostile(r"sets the state of a LazyTensor")
def build_on_a_tensor(d, s):
    return write_zip(d / "p.pt", pkl(tensor("0", 1, 0, (1,), (1,)) + val({"storage": 1}) + b"b"), {"0": b"\0" * 4})


@hostile(r"sets the state of a StorageType")
def build_on_a_storage_type(d, s):
    return write_zip(d / "p.pt", pkl(glob("torch", "FloatStorage") + val({"dtype": "object"}) + b"b"))


@hostile(r"sets the state of a function")
def build_on_an_allowed_function(d, s):
    return write_zip(d / "p.pt", pkl(glob("torch._utils", "_rebuild_tensor_v2") + val({"__code__": 1}) + b"b"))


@hostile(r"cannot set the state of a Namespace from str")
def build_namespace_from_a_string(d, s):
    return write_zip(d / "p.pt", pkl(call(glob("argparse", "Namespace")) + val(s.python) + b"b"))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_and_nothing_runs(tmp_path, sentinel, name):
    build, match = HOSTILE[name]
    path = build(tmp_path, sentinel)
    refused(path, match)
    assert not sentinel.fired()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payloads_are_live(sentinel, name):
    """The corpus is not toothless: Python's own pickle.loads does run each payload (which only
    touches the sentinel). This is the only place the tests let a pickle call anything."""
    result = pickle.loads(pkl(PAYLOADS[name][0](sentinel), proto=4))
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert sentinel.fired()


def test_the_sentinel_would_catch_a_leaky_allowlist(tmp_path, sentinel, monkeypatch):
    """With os.system wrongly allowed, the os.system file loads and the sentinel fires."""
    monkeypatch.setitem(torch_pickle.ALLOWED, ("os", "system"), os.system)
    monkeypatch.setattr(torch_pickle, "ALLOWED_CALLABLES", torch_pickle.ALLOWED_CALLABLES | {os.system})
    build, _ = HOSTILE["os_system-zip"]
    assert load_torch_file(build(tmp_path, sentinel)) == 0
    assert sentinel.fired()


# ---------------------------------------------------------------------------
# Fuzz: mutated checkpoints are refused or read exactly as the reference decoder reads them.


def mutate(rs: np.random.RandomState, data: bytes) -> bytes:
    """One to four random byte flips, insertions or deletions."""
    b = bytearray(data)
    for _ in range(rs.randint(1, 5)):
        op, at = rs.randint(3), rs.randint(len(b))
        if op == 0:
            b[at] ^= 1 << rs.randint(8)
        elif op == 1:
            b[at:at] = bytes([rs.randint(256)])
        else:
            del b[at]
    return bytes(b)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_fuzzed_checkpoints_are_refused_or_read_correctly(tmp_path, sentinel, fmt):
    """150 seeded mutations per format: a ConversionError, or exactly the reference decoder's result."""
    _, data_pkl = golden_data_pkl()
    legacy = LEGACY_CKPT.read_bytes()
    outcomes, problems = {"refused": 0, "read": 0}, []
    for seed in range(150):
        rs = np.random.RandomState(seed)
        path = tmp_path / f"{fmt}-{seed}.pt"
        if fmt == "zip":
            rezip(path, mutate(rs, data_pkl))
        else:
            path.write_bytes(mutate(rs, legacy))
        try:
            expected = reference_load(path)
        except Exception:  # the reference refuses: so must the reader
            expected = ValueError
        try:
            result = load_torch_file(path)
        except ConversionError as e:
            assert str(path) in str(e)
            outcomes["refused"] += 1
            continue
        except Exception as e:  # anything but ConversionError is a bug
            problems.append(f"seed {seed}: {type(e).__name__}: {e}")
            continue
        outcomes["read"] += 1
        if expected is ValueError:
            problems.append(f"seed {seed}: read a file the reference decoder refuses")
        elif not same(result, expected):
            problems.append(f"seed {seed}: result differs from the reference decoder's")
        path.unlink()
    assert not problems, problems
    assert not sentinel.fired()
    assert outcomes["refused"] > 50 and outcomes["read"] > 5, outcomes  # the fuzz reaches both outcomes


# ---------------------------------------------------------------------------
# Weaknesses a review found (crashes, hangs, memory and message blow-ups), each with the
# reproduction of the old failure in its docstring.


@pytest.mark.parametrize("method", ["items", "keys_then_items"])
def test_build_cannot_shadow_dict_methods(tmp_path, method):
    """Repro: pickle  c'collections OrderedDict' ) R } 'items' 5 s b .  -> TypeError: 'int' object
    is not callable, raised by _materialise (outside every except clause)."""
    state = {"items": 5} if method == "items" else {"keys": 5, "items": 5}
    path = write_zip(tmp_path / "p.pt", pkl(call(glob("collections", "OrderedDict")) + val(state) + b"b"))
    refused(path, r".")


@pytest.mark.parametrize("state", [{1: 2}, {"__dict__": 5}], ids=["int_key", "dunder_dict"])
def test_record_state_with_odd_attribute_names(tmp_path, state):
    """Repro: pickle  c'argparse Namespace' ) R } 1 2 s b .  -> TypeError: attribute name must be string."""
    path = write_zip(tmp_path / "p.pt", pkl(call(glob("argparse", "Namespace")) + val(state) + b"b"))
    refused(path, r".")


@pytest.mark.parametrize("size, stride", [
    ((10**15,), (0,)),        # a broadcast of one element to 10**15: MemoryError (3.55 PiB)
    ((1,), (2**70,)),         # a stride no C long holds: OverflowError
    ((1,) * 65, (0,) * 65),   # 65 dimensions: ValueError (NumPy allows 64)
    ((0, 2**64), (1, 1)),     # an empty tensor with a 2**64 dimension: OverflowError
], ids=["broadcast_1e15", "stride_2e70", "65_dims", "empty_2e64"])
def test_tensor_geometry_numpy_cannot_hold(tmp_path, size, stride):
    """Repro: a state dict {'w': _rebuild_tensor_v2(storage of 1 float, 0, (10**15,), (0,), ...)}."""
    path = write_zip(tmp_path / "p.pt", pkl(state_dict({"w": tensor("0", 1, 0, size, stride)})), {"0": b"\0" * 4})
    refused(path, r".")


@pytest.mark.parametrize("where", ["zip_numel", "legacy_numel", "legacy_protocol"])
def test_huge_ints_in_error_messages(tmp_path, where):
    """Repro: a storage whose numel is 10**5000 (a 2 KB LONG4): ValueError: Exceeds the limit (4300 digits)."""
    if not hasattr(sys, "set_int_max_str_digits"):
        pytest.skip("this Python has no int-to-str digit limit")
    huge = 10**5000
    if where == "zip_numel":
        path = write_zip(tmp_path / "p.pt", pkl(state_dict({"w": tensor("0", huge, 0, (1,), (1,))})), {"0": b"\0" * 4})
    elif where == "legacy_numel":
        obj = state_dict({"w": tensor("0", huge, 0, (1,), (1,), legacy=True)})
        path = write_legacy(tmp_path / "p.pt", obj, keys=["0"], storages=[np.zeros(1, "f4")])
    else:
        path = write_legacy(tmp_path / "p.pt", state_dict({}), protocol=huge)
    refused(path, r".")


def test_legacy_unhashable_storage_key(tmp_path):
    """Repro: a legacy file whose storage-key pickle holds [[]] -> TypeError: unhashable type: 'list'."""
    path = tmp_path / "p.pt"
    path.write_bytes(pkl(val(LEGACY_MAGIC)) + pkl(val(1001)) + pkl(val({})) + pkl(val({})) + pkl(val([[]])))
    refused(path, r".")


def _flag_utf8_name(data: bytearray, name: bytes, replacement: bytes) -> None:
    """Set the UTF-8 flag on NAME's central directory entry and make its bytes invalid UTF-8."""
    at = data.find(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name:
        at = data.find(b"PK\x01\x02", at + 4)
    data[at + 9] |= 0x08  # general purpose flag bit 11: the name is UTF-8
    data[at + 46:at + 46 + len(name)] = replacement


@pytest.mark.parametrize("damage", ["byteorder_crc", "utf8_name", "corrupt_deflate"])
def test_damaged_zip_containers(tmp_path, damage):
    """Repros: (1) 'archive/byteorder' whose bytes no longer match its CRC (read before the try):
    BadZipFile; (2) a member name flagged UTF-8 but not UTF-8: UnicodeDecodeError from ZipFile();
    (3) a deflated storage member with a damaged stream: zlib.error."""
    path = tmp_path / "p.pt"
    good = pkl(state_dict({"w": tensor("0", 256, 0, (256,), (1,))}))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", good)
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/data/0", np.arange(256, dtype="f4").tobytes(), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("archive/extra", b"")
    data = bytearray(path.read_bytes())
    if damage == "byteorder_crc":
        data[data.find(b"little")] = ord("L")
    elif damage == "utf8_name":
        _flag_utf8_name(data, b"archive/extra", b"archive/\xff\xfe\xff\xfe\xff")
    else:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
            info = z.getinfo("archive/data/0")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        data[start:start + 2] = bytes(b ^ 0xFF for b in data[start:start + 2])
    path.write_bytes(bytes(data))
    refused(path, r".")


def test_billion_laughs_through_the_memo(tmp_path):
    """Repro (a 300-byte pickle): L0 = []; L(k+1) = [Lk, Lk] via BINPUT/BINGET, 40 times."""
    level = binput(0) + b"0" + b"]" + binget(0) + b"a" + binget(0) + b"a"
    path = write_zip(tmp_path / "p.pt", pkl(b"]" + level * 40))
    assert load_in_child(path, timeout=2) in ("refused", "loaded")


def test_many_huge_sizes(tmp_path):
    """Repro (an 800 KB pickle): size = (2**64,) * 200_000, stride = (0,) * 200_000, through the memo."""
    n = 200_000
    size = val(2**64) + binput(1) + b"0" + b"(" + binget(1) * n + b"t"
    stride = b"(" + val(0) * n + b"t"
    pid = storage("0", 1)
    obj = call(glob("torch._utils", "_rebuild_tensor_v2"), pid, 0, size, stride)
    path = write_zip(tmp_path / "p.pt", pkl(obj), {"0": b"\0" * 4})
    assert load_in_child(path, timeout=2) == "refused"


def test_zip_bomb_storage_member(tmp_path):
    """Repro: 'archive/data/0' = 32 MiB of zeros, ZIP_DEFLATED; the storage declares 1 float."""
    path = write_zip(tmp_path / "p.pt", pkl(state_dict({"w": tensor("0", 1, 0, (1,), (1,))})))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z, z.open("archive/data/0", "w") as f:
        for _ in range(32):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        try:
            load_torch_file(path)
        except ConversionError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_error_messages_stay_short(tmp_path):
    """Repro: a persistent id that is a list of 2000 references to one 1000-character string
    (a 6 KB pickle) gives a 2 MB message; scaled up, it exhausts memory."""
    pid = val([]) + val("x" * 1000) + binput(0) + b"a" + (binget(0) + b"a") * 2000
    path = write_zip(tmp_path / "p.pt", pkl(pid + b"Q"))
    assert path.stat().st_size < 10_000
    message = refused(path, r"persistent id")
    assert len(message) < 10_000, f"{len(message)} characters"


def test_numpy_scalars_and_defaultdicts_in_extra_state_read_as_plain_values(tmp_path):
    """fairseq keeps numbers such as the best loss as numpy scalars beside the model."""
    import collections

    extra = {"best": np.float64(1.25), "steps": np.int64(7), "half": np.float16(0.5),
             "big_endian": np.dtype(">f4").type(2.5), "counts": collections.defaultdict(int, {"a": 1})}
    data = pickle.dumps({"extra_state": extra}, protocol=2)
    loaded = load_torch_file(write_zip(tmp_path / "p.pt", data))["extra_state"]
    assert loaded == {"best": 1.25, "steps": 7, "half": 0.5, "big_endian": 2.5, "counts": {"a": 1}}


@pytest.mark.parametrize("value", [np.array([1, 2]), np.dtype("O"), np.str_("text")], ids=["ndarray", "object", "str"])
def test_other_numpy_objects_are_refused(tmp_path, value):
    path = write_zip(tmp_path / "p.pt", pickle.dumps({"x": value}, protocol=2))
    refused(path, r"refuses")
