"""Fuzzes the checkpoint reader with damaged copies of a golden .pt (issue 11).

Every case must end in a loaded model or a CheckpointError: no other exception, no
crash, no memory blow-up. The cases run in a child interpreter (the reader alone) with a
memory limit, so a segfault or a runaway allocation fails this test instead of killing
pytest; the files it loads are then loaded into the model (`load_weights`), where each
must again load or raise CheckpointError.

Run by hand for more cases: python tests/test_checkpoint_fuzz.py FIXTURE.pt SEED COUNT [KEEP_DIR]
"""

import importlib.util
import io
import json
import random
import struct
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

READER = Path(__file__).resolve().parents[1] / "keras_mobilevit" / "torch_reader.py"
CASES = 300
MEMORY_LIMIT = 2 << 30  # address space of the child; the fixture needs ~50 MB
INTERESTING = (0, 1, 7, 8, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


def _records(data):
    """[(name, bytes)] of a zip, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _rezip(records):
    """A well-formed zip (valid CRCs) of `records`, as torch.save writes it (stored)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, payload in records:
            zf.writestr(name, payload)
    return out.getvalue()


def _flip(rng, data, start=0, end=None):
    data = bytearray(data)
    end = len(data) if end is None else end
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(start, end)] ^= rng.randint(1, 255)
    return bytes(data)


def _edit_directory(rng, data):
    """Sets one field of one central-directory entry to an odd value."""
    data = bytearray(data)
    entries = []
    at = data.find(b"PK\x01\x02")
    while at != -1:
        entries.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    entry = rng.choice(entries)
    # offsets in a central-directory entry: method, crc, sizes, name length, local header
    offset, fmt = rng.choice([(10, "<H"), (16, "<I"), (20, "<I"), (24, "<I"), (28, "<H"),
                              (42, "<I"), (8, "<H")])
    old = struct.unpack_from(fmt, data, entry + offset)[0]
    limit = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
    value = rng.choice([rng.choice(INTERESTING), old + rng.randint(-64, 64), old * 2])
    struct.pack_into(fmt, data, entry + offset, min(max(value, 0), limit))
    return bytes(data)


def _edit_pickle(rng, records):
    """Damages data.pkl but keeps the zip valid, so the unpickler itself is reached."""
    index = next(i for i, (name, _) in enumerate(records) if name.endswith("/data.pkl"))
    name, pkl = records[index]
    how = rng.randrange(4)
    if how == 0:
        pkl = _flip(rng, pkl)
    elif how == 1:
        pkl = pkl[: rng.randrange(len(pkl))]
    elif how == 2:  # repeat a slice: duplicated opcodes, marks, memo puts
        a = rng.randrange(len(pkl))
        b = min(len(pkl), a + rng.randint(1, 64))
        pkl = pkl[:b] + pkl[a:b] * rng.randint(1, 50) + pkl[b:]
    else:  # a storage size or tensor size digit changed (ASCII numbers in BINUNICODE keys)
        pkl = bytes(c if c not in b"0123456789" or rng.random() > 0.05
                    else rng.choice(b"0123456789") for c in pkl)
    return records[:index] + [(name, pkl)] + records[index + 1:]


def _edit_record(rng, records):
    """Makes one tensor record shorter or longer (a valid zip that lies through sizes)."""
    index = rng.choice([i for i, (name, _) in enumerate(records) if "/data/" in name])
    name, payload = records[index]
    cut = rng.choice([payload[:-rng.randint(1, max(1, len(payload)))],
                      payload + bytes(rng.randint(1, 64))])
    return records[:index] + [(name, cut)] + records[index + 1:]


def mutate(rng, data, records):
    how = rng.randrange(6)
    if how == 0:
        return "truncate", data[: rng.randrange(len(data))]
    if how == 1:  # byte flips near the start (local headers, data.pkl) or the end
        region = rng.choice([(0, min(len(data), 1 << 16)), (max(0, len(data) - 4096), len(data)),
                             (0, len(data))])
        return "flip", _flip(rng, data, *region)
    if how == 2:
        return "directory", _edit_directory(rng, data)
    if how == 3:
        return "pickle", _rezip(_edit_pickle(rng, records))
    if how == 4:
        return "record", _rezip(_edit_record(rng, records))
    return "pickle+directory", _edit_directory(rng, _rezip(_edit_pickle(rng, records)))


def run_cases(fixture, seed, count, keep=None):
    """Child side: returns {'outcomes': {...}, 'unexpected': [...], 'loaded': [paths]};
    the files that loaded are kept in folder `keep` (if given)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    spec = importlib.util.spec_from_file_location("torch_reader", READER)
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    data = Path(fixture).read_bytes()
    records = _records(data)
    rng = random.Random(seed)
    outcomes, unexpected, loaded = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.pt"
        for case in range(count):
            kind, mutated = mutate(rng, data, records)
            path.write_bytes(mutated)
            try:
                reader.load_torch_state_dict(path, max_bytes=64 << 20)
                result = "loaded"
                if keep:
                    loaded.append(str(Path(keep) / f"case-{case}.pt"))
                    Path(loaded[-1]).write_bytes(mutated)
            except reader.CheckpointError:
                result = "CheckpointError"
            except BaseException:  # noqa: BLE001 - reporting exactly these is the point
                result = "unexpected"
                unexpected.append(f"case {case} ({kind}):\n{traceback.format_exc()}")
            outcomes[f"{kind}: {result}"] = outcomes.get(f"{kind}: {result}", 0) + 1
    return {"outcomes": outcomes, "unexpected": unexpected, "loaded": loaded}


def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(fixtures_path, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, __file__, str(fixtures_path / "mobilevit_v1_xxs.pt"), "0", str(CASES),
         str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    try:
        from keras_mobilevit import MobileViTv1XXS, load_weights
        from keras_mobilevit.torch_reader import CheckpointError

        model = MobileViTv1XXS(include_preprocessing=False)  # built while the child fuzzes
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, (f"the fuzz child died (exit {proc.returncode}, a crash or "
                                  f"the memory limit):\n{stderr[-3000:]}")
    report = json.loads(stdout)
    assert not report["unexpected"], "\n".join(report["unexpected"][:5])
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == CASES
    # The cases reach both ends: some damage is harmless, most is refused.
    assert any(k.endswith("loaded") for k in outcomes), outcomes
    for kind in ("truncate", "flip", "directory", "pickle", "record"):
        assert outcomes.get(f"{kind}: CheckpointError"), outcomes

    # What the reader accepted goes into the model: it loads or is refused, nothing else.
    results = {"loaded": 0, "refused": 0}
    for path in report["loaded"]:
        try:
            load_weights(model, path, "mobilevit_xxs")
            results["loaded"] += 1
        except CheckpointError:
            results["refused"] += 1
    assert results["loaded"] and sum(results.values()) == len(report["loaded"]), results


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    print(json.dumps(run_cases(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                               *sys.argv[4:])))
