import collections
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import fixtures_dir

from keras_mobilevit.torch_reader import CheckpointError, load_torch_state_dict, strip_prefixes

# A placeholder keeps the tests collected (and skipped or failed by
# `fixtures_path`) when the fixture folder is missing.
FIXTURE_NAMES = sorted(p.name for p in fixtures_dir().glob("*.pt")) or ["<no fixtures>.pt"]


# --- A minimal protocol-2 pickle writer, so synthetic checkpoints need no torch.


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """Emits func(*args) as REDUCE."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class Build:
    """Emits obj followed by BUILD(state), as pickle does for an object's __dict__."""

    def __init__(self, obj, state):
        self.obj, self.state = obj, state


class Storage:
    def __init__(self, key, numel, kind="FloatStorage", location="cpu"):
        self.pid = ("storage", Global("torch", kind), key, location, numel)


class Tensor:
    def __init__(self, storage, shape, stride, offset=0, rebuild="_rebuild_tensor_v2"):
        self.storage, self.shape, self.stride, self.offset = storage, shape, stride, offset
        self.rebuild = rebuild

    def call(self):
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride))
        if self.rebuild == "_rebuild_tensor_v2":
            args += (False, collections.OrderedDict())
        return Call(Global("torch._utils", self.rebuild), *args)


