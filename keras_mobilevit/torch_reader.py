"""Reads official PyTorch checkpoints into numpy arrays, without importing torch.

Only the zip container written by ``torch.save`` (torch >= 1.6) is supported:
``<root>/data.pkl`` is a pickle describing the tensors and ``<root>/data/<key>``
holds the raw bytes of each storage. The pickle is read by a restricted
unpickler that resolves only the handful of globals a plain state_dict needs,
so a malicious checkpoint cannot run code; and every size the file declares is
checked before anything is read or allocated, so a hostile file cannot crash the
process (deep nesting), exhaust memory (zip bombs, one storage named many times) or
load as garbage (a record relabelled to another dtype).
"""

import collections
import collections.abc
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["CheckpointError", "load_torch_state_dict", "strip_prefixes"]

# Keys under which training checkpoints keep the model weights, tried in this
# order when the file is not a plain state_dict (cvnets' resume checkpoint.pt
# uses 'model_state_dict'; the EMA weights are only taken when nothing else is).
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "ema_state_dict")

# Legacy (torch < 1.6) files start with a protocol-2 pickle of this magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_RESAVE_HINT = (
    "re-save it with a current PyTorch (torch >= 1.6), e.g. "
    "torch.save(torch.load(old_path, map_location='cpu'), new_path)"
)
_REDOWNLOAD_HINT = "the file is truncated or corrupt; re-download it"

# Bytes of tensor data one load may read (and, separately, return), unless the caller
# passes max_bytes (load_weights passes what the model needs). The largest official
# MobileViT checkpoint holds ~140 MB; a hostile file could ask for any amount.
MAX_BYTES = 1 << 30
# torch.save state_dicts nest about 6 deep; the C unpickler builds any depth, and
# hashing or printing a 300,000-deep tuple then overflows the C stack.
MAX_NESTING = 100
_MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a training checkpoint is a few MB at most
_MAX_DIM = 1 << 40  # any size or stride above this cannot be a real tensor
# What zipfile raises on damaged or hostile archives (RuntimeError: encrypted entry).
_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError,
               RuntimeError, ValueError, OverflowError, struct.error)


class CheckpointError(ValueError):
    """A checkpoint could not be read; the message says why and what to do."""


