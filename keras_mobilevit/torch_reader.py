"""Reads official PyTorch checkpoints into numpy arrays, without importing torch.

Only the zip container written by ``torch.save`` (torch >= 1.6) is supported:
``<root>/data.pkl`` is a pickle describing the tensors and ``<root>/data/<key>``
holds the raw bytes of each storage. The pickle is read by a restricted
unpickler that resolves only the handful of globals a plain state_dict needs,
so a malicious checkpoint cannot run code.
"""

import collections
import collections.abc
import io
import math
import os
import pickle
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
    numel = math.prod(size)
    if numel:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        # Also bounds memory: a tensor never has more elements than its record.
        if last >= storage.numel or numel > storage.numel:
            raise CheckpointError(
                f"tensor of shape {list(size)} (offset {storage_offset}, stride "
                f"{list(stride)}) does not fit in storage '{storage.key}' of "
                f"{storage.numel} elements; " + _REDOWNLOAD_HINT
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
            order = self.read(self.records[self.root + "byteorder"]).strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(
                    f"{path}: unknown byteorder record {order!r:.40}; " + _REDOWNLOAD_HINT
                )
            self.byteorder = "<" if order == b"little" else ">"
        self.storages = {}

    def read(self, info):
        try:
            return self.zf.read(info)
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError) as e:
            raise CheckpointError(
                f"cannot read record '{info.filename}' of {self.path} ({e}): " + _REDOWNLOAD_HINT
            ) from e

    def unpickle(self):
        data = self.read(self.records[self.root + "data.pkl"])
        try:
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
        if not (_is_int(numel) and numel >= 0):
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
        # Check sizes before anything is allocated.
        nbytes = numel * np.dtype(kind.code).itemsize
        if info.file_size < nbytes or info.header_offset + info.compress_size > self.file_size:
            raise CheckpointError(
                f"storage record 'data/{key}' of {self.path} has {info.file_size} bytes but "
                f"its {kind.name} of {numel} elements needs {nbytes}: " + _REDOWNLOAD_HINT
            )
        storage = _Storage(kind, key, numel, info)
        self.storages[key] = storage
        return storage

    def read_storage(self, storage):
        dtype = np.dtype(self.byteorder + storage.kind.code)
        return np.frombuffer(self.read(storage.info), dtype=dtype, count=storage.numel)

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


def load_torch_state_dict(path):
    """Loads a PyTorch checkpoint (torch.save zip format) as numpy arrays.

    A plain state_dict is returned as is. For a training checkpoint (a dict
    that is not itself a state_dict) the first of ``STATE_DICT_KEYS``
    ('model_state_dict', 'state_dict', 'model', 'ema_state_dict') holding a
    state_dict is returned. Names are unchanged: see ``strip_prefixes``.

    Args:
        path: path of the ``.pt`` / ``.pth`` file.

    Returns:
        ``OrderedDict[str, np.ndarray]`` in file order: C-contiguous copies,
        dtypes float32/float64/float16/int64/int32 (bfloat16 becomes float32).

    Raises:
        CheckpointError: on a missing, truncated, corrupt, legacy-format or
            non-state_dict file, or a pickle that asks for any global beyond
            the few a state_dict needs (the file is never unpickled freely).

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
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise _open_error(path, head) from e
    with zf:
        archive = _Archive(zf, path)
        state = _select_state_dict(archive.unpickle(), path)
        # Read each storage record once and drop it after its last tensor, so
        # peak memory stays near the size of the result.
        uses = collections.Counter(t.storage.key for t in state.values())
        flats = {}
        result = collections.OrderedDict()
        for name, tensor in state.items():
            key = tensor.storage.key
            if key not in flats:
                flats[key] = archive.read_storage(tensor.storage)
            result[name] = archive.materialize(tensor, flats[key])
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
