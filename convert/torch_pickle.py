"""A restricted reader for PyTorch checkpoint files (``torch.save`` output), without torch.

A checkpoint is untrusted input: a pickle can name any Python callable and call it. This
reader runs pickle's opcodes in a small interpreter of its own, never Python's
``pickle.load``. The only globals it resolves are inert stand-ins (tensor rebuilding,
storage types, OrderedDict, and a few config containers, see ``ALLOWED``); any other
global is refused by name. Every tensor's offset, size and stride is checked against its
storage before a byte is touched, and the memo and stack are bounded.

Two file formats are read:
- zip (PyTorch >= 1.6): ``ARCHIVE/data.pkl`` with one member ``ARCHIVE/data/KEY`` per storage.
  Members are read in memory, never extracted. TorchScript archives are refused.
- legacy: consecutive pickles (magic number, protocol, system info, the object, the storage
  keys), then each storage's raw bytes behind an 8-byte element count.

Tensors come back as NumPy arrays; bfloat16 becomes float32, which NumPy can hold.
"""
from __future__ import annotations

import mmap
import re
import reprlib
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ConversionError

MAX_STACK = 1_000_000
MAX_MEMO = 1_000_000
MAX_OPCODES = 5_000_000  # a base-size state dict needs a few thousand
MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a zip checkpoint; real ones are kilobytes
MAX_DIMS = 16
MAX_EXTENT = 1 << 48  # no size, stride, offset or element count of a checkpoint comes near this
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxstring, _short_repr.maxother = 2, 60, 60
_short_repr.maxlist, _short_repr.maxtuple, _short_repr.maxdict = 4, 6, 4


def describe(value) -> str:
    """A short repr of an untrusted value for an error message, however big or deep it is."""
    try:
        return _short_repr.repr(value)
    except (ValueError, RecursionError):  # e.g. an int too long to print
        return f"<{type(value).__name__}>"


def _small_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_EXTENT


# ---------------------------------------------------------------------------
# Inert stand-ins for the globals a checkpoint may name


class StorageType:
    """Stands for torch.FloatStorage and friends: only knows its dtype."""

    def __init__(self, dtype: str):
        self.dtype = dtype

    def __repr__(self):
        return f"StorageType({self.dtype})"


class Storage:
    """A typed storage: which data key it reads, its dtype and declared element count."""

    def __init__(self, key: str, storage_type, numel):
        if not isinstance(storage_type, StorageType):
            raise ConversionError(f"storage {describe(key)} has no known storage type ({describe(storage_type)})")
        if not _small_int(numel):
            raise ConversionError(f"storage {describe(key)} declares an impossible size {describe(numel)}")
        self.key, self.dtype, self.numel = key, storage_type.dtype, numel


class LazyTensor:
    """A tensor as a view of a storage, read once the storage bytes are known."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, Storage):
            raise ConversionError("a tensor is rebuilt from something that is not a storage")
        where = f"tensor on storage {describe(storage.key)}"
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= MAX_DIMS):
            raise ConversionError(f"{where}: sizes {describe(size)} and strides {describe(stride)} do not pair up")
        if not all(_small_int(v) for v in (offset, *size, *stride)):
            raise ConversionError(f"{where}: bad offset, size or stride")
        numel = 1
        for n in size:
            numel *= n
            if numel > storage.numel:  # no tensor of a saved state dict is bigger than its storage
                raise ConversionError(f"{where}: more elements than its storage's {storage.numel}")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
        if last >= storage.numel:
            raise ConversionError(f"{where}: reaches element {last}, past the storage's {storage.numel}")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self, buffers: dict) -> np.ndarray:
        data = buffers[self.storage.key]  # 1-d array of storage.numel elements
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride], writeable=False,
        )
        array = view if view.flags.c_contiguous else np.ascontiguousarray(view)
        if self.storage.dtype == "bfloat16":  # NumPy has no bfloat16: widen to float32 exactly
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return LazyTensor(storage, storage_offset, size, stride)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def rebuild_from_type(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: a tensor subclass; keep the plain tensor."""
    if not any(func is allowed for allowed in ALLOWED_CALLABLES):
        raise ConversionError(f"refuses to call {describe(func)} while rebuilding a tensor")
    return func(*args)