def _emit(obj, out):
    if obj is None:
        out.append(pickle.NONE)
    elif isinstance(obj, bool):
        out.append(pickle.NEWTRUE if obj else pickle.NEWFALSE)
    elif isinstance(obj, int):
        n = (obj.bit_length() + 8) // 8
        out.append(pickle.LONG1 + bytes([n]) + obj.to_bytes(n, "little", signed=True))
    elif isinstance(obj, float):
        out.append(pickle.BINFLOAT + struct.pack(">d", obj))
    elif isinstance(obj, str):
        data = obj.encode()
        out.append(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)
    elif isinstance(obj, tuple):
        out.append(pickle.MARK)
        for item in obj:
            _emit(item, out)
        out.append(pickle.TUPLE)
    elif isinstance(obj, list):
        out.append(pickle.EMPTY_LIST + pickle.MARK)
        for item in obj:
            _emit(item, out)
        out.append(pickle.APPENDS)
    elif isinstance(obj, dict):
        if isinstance(obj, collections.OrderedDict):
            _emit(Call(Global("collections", "OrderedDict")), out)
        else:
            out.append(pickle.EMPTY_DICT)
        out.append(pickle.MARK)
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out.append(pickle.SETITEMS)
    elif isinstance(obj, Global):
        out.append(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    elif isinstance(obj, Call):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out.append(pickle.REDUCE)
    elif isinstance(obj, Build):
        _emit(obj.obj, out)
        _emit(obj.state, out)
        out.append(pickle.BUILD)
    elif isinstance(obj, Storage):
        _emit(obj.pid, out)
        out.append(pickle.BINPERSID)
    elif isinstance(obj, Tensor):
        _emit(obj.call(), out)
    else:
        raise TypeError(obj)


def dumps(obj):
    out = [pickle.PROTO + b"\x02"]
    _emit(obj, out)
    out.append(pickle.STOP)
    return b"".join(out)


def write_checkpoint(path, obj, records, root="archive", pickle_bytes=None):
    """Writes a torch.save-style zip: <root>/data.pkl, <root>/data/<key>, <root>/version."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{root}/data.pkl", dumps(obj) if pickle_bytes is None else pickle_bytes)
        for key, data in records.items():
            zf.writestr(f"{root}/data/{key}", data)
        zf.writestr(f"{root}/version", "3\n")
    return path


def f32(*values):
    return np.asarray(values, "<f4").tobytes()


# --- The golden fixtures.


@pytest.fixture(scope="module")
def manifest(fixtures_path):
    return json.loads((fixtures_path / "manifest.json").read_text())


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_matches_manifest(fixtures_path, manifest, name):
    state_dict = load_torch_state_dict(fixtures_path / name)
    expected = manifest["variants"][name[: -len(".pt")]]["state_dict"]
    got = [[key, list(a.shape), str(a.dtype)] for key, a in state_dict.items()]
    assert got == [[key, list(shape), dtype] for key, shape, dtype in expected]
    assert all(a.flags.c_contiguous for a in state_dict.values())

    counts = [a for key, a in state_dict.items() if key.endswith("num_batches_tracked")]
    assert counts and all(a.shape == () and a.dtype == np.int64 and a == 1 for a in counts)
    variances = [a for key, a in state_dict.items() if key.endswith("running_var")]
    assert variances and all((a > 0).all() for a in variances)
    weight = state_dict["conv_1.block.conv.weight"]
    assert np.isfinite(weight).all() and weight.std() > 0


def test_fixture_raw_bytes_match(fixtures_path):
    path = fixtures_path / "mobilevit_v1_xxs.pt"
    weight = load_torch_state_dict(path)["conv_1.block.conv.weight"]
    with zipfile.ZipFile(path) as zf:
        raw = zf.read("mobilevit_v1_xxs/data/0")
    np.testing.assert_array_equal(weight.ravel(), np.frombuffer(raw, "<f4"))


# --- Malicious pickles: refused before anything runs.


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _payloads(marker):
    touch = f"touch '{marker}'"
    create = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": dumps(Call(Global("os", "system"), touch)),
        "posix.system": dumps(Call(Global("posix", "system"), touch)),
        "builtins.eval": dumps(Call(Global("builtins", "eval"), create)),
        "builtins.exec": dumps(Call(Global("builtins", "exec"), create)),
        "pickle.dumps(__reduce__)": pickle.dumps(_Evil(touch), protocol=2),
        # Protocol 4 resolves globals through STACK_GLOBAL instead of GLOBAL.
        "STACK_GLOBAL": pickle.dumps(_Evil(touch), protocol=4),
        # Hidden after a valid tensor, inside an otherwise normal state_dict.
        "nested": dumps(
            collections.OrderedDict(
                w=Tensor(Storage("0", 2), [2], [1]),
                b=Call(Global("builtins", "eval"), create),
            )
        ),
    }


@pytest.mark.parametrize("payload", list(_payloads("m")))
def test_malicious_global_is_refused_without_running(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = write_checkpoint(
        tmp_path / "evil.pt", None, {"0": f32(1, 2)}, pickle_bytes=_payloads(marker)[payload]
    )
    with pytest.raises(CheckpointError, match="refusing to load global") as info:
        load_torch_state_dict(path)
    assert "malicious" in str(info.value)
    assert any(g in str(info.value) for g in ("'os.system'", "'posix.system'", "'builtins.e"))
    assert not marker.exists()


@pytest.mark.parametrize(
    "target, field, value",
    [
        (Tensor(Storage("0", 2), [2], [1]), "shape", (10**6,)),
        (Storage("0", 2), "numel", 10**6),
        (Global("torch", "FloatStorage"), "code", "f8"),
        (Global("torch._utils", "_rebuild_tensor_v2"), "fn", None),
    ],
    ids=["tensor", "storage", "storage-type", "function"],
)
def test_build_cannot_modify_validated_objects(tmp_path, target, field, value):
    # BUILD with a slot state would setattr() past the bounds checks, or change
    # a module-level storage type for every later load.
    obj = collections.OrderedDict(w=Build(target, (None, {field: value})))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2)})
    with pytest.raises(CheckpointError, match="BUILD"):
        load_torch_state_dict(path)
    ok = collections.OrderedDict(w=Tensor(Storage("0", 2), [2], [1]))
    path = write_checkpoint(tmp_path / "ok.pt", ok, {"0": f32(1, 2)})
    np.testing.assert_array_equal(load_torch_state_dict(path)["w"], [1, 2])


def test_payload_control_runs_under_plain_pickle(tmp_path):
    # Shows the marker check above is meaningful: plain pickle does run it.
    marker = tmp_path / "pwned"
    pickle.loads(_payloads(marker)["builtins.eval"])
    assert marker.exists()


# --- Damaged or wrong files.


@pytest.fixture
def fixture_copy(fixtures_path, tmp_path):
    return Path(shutil.copy(fixtures_path / "mobilevit_v1_xxs.pt", tmp_path / "model.pt"))


@pytest.mark.parametrize("keep", [lambda n: n // 2, lambda n: n - 4096], ids=["half", "last-4KB"])
def test_truncated_file(fixture_copy, keep):
    data = fixture_copy.read_bytes()
    fixture_copy.write_bytes(data[: keep(len(data))])
    with pytest.raises(CheckpointError, match="truncated or corrupt; re-download"):
        load_torch_state_dict(fixture_copy)


def test_corrupted_tensor_byte_fails_crc(fixture_copy):
    with zipfile.ZipFile(fixture_copy) as zf:
        info = zf.getinfo("mobilevit_v1_xxs/data/0")
    data = bytearray(fixture_copy.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF
    fixture_copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"data/0.*CRC.*truncated or corrupt; re-download"):
        load_torch_state_dict(fixture_copy)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_torch_state_dict(tmp_path / "nope.pt")


def test_not_a_zip_file(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("hello")
    with pytest.raises(
        CheckpointError, match=r"not a zip file.*torch < 1\.6.*torch\.save\(torch\.load"
    ):
        load_torch_state_dict(path)


def test_legacy_torch_file(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"legacy .*not supported.*torch\.save\(torch\.load"):
        load_torch_state_dict(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.*re-download"):
        load_torch_state_dict(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"not a torch\.save checkpoint.*data\.pkl"):
        load_torch_state_dict(path)


def test_missing_storage_record(tmp_path):
    obj = collections.OrderedDict(w=Tensor(Storage("7", 2), [2], [1]))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2)})
    with pytest.raises(CheckpointError, match=r"'data/7' is missing.*truncated or corrupt"):
        load_torch_state_dict(path)


def test_short_storage_record(tmp_path):
    obj = collections.OrderedDict(w=Tensor(Storage("0", 1000), [1000], [1]))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2)})
    with pytest.raises(CheckpointError, match=r"has 8 bytes.*needs 4000.*truncated or corrupt"):
        load_torch_state_dict(path)


@pytest.mark.parametrize(
    "shape, stride, offset",
    [([3], [1], 0), ([2], [1], 1), ([2, 2], [2, 1], 0), ([2, 2], [0, 0], 0)],
)
def test_tensor_outside_its_storage(tmp_path, shape, stride, offset):
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2), shape, stride, offset))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2)})
    with pytest.raises(CheckpointError, match="does not fit in storage '0'"):
        load_torch_state_dict(path)


def test_truncated_pickle(tmp_path):
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2), [2], [1]))
    path = write_checkpoint(tmp_path / "m.pt", None, {"0": f32(1, 2)}, pickle_bytes=dumps(obj)[:-5])
    with pytest.raises(CheckpointError, match="cannot unpickle data.pkl"):
        load_torch_state_dict(path)


@pytest.mark.parametrize(
    "obj, problem",
    [
        ([Tensor(Storage("0", 2), [2], [1])], "holds a value of type list"),
        (
            {"w": Tensor(Storage("0", 2), [2], [1]), "epoch": 3},
            "entry 'epoch' is a value of type int",
        ),
        ({"epoch": 3, "optimizer": {}}, "entry 'epoch'"),
        ({}, "empty"),
    ],
)
def test_not_a_state_dict(tmp_path, obj, problem):
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2)})
    with pytest.raises(CheckpointError, match=f"not a state_dict.*{problem}.*model_state_dict"):
        load_torch_state_dict(path)


# --- Synthetic checkpoints: layouts, dtypes and containers.


def test_transposed_tensor_via_strides(tmp_path):
    obj = collections.OrderedDict(t=Tensor(Storage("0", 6), [3, 2], [1, 3]))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(*range(6))})
    out = load_torch_state_dict(path)["t"]
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert out.flags.c_contiguous and out.dtype == np.float32


def test_storage_offset_and_shared_storage(tmp_path):
    storage = Storage("0", 6)
    obj = collections.OrderedDict(
        a=Tensor(storage, [2], [1], offset=3),
        b=Tensor(storage, [2, 2], [2, 1], offset=1),
        s=Tensor(storage, [], [], offset=5),
    )
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(*range(6))})
    out = load_torch_state_dict(path)
    np.testing.assert_array_equal(out["a"], [3, 4])
    np.testing.assert_array_equal(out["b"], [[1, 2], [3, 4]])
    assert out["s"].shape == () and out["s"] == 5


@pytest.mark.parametrize(
    "kind, data, expected",
    [
        ("LongStorage", np.array([7], "<i8"), np.array(7, np.int64)),
        ("IntStorage", np.array([-3], "<i4"), np.array(-3, np.int32)),
        ("DoubleStorage", np.array([0.1], "<f8"), np.array(0.1, np.float64)),
        ("HalfStorage", np.array([1.5], "<f2"), np.array(1.5, np.float16)),
        # bfloat16 1.5 and -2.0 are the top halves of their float32 bit patterns.
        ("BFloat16Storage", np.array([0x3FC0, 0xC000], "<u2"), np.array([1.5, -2.0], np.float32)),
    ],
)
def test_dtypes(tmp_path, kind, data, expected):
    shape = list(expected.shape)
    obj = collections.OrderedDict(x=Tensor(Storage("0", data.size, kind), shape, [1] * len(shape)))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": data.tobytes()})
    out = load_torch_state_dict(path)["x"]
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_big_endian_byteorder_record(tmp_path):
    obj = collections.OrderedDict(x=Tensor(Storage("0", 2), [2], [1]))
    with zipfile.ZipFile(tmp_path / "m.pt", "w") as zf:
        zf.writestr("m/data.pkl", dumps(obj))
        zf.writestr("m/byteorder", "big")
        zf.writestr("m/data/0", np.array([1.5, -2.0], ">f4").tobytes())
    out = load_torch_state_dict(tmp_path / "m.pt")["x"]
    assert out.dtype == np.dtype("=f4")
    np.testing.assert_array_equal(out, [1.5, -2.0])


@pytest.mark.parametrize("root", ["archive", "mobilevit_xxs", "any-name_1.2"])
def test_root_folder_is_not_hard_coded(tmp_path, root):
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2), [2], [1]))
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2)}, root=root)
    np.testing.assert_array_equal(load_torch_state_dict(str(path))["w"], [1, 2])


def test_state_dict_with_metadata_and_parameters(tmp_path):
    # model.state_dict() carries a `_metadata` attribute (pickled via BUILD);
    # nn.Parameter objects are rebuilt through _rebuild_parameter.
    weights = collections.OrderedDict(
        w=Call(
            Global("torch._utils", "_rebuild_parameter"),
            Tensor(Storage("0", 2), [2], [1]),
            True,
            collections.OrderedDict(),
        ),
        v=Tensor(Storage("1", 1), [1], [1], rebuild="_rebuild_tensor"),
    )
    obj = Build(weights, {"_metadata": collections.OrderedDict({"": {"version": 1}})})
    path = write_checkpoint(tmp_path / "m.pt", obj, {"0": f32(1, 2), "1": f32(3)})
    out = load_torch_state_dict(path)
    assert list(out) == ["w", "v"]
    np.testing.assert_array_equal(out["w"], [1, 2])
    np.testing.assert_array_equal(out["v"], [3])


def test_training_checkpoint(tmp_path):
    model = collections.OrderedDict(w=Tensor(Storage("0", 2), [2], [1]))
    ema = collections.OrderedDict(w=Tensor(Storage("1", 2), [2], [1]))
    obj = {
        "epoch": 3,
        "best_metric": 71.5,
        "ema_state_dict": ema,
        "model_state_dict": model,
        "optim_state_dict": {
            "state": {0: {"step": Tensor(Storage("2", 1), [], [])}},
            "param_groups": [{"lr": 0.1}],
        },
    }
    records = {"0": f32(1, 2), "1": f32(5, 6), "2": f32(9)}
    out = load_torch_state_dict(write_checkpoint(tmp_path / "ckpt.pt", obj, records))
    assert list(out) == ["w"]
    np.testing.assert_array_equal(out["w"], [1, 2])

    del obj["model_state_dict"]
    out = load_torch_state_dict(write_checkpoint(tmp_path / "ema.pt", obj, records))
    np.testing.assert_array_equal(out["w"], [5, 6])


def test_strip_prefixes():
    sd = collections.OrderedDict([("module.encoder.a", 1), ("encoder.b", 2), ("c.module.d", 3)])
    assert list(strip_prefixes(sd).items()) == [("a", 1), ("b", 2), ("c.module.d", 3)]
    assert list(strip_prefixes(sd, prefixes=("module.",))) == [
        "encoder.a",
        "encoder.b",
        "c.module.d",
    ]
    with pytest.raises(CheckpointError, match="both become 'a'"):
        strip_prefixes({"module.a": 1, "a": 2})


# --- Hostile sizes (issue 11 items 3 and 9): small files that stand for large ones.

READER = Path(__file__).resolve().parents[1] / "keras_mobilevit" / "torch_reader.py"


def run_reader_in_subprocess(path, timeout=120):
    """Loads `path` in a fresh interpreter (torch_reader alone, no keras): a crash is a
    failed test, not a dead pytest. Returns (exit code, output)."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('torch_reader', {str(READER)!r})\n"
        "tr = importlib.util.module_from_spec(spec); spec.loader.exec_module(tr)\n"
        "try:\n"
        f"    tr.load_torch_state_dict({str(path)!r}); print('LOADED')\n"
        "except tr.CheckpointError as e:\n"
        "    print('CheckpointError:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("nest", ["tuple1", "mark"])
def test_deeply_nested_pickle_is_refused_not_a_crash(tmp_path, nest):
    # A 300,000-deep tuple used as a dict key: hashing it recursed in C (exit 139).
    depth = 300_000
    if nest == "tuple1":
        key = pickle.NONE + pickle.TUPLE1 * depth
    else:
        key = pickle.MARK * depth + pickle.NONE + pickle.TUPLE * depth
    data = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + key + pickle.NONE + pickle.SETITEM
    path = write_checkpoint(tmp_path / "deep.pt", None, {}, pickle_bytes=data + pickle.STOP)
    rc, out = run_reader_in_subprocess(path)
    assert rc == 0, f"the reader crashed (exit {rc}):\n{out[-2000:]}"
    assert "CheckpointError:" in out and "nests objects more than 100 deep" in out, out
    assert str(path) in out


def test_nesting_limit_is_exact(tmp_path):
    """A tuple nested exactly to the limit still loads its way to the usual check."""
    from keras_mobilevit import torch_reader

    ok = pickle.PROTO + b"\x02" + pickle.NONE + pickle.TUPLE1 * torch_reader.MAX_NESTING
    torch_reader._check_nesting(ok + pickle.STOP, "ok")
    with pytest.raises(CheckpointError, match="nests objects"):
        torch_reader._check_nesting(ok + pickle.TUPLE1 + pickle.STOP, "deep")


def deflated_checkpoint(path, obj, records):
    """Like write_checkpoint, with the storage records deflate-compressed (zip bombs)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", dumps(obj))
        for key, data in records.items():
            zf.writestr(f"archive/data/{key}", data)
    return path


def test_zip_bomb_record_is_refused_before_inflating(tmp_path, monkeypatch):
    # 8 MiB of zeros in a ~8 KB file, named by a storage of 2 floats (stands for 1 GiB).
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2), [2], [1]))
    path = deflated_checkpoint(tmp_path / "bomb.pt", obj, {"0": bytes(8 << 20)})
    assert path.stat().st_size < 100_000
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: (
        opened.append(getattr(name, "filename", name)), real_open(self, name, *a, **k))[1])
    with pytest.raises(CheckpointError, match=r"tensor 'w' of .*bomb\.pt.*'data/0' has "
                                              r"8388608 bytes.*needs 8"):
        load_torch_state_dict(path)
    assert "archive/data/0" not in opened  # refused from the zip directory alone


def test_storage_larger_than_allowed_is_refused(tmp_path):
    # A consistent storage of 2M floats (8 MiB of zeros, deflated) with a 1 MiB budget.
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2 << 20), [2], [1]))
    path = deflated_checkpoint(tmp_path / "big.pt", obj, {"0": bytes(8 << 20)})
    with pytest.raises(CheckpointError, match=r"storage records hold 8388608 bytes, more than "
                                              r"the 1048576 this load allows"):
        load_torch_state_dict(path, max_bytes=1 << 20)
    assert load_torch_state_dict(path, max_bytes=8 << 20)["w"].tolist() == [0, 0]


def test_one_storage_named_many_times_is_one_array(tmp_path):
    # 400 names for one 16 KiB storage (stands for 400 x 64 MB = 25.6 GB of copies).
    storage = Storage("0", 4096)
    obj = collections.OrderedDict(
        (f"w{i}", Tensor(storage, [64, 64], [64, 1])) for i in range(400))
    data = np.arange(4096, dtype="<f4")
    path = write_checkpoint(tmp_path / "shared.pt", obj, {"0": data.tobytes()})
    out = load_torch_state_dict(path, max_bytes=2 * data.nbytes)
    assert all(out[f"w{i}"] is out["w0"] for i in range(400))
    np.testing.assert_array_equal(out["w399"].ravel(), data)


def test_many_distinct_views_of_one_storage_count_against_the_budget(tmp_path):
    storage = Storage("0", 4096)
    obj = collections.OrderedDict(
        (f"w{i}", Tensor(storage, [3000], [1], offset=i)) for i in range(400))
    path = write_checkpoint(tmp_path / "views.pt", obj, {"0": bytes(4 * 4096)})
    with pytest.raises(CheckpointError, match="its tensors hold 4800000 bytes"):
        load_torch_state_dict(path, max_bytes=1 << 20)


@pytest.mark.parametrize("kind", ["HalfStorage", "BFloat16Storage", "DoubleStorage"])
def test_record_relabelled_to_another_dtype(tmp_path, kind):
    # float32 bytes under another storage type used to load as garbage (NaN logits).
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2, kind), [2], [1]))
    path = write_checkpoint(tmp_path / "relabel.pt", obj, {"0": f32(1.5, -2.0)})
    with pytest.raises(CheckpointError, match=rf"tensor 'w' of .*relabel\.pt: storage record "
                                              rf"'data/0' has 8 bytes but its {kind} of 2"):
        load_torch_state_dict(path)


def _set_central_directory_sizes(path, member, size):
    """Rewrites the compressed and uncompressed sizes the zip directory gives `member`."""
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46 : entry + 46 + name_len] == member.encode():
            break
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<II", data, entry + 20, size, size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("declared", [4, 4000])
def test_zip_that_lies_about_a_record_size(tmp_path, declared):
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2), [2], [1]))
    path = write_checkpoint(tmp_path / "lie.pt", obj, {"0": f32(1, 2)})
    _set_central_directory_sizes(path, "archive/data/0", declared)
    with pytest.raises(CheckpointError, match=rf"tensor 'w' of .*lie\.pt.* has {declared} bytes"):
        load_torch_state_dict(path)


def test_zip_that_lies_consistently_about_a_record_size(tmp_path):
    # The directory says 4000 bytes, as the storage needs; the record holds 8.
    obj = collections.OrderedDict(w=Tensor(Storage("0", 1000), [1000], [1]))
    path = write_checkpoint(tmp_path / "lie.pt", obj, {"0": f32(1, 2)})
    _set_central_directory_sizes(path, "archive/data/0", 4000)
    with pytest.raises(CheckpointError, match=r"record 'archive/data/0' \(tensor 'w'\) of "
                                              r".*lie\.pt"):
        load_torch_state_dict(path)


@pytest.mark.parametrize("shape, stride", [([0, 2**64], [1, 1]), ([2**64, 0], [0, 1]),
                                           ([1, 2], [2**70, 1])])
def test_impossible_shape_names_file_and_key(tmp_path, shape, stride):
    obj = collections.OrderedDict(w=Tensor(Storage("0", 2), shape, stride))
    path = write_checkpoint(tmp_path / "huge.pt", obj, {"0": f32(1, 2)})
    with pytest.raises(CheckpointError, match=r"tensor 'w' of .*huge\.pt has an impossible"):
        load_torch_state_dict(path)