class _Sealed:
    """Base of every object the unpickler hands out.

    Refusing BUILD (``__setstate__``) keeps a pickle from altering a tensor after
    its bounds were checked, or a storage type shared by every later load.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError(
            "data.pkl tries to modify a tensor, storage or function after creating it "
            "(pickle BUILD): torch.save never writes that; do not trust this file."
        )


class _Function(_Sealed):
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _StorageType(_Sealed):
    """Stands in for torch.<Name>Storage classes; holds the on-disk element type."""

    __slots__ = ("name", "code")

    def __init__(self, name, code):
        self.name = name
        self.code = code  # numpy type code without byte order


class _Storage(_Sealed):
    __slots__ = ("kind", "key", "numel", "info")

    def __init__(self, kind, key, numel, info):
        self.kind = kind
        self.key = key
        self.numel = numel
        self.info = info


class _Tensor(_Sealed):
    """A validated, not yet materialized view into a storage."""

    __slots__ = ("storage", "offset", "shape", "strides")

    def __init__(self, storage, offset, shape, strides):
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.strides = strides


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_int_tuple(x):
    return isinstance(x, tuple) and all(_is_int(v) and v >= 0 for v in x)


def _rebuild_tensor(storage, storage_offset, size, stride):
    # Types only: bounds are checked per tensor name in _Archive.check_tensor.
    if not isinstance(storage, _Storage):
        raise CheckpointError(
            f"tensor storage is a {type(storage).__name__}, not a storage record; "
            + _REDOWNLOAD_HINT
        )
    if not (
        _is_int(storage_offset)
        and storage_offset >= 0
        and _is_int_tuple(size)
        and _is_int_tuple(stride)
        and len(size) == len(stride)
    ):
        raise CheckpointError(
            f"invalid tensor layout (offset={storage_offset!r:.40}, size={size!r:.80}, "
            f"stride={stride!r:.80}) on storage '{storage.key}'; " + _REDOWNLOAD_HINT
        )
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _Tensor):
        raise CheckpointError("a Parameter in data.pkl does not wrap a tensor; " + _REDOWNLOAD_HINT)
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    **{
        ("torch", name): _StorageType(name, code)
        for name, code in [
            ("FloatStorage", "f4"),
            ("DoubleStorage", "f8"),
            ("HalfStorage", "f2"),
            ("LongStorage", "i8"),
            ("IntStorage", "i4"),
            # numpy has no bfloat16: read the raw bits, widen to float32 later.
            ("BFloat16Storage", "u2"),
        ]
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive):
        super().__init__(file)
        self._archive = archive

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise CheckpointError(
                f"refusing to load global '{module}.{name}' from {self._archive.path}: "
                "this file is not a plain state_dict of tensors, and a malicious "
                "checkpoint can run code when unpickled. Only load it with torch "
                "if you trust its source, then save model.state_dict() instead."
            )
        return allowed

    def persistent_load(self, pid):
        return self._archive.storage(pid)


# Opcodes that add to the container below them instead of building a new object.
_IN_PLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})


def _check_nesting(data, where, limit=MAX_NESTING):
    """Refuses a pickle whose objects nest deeper than `limit`, without building any.

    Simulates the unpickler's stack with each object's nesting depth (pickletools'
    stack effects, no recursion), so a hostile file cannot overflow the C stack.
    """
    stack, marks, memo = [], [], {}
    for op, arg, pos in pickletools.genops(data):
        if pickletools.markobject in op.stack_before:  # pops down to the last MARK
            start = (marks.pop() if marks else 0) - op.stack_before.index(pickletools.markobject)
        else:
            start = len(stack) - len(op.stack_before)
        consumed = stack[max(start, 0) :]
        del stack[max(start, 0) :]
        if op.name == "MARK":
            marks.append(len(stack))
        elif op.name in _PUTS:
            memo[len(memo) if arg is None else arg] = stack[-1] if stack else 0
        elif op.name in _GETS:
            stack.append(memo.get(arg, 0))
        elif op.name == "DUP":
            stack += consumed * 2
        elif op.name in _IN_PLACE and consumed:
            stack.append(max(consumed[0], 1 + max(consumed[1:], default=0)))
        elif op.stack_after:  # a new object (POP and STOP make none)
            depth = 1 + max(consumed, default=-1)
            if depth > limit:
                raise CheckpointError(
                    f"{where} nests objects more than {limit} deep (at byte {pos}): "
                    "torch.save never writes that; do not trust this file."
                )
            stack += [depth] * sum(x is not pickletools.markobject for x in op.stack_after)


class _Archive:
    """The zip container of one checkpoint: its pickle and its storage records."""

    def __init__(self, zf, path):
        self.zf = zf
        self.path = path
        self.file_size = os.path.getsize(path)
        self.records = {info.filename: info for info in zf.infolist()}
        pickles = [n for n in self.records if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            found = "no '<root>/data.pkl' entry" if not pickles else f"several: {pickles}"
            raise CheckpointError(
                f"{path} is a zip file but not a torch.save checkpoint ({found}); "
                "expected the zip container torch.save writes (e.g. a published "
                "MobileViT .pt file), not an .npz, .keras or other archive."
            )
        self.root = pickles[0][: -len("data.pkl")]
        self.byteorder = "<"
        if self.root + "byteorder" in self.records:
            order = self.read(self.records[self.root + "byteorder"], limit=16).strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(
                    f"{path}: unknown byteorder record {order!r:.40}; " + _REDOWNLOAD_HINT
                )
            self.byteorder = "<" if order == b"little" else ">"
        self.storages = {}

    def read(self, info, limit, what=""):
        """The bytes of one record, refused unhealthy before anything is inflated."""
        where = f"record '{info.filename}'{what} of {self.path}"
        if info.file_size > limit:
            raise CheckpointError(
                f"{where} declares {info.file_size} bytes, more than the {limit} it can "
                "hold: " + _REDOWNLOAD_HINT
            )
        if info.header_offset + info.compress_size > self.file_size:
            raise CheckpointError(f"{where} lies beyond the end of the file: " + _REDOWNLOAD_HINT)
        try:
            return self.zf.read(info)
        except _ZIP_ERRORS as e:
            raise CheckpointError(f"cannot read {where} ({e}): " + _REDOWNLOAD_HINT) from e

    def unpickle(self):
        data = self.read(self.records[self.root + "data.pkl"], _MAX_PICKLE_BYTES)
        try:
            _check_nesting(data, f"data.pkl of {self.path}")
            return _RestrictedUnpickler(io.BytesIO(data), self).load()
        except CheckpointError:
            raise
        except Exception as e:  # any failure on untrusted bytes means a bad file
            raise CheckpointError(
                f"cannot unpickle data.pkl of {self.path} ({type(e).__name__}: {e}); "
                + _REDOWNLOAD_HINT
            ) from e

    def storage(self, pid):
        """Resolves a persistent id ('storage', type, key, location, numel)."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"unsupported persistent id {pid!r:.100} in {self.path}; " + _REDOWNLOAD_HINT
            )
        _, kind, key, location, numel = pid
        if not (
            isinstance(kind, _StorageType) and isinstance(key, str) and isinstance(location, str)
        ):
            raise CheckpointError(
                f"malformed storage id {pid!r:.100} in {self.path}; " + _REDOWNLOAD_HINT
            )
        if not (_is_int(numel) and 0 <= numel <= _MAX_DIM):
            raise CheckpointError(
                f"invalid storage size {numel!r:.40} in {self.path}; " + _REDOWNLOAD_HINT
            )
        cached = self.storages.get(key)
        if cached is not None:
            if cached.kind is not kind or cached.numel != numel:
                raise CheckpointError(
                    f"storage '{key}' is declared twice with different types in {self.path}; "
                    + _REDOWNLOAD_HINT
                )
            return cached
        info = self.records.get(self.root + "data/" + key)
        if info is None:
            raise CheckpointError(
                f"storage record 'data/{key}' is missing from {self.path}: " + _REDOWNLOAD_HINT
            )
        storage = _Storage(kind, key, numel, info)
        self.storages[key] = storage
        return storage

    def check_tensor(self, name, tensor):
        """Bounds of one tensor and the exact size of its record; reads nothing."""
        storage = tensor.storage
        where = f"tensor '{name}' of {self.path}"
        if any(n > _MAX_DIM for n in (tensor.offset, *tensor.shape, *tensor.strides)):
            raise CheckpointError(
                f"{where} has an impossible shape {list(tensor.shape)} / stride "
                f"{list(tensor.strides)} / offset {tensor.offset}: " + _REDOWNLOAD_HINT
            )
        if math.prod(tensor.shape):
            last = tensor.offset + sum(
                (n - 1) * s for n, s in zip(tensor.shape, tensor.strides, strict=True)
            )
            # Also bounds memory: a tensor never has more elements than its record.
            if last >= storage.numel or math.prod(tensor.shape) > storage.numel:
                raise CheckpointError(
                    f"{where}: shape {list(tensor.shape)} (offset {tensor.offset}, stride "
                    f"{list(tensor.strides)}) does not fit in storage '{storage.key}' of "
                    f"{storage.numel} elements; " + _REDOWNLOAD_HINT
                )
        # Exact: a float32 record relabelled HalfStorage, or a zip entry that lies
        # about its size, is refused before a byte is inflated.
        nbytes = storage.numel * np.dtype(storage.kind.code).itemsize
        if storage.info.file_size != nbytes:
            raise CheckpointError(
                f"{where}: storage record 'data/{storage.key}' has {storage.info.file_size} "
                f"bytes but its {storage.kind.name} of {storage.numel} elements needs "
                f"{nbytes}: " + _REDOWNLOAD_HINT
            )
        return nbytes

    def read_storage(self, storage, name):
        dtype = np.dtype(self.byteorder + storage.kind.code)
        data = self.read(storage.info, storage.numel * dtype.itemsize, f" (tensor '{name}')")
        return np.frombuffer(data, dtype=dtype, count=storage.numel)

    @staticmethod
    def materialize(tensor, flat):
        """Copies a tensor out of its storage's 1-D array into a C-contiguous array."""
        native = flat.dtype.newbyteorder("=")
        if 0 in tensor.shape:
            out = np.empty(tensor.shape, dtype=native)
        else:
            view = np.lib.stride_tricks.as_strided(
                flat[tensor.offset :],
                shape=tensor.shape,
                strides=tuple(s * flat.itemsize for s in tensor.strides),
                writeable=False,
            )
            out = np.array(view, dtype=native, order="C")
        if tensor.storage.kind.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _describe(value):
    return "a tensor" if isinstance(value, _Tensor) else f"a value of type {type(value).__name__}"