class Record:
    """An inert object with attributes (argparse.Namespace, config metadata): pickle's BUILD fills it."""

    def __init__(self, *args, **kwargs):
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, (dict, type(None))) for s in state):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict state, slots state)
        if not isinstance(state, dict):
            raise ConversionError(f"cannot set the state of a {type(self).__name__} from {type(state).__name__}")
        if not all(isinstance(k, str) and k.isidentifier() and not k.startswith("__") for k in state):
            raise ConversionError(f"a {type(self).__name__} with odd attribute names: {describe(list(state))}")
        self.__dict__.update(state)


class Namespace(Record):
    """Stands for argparse.Namespace (fairseq's ``args``)."""


class Marker:
    """An inert name that a pickle may mention but nothing calls (typing.Any, builtins.int as a type)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


class NumpyDType:
    """Stands for numpy.dtype as pickled inside numpy scalars: numeric types only."""

    SPEC = re.compile(r"[biufc][1248]|c16|f16")

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str) or not self.SPEC.fullmatch(spec):
            raise ConversionError(f"refuses the numpy dtype {describe(spec)}: only numeric types are read")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "=")):
            raise ConversionError(f"a numpy dtype with odd state {describe(state)}")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def numpy_scalar(dtype, data):
    """numpy.core.multiarray.scalar: a number (such as a best loss in fairseq's extra_state)."""
    if not isinstance(dtype, NumpyDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise ConversionError("a numpy scalar without a numeric dtype and its bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


def codecs_encode(text, encoding="utf-8"):
    """_codecs.encode, which protocol-2 pickles use to spell bytes: latin-1 text to bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ConversionError(f"refuses _codecs.encode with {describe(encoding)}")
    return text.encode("latin-1")


def default_dict(default_factory=None):
    """collections.defaultdict: read as a plain dict (its factory is never called)."""
    return {}


TORCH_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
NUMPY_DTYPES = {"bfloat16": np.uint16}  # read as raw 16-bit words, widened later

ALLOWED = {
    ("collections", "OrderedDict"): dict,  # dicts keep their order; no attributes to hide methods behind
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): rebuild_from_type,
    ("torch.nn.parameter", "Parameter"): Marker("torch.nn.parameter.Parameter"),
    ("argparse", "Namespace"): Namespace,
    ("collections", "defaultdict"): default_dict,
    ("_codecs", "encode"): codecs_encode,
    # Built-in types named as values (a defaultdict's factory, omegaconf's type hints), never called;
    # protocol 2 spells them "__builtin__".
    **{(module, name): Marker(f"{module}.{name}") for module in ("builtins", "__builtin__")
       for name in ("dict", "list", "int", "long", "float", "str", "bool", "object", "set", "tuple")},
    ("numpy", "dtype"): NumpyDType,
    ("numpy.core.multiarray", "scalar"): numpy_scalar,
    ("numpy._core.multiarray", "scalar"): numpy_scalar,
    **{("torch", name): StorageType(dtype) for name, dtype in TORCH_STORAGES.items()},
}
# What REDUCE and NEWOBJ may call: the stand-in functions and classes above, nothing else.
ALLOWED_CALLABLES = {v for v in ALLOWED.values() if callable(v) and not isinstance(v, Marker)}


def allow(extra: dict) -> None:
    """Add stand-ins for a source format (fairseq's config containers), keyed (module, name)."""
    ALLOWED.update(extra)
    ALLOWED_CALLABLES.update(v for v in extra.values() if callable(v) and not isinstance(v, Marker))


# ---------------------------------------------------------------------------
# The pickle interpreter


class _Mark:
    pass


MARK = _Mark()


class Unpickler:
    """Runs one pickle from ``data[pos:]`` with the allowlist; ``load`` returns (object, end)."""

    def __init__(self, data: bytes, pos: int, persistent_load):
        self.data, self.pos, self.persistent_load = data, pos, persistent_load
        self.stack: list = []
        self.memo: dict = {}
        self.opcodes = 0

    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ConversionError(f"pickle truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise ConversionError(f"pickle truncated at byte {self.pos} (no end of line)")
        line = self.data[self.pos:end]
        self.pos = end + 1
        return line

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def push(self, value):
        if len(self.stack) >= MAX_STACK:
            raise ConversionError(f"pickle stack grows past {MAX_STACK} items")
        self.stack.append(value)

    def pop(self):
        if not self.stack or self.stack[-1] is MARK:
            raise ConversionError(f"pickle stack underflow at byte {self.pos}")
        return self.stack.pop()

    def pop_mark(self) -> list:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is MARK:
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise ConversionError(f"pickle has no mark to pop at byte {self.pos}")

    def put(self, index: int):
        if len(self.memo) >= MAX_MEMO and index not in self.memo:
            raise ConversionError(f"pickle memo grows past {MAX_MEMO} entries")
        if not self.stack:
            raise ConversionError("pickle memoizes an empty stack")
        self.memo[index] = self.stack[-1]

    def get(self, index: int):
        if index not in self.memo:
            raise ConversionError(f"pickle reads memo entry {index}, which was never written")
        self.push(self.memo[index])

    def find_global(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise ConversionError(
                f"refuses the pickle global {module}.{name}: it is not a type a checkpoint needs"
            ) from None

    def call(self, func, args):
        if not any(func is allowed for allowed in ALLOWED_CALLABLES):
            raise ConversionError(f"refuses to call {describe(func)}: only checkpoint stand-ins may be called")
        if not isinstance(args, tuple):
            raise ConversionError(f"pickle calls {describe(func)} with {type(args).__name__} arguments")
        return func(*args)

    def load(self):
        try:
            while True:
                self.opcodes += 1
                if self.opcodes > MAX_OPCODES:
                    raise ConversionError(f"pickle runs past {MAX_OPCODES} opcodes")
                op = self.read(1)
                handler = OPCODES.get(op)
                if handler is None:
                    raise ConversionError(f"unsupported pickle opcode {op!r} at byte {self.pos - 1}")
                if handler(self) is STOP:
                    return self.pop(), self.pos
        except ConversionError:
            raise
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, struct.error,
                UnicodeDecodeError, OverflowError, RecursionError, MemoryError) as e:
            raise ConversionError(f"malformed pickle near byte {self.pos}: {type(e).__name__}: {e}") from None


STOP = object()


def _build(u: Unpickler):
    state = u.pop()
    obj = u.stack[-1] if u.stack else None
    if isinstance(obj, (Record, NumpyDType)):
        obj.__setstate__(state)
    elif isinstance(obj, dict) and isinstance(state, dict) and set(state) <= {"_metadata"}:
        pass  # a state dict's _metadata attribute: not needed, not kept
    else:
        raise ConversionError(f"pickle sets the state of a {type(obj).__name__}, which is not allowed")


def _newobj(u: Unpickler):
    args, cls = u.pop(), u.pop()
    u.push(u.call(cls, args))


def _target(u: Unpickler, kind: type, op: str):
    """The container an opcode adds to (the top of the stack), if it is of the kind the opcode needs."""
    target = u.stack[-1] if u.stack else None
    if not isinstance(target, kind):
        raise ConversionError(f"pickle {op} on a {type(target).__name__}, not a {kind.__name__}")
    return target


def _setitems(u: Unpickler):
    items = u.pop_mark()
    if len(items) % 2:
        raise ConversionError("pickle SETITEMS with an odd number of items")
    _target(u, dict, "SETITEMS").update(zip(items[0::2], items[1::2]))


def _appends(u: Unpickler):
    items = u.pop_mark()
    _target(u, list, "APPENDS").extend(items)


def _setitem(u: Unpickler):
    value, key = u.pop(), u.pop()
    _target(u, dict, "SETITEM")[key] = value


def _append(u: Unpickler):
    value = u.pop()
    _target(u, list, "APPEND").append(value)


def _dict_from_mark(u: Unpickler):
    items = u.pop_mark()
    if len(items) % 2:
        raise ConversionError("pickle DICT with an odd number of items")
    u.push(dict(zip(items[0::2], items[1::2])))


def _stack_global(u: Unpickler):
    name, module = u.pop(), u.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise ConversionError("pickle STACK_GLOBAL with names that are not strings")
    u.push(u.find_global(module, name))


def _global(u: Unpickler):
    module = u.readline().decode("utf-8")
    name = u.readline().decode("utf-8")
    u.push(u.find_global(module, name))


def _frozen_set(u: Unpickler):
    u.push(frozenset(u.pop_mark()))


def _add_items(u: Unpickler):
    items = u.pop_mark()
    _target(u, set, "ADDITEMS").update(items)


def _reduce(u: Unpickler):
    args, func = u.pop(), u.pop()
    u.push(u.call(func, args))


def _persistent(u: Unpickler):
    u.push(u.persistent_load(u.pop()))


def _dup(u: Unpickler):
    if not u.stack:
        raise ConversionError("pickle DUP on an empty stack")
    u.push(u.stack[-1])


OPCODES = {
    b"\x80": lambda u: u.read(1),  # PROTO
    b"\x95": lambda u: u.read(8),  # FRAME: framing is only a hint for readers
    b".": lambda u: STOP,
    b"(": lambda u: u.push(MARK),
    b"0": lambda u: u.pop(),  # POP
    b"1": lambda u: u.pop_mark(),  # POP_MARK
    b"2": _dup,
    b"N": lambda u: u.push(None),
    b"\x88": lambda u: u.push(True),
    b"\x89": lambda u: u.push(False),
    b"J": lambda u: u.push(u.unpack("<i")),  # BININT
    b"K": lambda u: u.push(u.unpack("<B")),  # BININT1
    b"M": lambda u: u.push(u.unpack("<H")),  # BININT2
    b"\x8a": lambda u: u.push(int.from_bytes(u.read(u.unpack("<B")), "little", signed=True)),  # LONG1
    b"\x8b": lambda u: u.push(int.from_bytes(u.read(u.unpack("<i")), "little", signed=True)),  # LONG4
    b"G": lambda u: u.push(u.unpack(">d")),  # BINFLOAT
    b"X": lambda u: u.push(u.read(u.unpack("<I")).decode("utf-8", "surrogatepass")),  # BINUNICODE
    b"\x8c": lambda u: u.push(u.read(u.unpack("<B")).decode("utf-8", "surrogatepass")),  # SHORT_BINUNICODE
    b"\x8d": lambda u: u.push(u.read(u.unpack("<Q")).decode("utf-8", "surrogatepass")),  # BINUNICODE8
    b"T": lambda u: u.push(u.read(u.unpack("<i")).decode("latin-1")),  # BINSTRING (Python 2 str)
    b"U": lambda u: u.push(u.read(u.unpack("<B")).decode("latin-1")),  # SHORT_BINSTRING
    b"B": lambda u: u.push(bytes(u.read(u.unpack("<I")))),  # BINBYTES
    b"C": lambda u: u.push(bytes(u.read(u.unpack("<B")))),  # SHORT_BINBYTES
    b"\x8e": lambda u: u.push(bytes(u.read(u.unpack("<Q")))),  # BINBYTES8
    b"}": lambda u: u.push({}),
    b"]": lambda u: u.push([]),
    b")": lambda u: u.push(()),
    b"\x8f": lambda u: u.push(set()),  # EMPTY_SET
    b"\x90": _add_items,
    b"\x91": _frozen_set,
    b"d": _dict_from_mark,
    b"l": lambda u: u.push(u.pop_mark()),  # LIST
    b"t": lambda u: u.push(tuple(u.pop_mark())),  # TUPLE
    b"\x85": lambda u: u.push((u.pop(),)),  # TUPLE1
    b"\x86": lambda u: u.push(tuple(reversed([u.pop(), u.pop()]))),  # TUPLE2
    b"\x87": lambda u: u.push(tuple(reversed([u.pop(), u.pop(), u.pop()]))),  # TUPLE3
    b"s": _setitem,
    b"u": _setitems,
    b"a": _append,
    b"e": _appends,
    b"q": lambda u: u.put(u.unpack("<B")),  # BINPUT
    b"r": lambda u: u.put(u.unpack("<I")),  # LONG_BINPUT
    b"\x94": lambda u: u.put(len(u.memo)),  # MEMOIZE
    b"h": lambda u: u.get(u.unpack("<B")),  # BINGET
    b"j": lambda u: u.get(u.unpack("<I")),  # LONG_BINGET
    b"c": _global,
    b"\x93": _stack_global,
    b"R": _reduce,
    b"\x81": _newobj,
    b"b": _build,
    b"Q": _persistent,  # BINPERSID
}


# ---------------------------------------------------------------------------
# File formats


def _materialise(obj, buffers: dict):
    """Replace every LazyTensor inside dicts, lists, tuples and records by its array.

    Each container is visited once, however often the pickle's memo shares it.
    """
    done: dict[int, object] = {}
    active: set[int] = set()  # containers being walked: meeting one again is a cycle

    def walk(node, depth):
        if depth > 200:
            raise ConversionError("the checkpoint nests deeper than 200 levels")
        if isinstance(node, LazyTensor):
            return node.materialise(buffers)
        if not isinstance(node, (dict, list, tuple, Record)):
            return node
        if id(node) in active:
            raise ConversionError("the checkpoint contains itself")
        if id(node) in done:
            return done[id(node)]
        active.add(id(node))
        done[id(node)] = node
        if isinstance(node, dict):
            for k, v in node.items():
                node[k] = walk(v, depth + 1)
        elif isinstance(node, list):
            node[:] = [walk(v, depth + 1) for v in node]
        elif isinstance(node, tuple):
            done[id(node)] = tuple(walk(v, depth + 1) for v in node)
        else:
            for k, v in vars(node).items():
                node.__dict__[k] = walk(v, depth + 1)
        active.discard(id(node))
        return done[id(node)]

    return walk(obj, 0)


def _itemsize(storage: Storage) -> int:
    return np.dtype(NUMPY_DTYPES.get(storage.dtype, storage.dtype)).itemsize


def _storage_array(raw, storage: Storage, byteorder: str) -> np.ndarray:
    """The raw bytes of a storage as a 1-d array of exactly its declared element count."""
    dtype = np.dtype(NUMPY_DTYPES.get(storage.dtype, storage.dtype)).newbyteorder(byteorder)
    if len(raw) < storage.numel * dtype.itemsize:
        raise ConversionError(
            f"storage {describe(storage.key)} declares {storage.numel} {storage.dtype} values "
            f"but holds {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    return array if byteorder == "<" else array.astype(dtype.newbyteorder("<"))


ZIP_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, NotImplementedError,
              RuntimeError, UnicodeDecodeError, ValueError)


def read_zip(path: Path) -> object:
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_DAMAGE as e:
        raise ConversionError(f"{source}: not a readable zip archive ({describe(str(e))})") from None
    try:
        with archive, path.open("rb") as f:
            # Left open: the arrays are views of it, and it goes when the last of them does.
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return _read_archive(archive, memoryview(mapped))
    except ConversionError as e:
        raise _with_source(e, source) from None
    except ZIP_DAMAGE as e:
        raise ConversionError(f"{source}: damaged zip archive ({type(e).__name__}: {describe(str(e))})") from None


LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def _member(archive: zipfile.ZipFile, mapped: memoryview, name: str, size: int):
    """A member's bytes, refusing one whose declared size is not the size expected (no inflating bombs).

    Stored (uncompressed) members, which torch.save writes, are views of the mapped file: no copy.
    """
    info = archive.getinfo(name)
    if info.file_size != size:
        raise ConversionError(f"member {describe(name)} holds {info.file_size} bytes, {size} expected")
    if info.compress_type != zipfile.ZIP_STORED:
        return archive.read(info)
    header = bytes(mapped[info.header_offset:info.header_offset + LOCAL_HEADER.size])
    if len(header) != LOCAL_HEADER.size or LOCAL_HEADER.unpack(header)[0] != b"PK\x03\x04":
        raise ConversionError(f"member {describe(name)} has no local header")
    _, name_length, extra_length = LOCAL_HEADER.unpack(header)
    start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
    if start + size > len(mapped):
        raise ConversionError(f"member {describe(name)} runs past the end of the file")
    data = mapped[start:start + size]
    if zlib.crc32(data) != info.CRC:
        raise ConversionError(f"member {describe(name)} is damaged (its checksum does not match)")
    return data


def _read_archive(archive: zipfile.ZipFile, mapped: memoryview) -> object:
    names = archive.namelist()
    if len(names) != len(set(names)):
        raise ConversionError("the zip archive has duplicate entries")
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise ConversionError("a TorchScript archive, not a checkpoint; save the state dict instead")
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pickles) != 1:
        raise ConversionError(f"expected one data.pkl in the archive, found {len(pickles)}")
    prefix = pickles[0].removesuffix("data.pkl")
    byteorder = "<"
    if prefix + "byteorder" in names:
        byteorder = {b"little": "<", b"big": ">"}.get(archive.read(prefix + "byteorder")[:16].strip())
        if byteorder is None:
            raise ConversionError("unknown byte order in the archive")
    pickle_size = archive.getinfo(pickles[0]).file_size
    if pickle_size > MAX_PICKLE_BYTES:
        raise ConversionError(f"data.pkl declares {pickle_size} bytes, more than a checkpoint's pickle needs")
    storages: dict[str, Storage] = {}

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[2], str)):
            raise ConversionError(f"unexpected persistent id {describe(pid)}")
        _, storage_type, key, _location, numel = pid
        if key not in storages:
            if prefix + "data/" + key not in names:
                raise ConversionError(f"storage {describe(key)} has no data in the archive")
            storages[key] = Storage(key, storage_type, numel)
        return storages[key]

    obj, _ = Unpickler(archive.read(pickles[0]), 0, persistent_load).load()
    buffers = {}
    for key, storage in storages.items():
        raw = _member(archive, mapped, prefix + "data/" + key, storage.numel * _itemsize(storage))
        buffers[key] = _storage_array(raw, storage, byteorder)
    return _materialise(obj, buffers)


def read_legacy(path: Path) -> object:
    source = str(path)
    data = path.read_bytes()
    storages: dict[str, Storage] = {}

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[2], str)):
            raise ConversionError(f"unexpected persistent id {describe(pid)}")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            raise ConversionError("storage views (from PyTorch before 0.4) are not supported")
        storages.setdefault(key, Storage(key, storage_type, numel))
        return storages[key]

    def no_persistent(pid):
        raise ConversionError("unexpected persistent id in a header pickle")

    try:
        magic, pos = Unpickler(data, 0, no_persistent).load()
        if magic != LEGACY_MAGIC:
            raise ConversionError("not a PyTorch checkpoint (no zip archive, no legacy magic number)")
        protocol, pos = Unpickler(data, pos, no_persistent).load()
        if protocol != LEGACY_PROTOCOL:
            raise ConversionError(f"unsupported legacy protocol version {describe(protocol)}")
        sys_info, pos = Unpickler(data, pos, no_persistent).load()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        obj, pos = Unpickler(data, pos, persistent_load).load()
        keys, pos = Unpickler(data, pos, no_persistent).load()
        if (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
                or set(keys) != set(storages) or len(keys) != len(set(keys))):
            raise ConversionError("the list of storage keys does not match the storages the pickle uses")
        buffers = {}
        for key in keys:
            if pos + 8 > len(data):
                raise ConversionError(f"truncated before storage {describe(key)}")
            numel = struct.unpack("<q", data[pos:pos + 8])[0]
            pos += 8
            storage = storages[key]
            if numel != storage.numel:
                raise ConversionError(f"storage {describe(key)} holds {describe(numel)} values, "
                                      f"the pickle says {storage.numel}")
            size = numel * _itemsize(storage)
            if pos + size > len(data):
                raise ConversionError(f"truncated inside storage {describe(key)}")
            buffers[key] = _storage_array(memoryview(data)[pos:pos + size], storage, "<" if little else ">")
            pos += size
        return _materialise(obj, buffers)
    except ConversionError as e:
        raise _with_source(e, source) from None


def _with_source(error: ConversionError, source: str) -> ConversionError:
    message = str(error)
    return error if message.startswith(source) else ConversionError(f"{source}: {message}")


def load_torch_file(path) -> object:
    """Read a ``torch.save`` file (zip or legacy) into dicts, lists and NumPy arrays, safely.

    Raises ConversionError, naming the file and the reason, for anything it will not read.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return read_zip(path)
    if head[:1] == b"\x80":
        return read_legacy(path)
    if head.startswith(b"\x1f\x8b") or head[:4] == b"././":
        raise ConversionError(f"{path}: a tar or gzip file; PyTorch's oldest tar format is not supported")
    raise ConversionError(f"{path}: not a PyTorch checkpoint (neither zip nor legacy pickle)")