def _state_dict_problem(obj):
    """Returns why `obj` is not a name -> tensor mapping, or None if it is one."""
    if not isinstance(obj, collections.abc.Mapping):
        return f"it holds {_describe(obj)}"
    if not obj:
        return "it holds an empty mapping"
    for name, value in obj.items():
        if not isinstance(name, str):
            return f"it has a non-string key {name!r:.60}"
        if not isinstance(value, _Tensor):
            return f"entry '{name}' is {_describe(value)}, not a tensor"
    return None


def _select_state_dict(obj, path):
    problem = _state_dict_problem(obj)
    if problem is None:
        return obj
    if isinstance(obj, collections.abc.Mapping):
        for key in STATE_DICT_KEYS:
            if key in obj and _state_dict_problem(obj[key]) is None:
                return obj[key]
    raise CheckpointError(
        f"{path} is not a state_dict (a mapping of parameter name -> tensor): {problem}. "
        f"Training checkpoints are accepted when one of {list(STATE_DICT_KEYS)} holds "
        "the state_dict; otherwise save model.state_dict() with torch."
    )


def _open_error(path, head):
    if not head:
        return CheckpointError(
            f"{path} is empty (0 bytes): the download probably failed; re-download it."
        )
    if head.startswith(b"PK"):
        return CheckpointError(f"{path} is a damaged zip file: " + _REDOWNLOAD_HINT + ".")
    if head.startswith(_LEGACY_MAGIC):
        return CheckpointError(
            f"{path} uses the legacy (torch < 1.6, non-zip) serialization format, "
            "which is not supported: " + _RESAVE_HINT + "."
        )
    return CheckpointError(
        f"{path} is not a zip file, so not a torch.save checkpoint of torch >= 1.6 "
        "(legacy non-zip files from torch < 1.6 are not supported: " + _RESAVE_HINT + "). "
        "If it should be a zip checkpoint, it is corrupt: re-download it."
    )


def _check_budget(archive, state, max_bytes):
    """Refuses a file that would read or return more than `max_bytes`; reads nothing."""
    stored, views = {}, {}
    for name, tensor in state.items():
        stored[tensor.storage.key] = archive.check_tensor(name, tensor)
        itemsize = np.dtype(tensor.storage.kind.code).itemsize
        views[_view_key(tensor)] = math.prod(tensor.shape) * max(itemsize, 4)
    for what, total in (("storage records", sum(stored.values())),
                        ("tensors", sum(views.values()))):
        if total > max_bytes:
            raise CheckpointError(
                f"{archive.path}: its {what} hold {total} bytes, more than the {max_bytes} "
                "this load allows (max_bytes): not the checkpoint of this model, or a "
                "hostile file. Pass a larger max_bytes only if you trust it."
            )


def _view_key(tensor):
    """Tensors with equal keys are the same array (one storage named many times)."""
    return (tensor.storage.key, tensor.offset, tensor.shape, tensor.strides)


def load_torch_state_dict(path, max_bytes=None):
    """Loads a PyTorch checkpoint (torch.save zip format) as numpy arrays.

    A plain state_dict is returned as is. For a training checkpoint (a dict
    that is not itself a state_dict) the first of ``STATE_DICT_KEYS``
    ('model_state_dict', 'state_dict', 'model', 'ema_state_dict') holding a
    state_dict is returned. Names are unchanged: see ``strip_prefixes``.

    Args:
        path: path of the ``.pt`` / ``.pth`` file.
        max_bytes: most bytes of tensor data to read, and separately to return
            (default ``MAX_BYTES``, 1 GiB); checked before anything is read.

    Returns:
        ``OrderedDict[str, np.ndarray]`` in file order: C-contiguous copies,
        dtypes float32/float64/float16/int64/int32 (bfloat16 becomes float32).
        Names that share one storage and layout share one array, as in torch.

    Raises:
        CheckpointError: on a missing, truncated, corrupt, legacy-format or
            non-state_dict file, a record whose size does not match its dtype and
            shape exactly, a file over ``max_bytes``, or a pickle that nests too
            deep or asks for any global beyond the few a state_dict needs (the
            file is never unpickled freely).

    Example:
        >>> sd = strip_prefixes(load_torch_state_dict("mobilevit_xxs.pt"))
        >>> sd["conv_1.block.conv.weight"].shape
        (16, 3, 3, 3)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"checkpoint file not found: {path!r} (check the path, or download the file first)."
        )
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
        zf = zipfile.ZipFile(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    except _ZIP_ERRORS as e:
        raise _open_error(path, head) from e
    with zf:
        archive = _Archive(zf, path)
        state = _select_state_dict(archive.unpickle(), path)
        _check_budget(archive, state, MAX_BYTES if max_bytes is None else max_bytes)
        return _materialize_all(archive, state)


def _materialize_all(archive, state):
    # Read each storage record once and drop it after its last tensor, so peak
    # memory stays near the size of the result.
    uses = collections.Counter(t.storage.key for t in state.values())
    flats, views, result = {}, {}, collections.OrderedDict()
    for name, tensor in state.items():
        key = tensor.storage.key
        if _view_key(tensor) not in views:
            if key not in flats:
                flats[key] = archive.read_storage(tensor.storage, name)
            views[_view_key(tensor)] = archive.materialize(tensor, flats[key])
        result[name] = views[_view_key(tensor)]
        uses[key] -= 1
        if not uses[key]:
            del flats[key]
    return result


def strip_prefixes(state_dict, prefixes=("module.", "encoder.")):
    """Removes leading wrapper prefixes (DataParallel 'module.', 'encoder.') from names.

    Prefixes are stripped repeatedly, in any order ('module.encoder.x' -> 'x').

    Example:
        >>> strip_prefixes({"module.fc.weight": w})
        OrderedDict([('fc.weight', w)])

    Raises:
        CheckpointError: if two names become the same after stripping.
    """
    result = collections.OrderedDict()
    for name, value in state_dict.items():
        short = name
        while True:
            prefix = next((p for p in prefixes if p and short.startswith(p)), None)
            if prefix is None:
                break
            short = short[len(prefix) :]
        if short in result:
            raise CheckpointError(
                f"'{name}' and another key both become '{short}' after stripping {prefixes}."
            )
        result[short] = value
    return result
