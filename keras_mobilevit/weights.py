"""Official weights: the registry of published checkpoints, their download and cache, and
how they map onto layers.

Keras layer names are the official state_dict prefixes, so the mapping is one rule per
layer class (`_layer_keys`). Loading is strict: a missing, unexpected or mis-shaped key
is an error that names it. Downloads time out, are pinned by sha256 on first use, and a
damaged cache entry is moved aside and fetched again.

Example:
    >>> model = keras_mobilevit.MobileViTv1XXS(weights=None)
    >>> load_weights(model, "mobilevit_xxs.pt")           # an upstream checkpoint
    >>> sd = pretrained_state_dict("deeplabv3_mobilevitv2_050", "voc")  # keys as published
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile

import keras
import numpy as np

from keras_mobilevit import layers as L
from keras_mobilevit.fileio import atomic_path, write_text_atomic
from keras_mobilevit.torch_reader import (
    MAX_BYTES,
    CheckpointError,
    load_torch_state_dict,
    strip_prefixes,
)

MIRROR_ENV = "KERAS_MOBILEVIT_WEIGHTS_URL"  # a mirror URL, or a local folder of downloads
CACHE_ENV = "KERAS_MOBILEVIT_CACHE"  # default: $KERAS_HOME or ~/.keras
TIMEOUT_ENV = "KERAS_MOBILEVIT_DOWNLOAD_TIMEOUT"  # seconds; overrides DOWNLOAD_TIMEOUT
DOWNLOAD_TIMEOUT = 60.0  # seconds a download may wait for the server (connect or a read)
RELEASE_PAGES = {
    "cvnets": "https://github.com/apple/ml-cvnets (docs: model zoo)",
    "cvnets-v2": "https://github.com/apple/ml-cvnets (docs: model zoo)",
    "mobilevitv3": "https://github.com/micronDLA/MobileViTv3/releases",
}
_BASES = {
    "cvnets": "https://docs-assets.developer.apple.com/ml-research/models/cvnets/",
    "cvnets-v2": "https://docs-assets.developer.apple.com/ml-research/models/cvnets-v2/",
    "mobilevitv3": "https://github.com/micronDLA/MobileViTv3/releases/download/v1.0.0/",
}
_IGNORED_KEYS = ("num_batches_tracked",)  # BN step counters: unused at inference
# Checkpoint file names inside a MobileViTv3 result folder, best first.
_CHECKPOINT_NAMES = ("checkpoint_ema_best.pt", "checkpoint_best.pt", "checkpoint_ema.pt",
                     "checkpoint.pt")


# ---------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Asset:
    """One published file: `base` (a key of _BASES) + `path`; for a zip, the checkpoint
    is the one inside the folder named `folder`, at any depth."""

    base: str
    path: str
    folder: str | None = None

    @property
    def url(self):
        return _BASES[self.base] + self.path


@dataclasses.dataclass(frozen=True)
class Entry:
    """Published weights of one model on one dataset: candidate assets, tried in order."""

    name: str
    dataset: str
    assets: tuple
    strip: tuple  # key prefixes removed on loading ('encoder.' only for classifiers)


def _v3_assets(folder, family, task):
    """Where the MobileViTv3 v1.0.0 release may hold `<folder>/checkpoint_ema_best.pt`.

    The asset names were never checked against the live release: one zip per model, or
    archives per family (as `MobileViTv3-v1/results_<task>/<folder>/...` in upstream code).
    """
    names = (f"{folder}.zip", f"{family}.zip", f"results_{task}.zip",
             f"{family}_results_{task}.zip")
    return tuple(Asset("mobilevitv3", n, folder) for n in names)


_V2_WIDTHS = {"050": "0.5", "075": "0.75", "100": "1.0", "125": "1.25", "150": "1.5",
              "175": "1.75", "200": "2.0"}
_CLASSIFIER_PREFIXES = ("module.", "encoder.")
_TASK_PREFIXES = ("module.",)  # seg/det keys keep encoder./seg_head./ssd_heads. as published
_V3_FOLDERS = {  # name -> {dataset: MobileViTv3 release folder without "mobilevitv3_"}
    "mobilevitv3_xxs": {"imagenet": "XXS_e300_7098", "voc": "XXS_voc_e50_7404",
                        "coco": "XXS_coco_e200_1930"},
    "mobilevitv3_xs": {"imagenet": "XS_e300_7671", "voc": "XS_voc_e50_7877",
                       "coco": "XS_coco_e200_2560"},
    "mobilevitv3_s": {"imagenet": "S_e300_7930", "voc": "S_voc_e50_7959",
                      "coco": "S_coco_e200_2730"},
    "mobilevitv3_050": {"imagenet": "0_5_0", "voc": "voc_0_5_0", "ade20k": "ade20k_0_5_0",
                        "coco": "coco_0_5_0"},
    "mobilevitv3_075": {"imagenet": "0_7_5", "ade20k": "ade20k_0_7_5",
                        "coco": "coco_0_7_5"},
    "mobilevitv3_100": {"imagenet": "1_0_0", "voc": "voc_1_0_0", "ade20k": "ade20k_1_0_0",
                        "coco": "coco_1_0_0"},
    "mobilevitv3_xxs_l2": {"imagenet": "XXS_L2_e300_7023"},
    "mobilevitv3_xs_l2": {"imagenet": "XS_L2_e300_7610"},
    "mobilevitv3_s_l2": {"imagenet": "S_L2_e300_7906"},
}


def _registry_rows():
    """(name, dataset, assets, strip) for every published checkpoint."""
    v2 = "classification/mobilevitv2/imagenet1k/256x256/mobilevitv2-{}.pt"
    for size in ("xxs", "xs", "s"):
        yield (f"mobilevit_{size}", "imagenet",
               (Asset("cvnets", f"classification/mobilevit_{size}.pt"),), _CLASSIFIER_PREFIXES)
        yield (f"deeplabv3_mobilevit_{size}", "voc",
               (Asset("cvnets", f"segmentation/deeplabv3_mobilevit_{size}.pt"),), _TASK_PREFIXES)
        yield (f"ssdlite_mobilevit_{size}", "coco",
               (Asset("cvnets", f"detection/ssd_mobilevit_{size}_320.pt"),), _TASK_PREFIXES)
    # v1-S retrained under cvnets v0.2 (output stride 8, the v0.2 head; 79.44 mIoU)
    yield ("deeplabv3_mobilevit_s", "voc-v0.2",
           (Asset("cvnets-v2", "segmentation/pascalvoc/deeplabv3-mobilevitv1.pt"),), _TASK_PREFIXES)
    for width, w in _V2_WIDTHS.items():
        yield (f"mobilevitv2_{width}", "imagenet", (Asset("cvnets-v2", v2.format(w)),),
               _CLASSIFIER_PREFIXES)
        datasets = ("pascalvoc", "ade20k") if width in ("050", "100", "125", "150") else (
            "ade20k",)
        for ds in datasets:
            yield (f"deeplabv3_mobilevitv2_{width}", "voc" if ds == "pascalvoc" else ds,
                   (Asset("cvnets-v2", f"segmentation/{ds}/mobilevitv2/deeplabv3-mobilevitv2-"
                                       f"{w}.pt"),), _TASK_PREFIXES)
        yield (f"ssdlite_mobilevitv2_{width}", "coco",
               (Asset("cvnets-v2", f"detection/mobilevitv2/coco-ssd-mobilevitv2-{w}.pt"),),
               _TASK_PREFIXES)
    tasks = {"imagenet": ("", "classification"), "voc": ("deeplabv3_", "segmentation"),
             "ade20k": ("deeplabv3_", "segmentation"), "coco": ("ssdlite_", "detection")}
    for backbone, folders in _V3_FOLDERS.items():
        # XXS/XS/S build on v1 (MobileViTv3-v1/ upstream), the widths on v2.
        family = "MobileViTv3-v1" if backbone.split("_")[1].isalpha() else "MobileViTv3-v2"
        for dataset, folder in folders.items():
            prefix, task = tasks[dataset]
            yield (prefix + backbone, dataset,
                   _v3_assets(f"mobilevitv3_{folder}", family, task),
                   _CLASSIFIER_PREFIXES if dataset == "imagenet" else _TASK_PREFIXES)


REGISTRY = {(n, d): Entry(n, d, assets, strip) for n, d, assets, strip in _registry_rows()}
# Backbones with seg/det heads (the classifier names; no L2 seg/det weights are published).
SEG_DET_BACKBONES = tuple(n for n, d in REGISTRY if d == "imagenet" and not n.endswith("_l2"))


def registry_entry(name, dataset):
    """The registry entry of `name` on `dataset`, or a ValueError listing what exists."""
    entry = REGISTRY.get((name, dataset))
    if entry is None:
        have = sorted(d for n, d in REGISTRY if n == name)
        raise ValueError(
            f"No published {dataset!r} weights are registered for {name!r}"
            + (f"; it has: {have}." if have else
               f". Registered models: {sorted({n for n, _ in REGISTRY})}.")
        )
    return entry


def is_weights_path(weights):
    """True for an existing file or folder path (a string or os.PathLike)."""
    return isinstance(weights, (str, os.PathLike)) and os.path.exists(weights)


def cache_dir():
    """Where downloads and converted weights are kept."""
    default = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.environ.get(CACHE_ENV, default)


def _weights_dir():
    return os.path.join(cache_dir(), "models", "keras_mobilevit")


def download_path(asset):
    """Where `asset` is cached: <cache>/models/keras_mobilevit/downloads/<base>/<path>."""
    return os.path.join(_weights_dir(), "downloads", asset.base, *asset.path.split("/"))


# ---------------------------------------------------------------- key mapping


def _conv(w):
    """OIHW -> HWIO; depthwise [C, 1, kh, kw] -> [kh, kw, C, 1]."""
    return w.transpose(2, 3, 1, 0)


def _depthwise(w):
    return w.transpose(2, 3, 0, 1)


def _dense(w):
    """[O, I] (Linear) or [O, I, 1, 1] (1x1 conv used as a linear layer) -> [I, O]."""
    return w.reshape(w.shape[0], w.shape[1]).T


def _dense_keys(prefix, state_dict):
    """v1 Linear keys ('.weight') or v2 1x1-conv keys ('.block.conv.weight')."""
    base = prefix if f"{prefix}.weight" in state_dict else f"{prefix}.block.conv"
    return [(f"{base}.weight", _dense), (f"{base}.bias", None)]


def _layer_keys(layer, state_dict):
    """[(torch key, transform)] in the order of `layer.weights`."""
    name = layer.name
    if isinstance(layer, L.ConvNormAct):
        keys = [(f"{name}.block.conv.weight", _depthwise if layer.depthwise else _conv)]
        if layer.use_norm:
            keys += [(f"{name}.block.norm.{k}", None)
                     for k in ("weight", "bias", "running_mean", "running_var")]
        return keys
    if isinstance(layer, keras.layers.Dense):
        return _dense_keys(name, state_dict)
    if isinstance(layer, L.LayerNorm):
        return [(f"{name}.weight", None), (f"{name}.bias", None)]
    if isinstance(layer, (L.MultiHeadSelfAttention, L.LinearSelfAttention)):
        return _dense_keys(f"{name}.qkv_proj", state_dict) + _dense_keys(
            f"{name}.out_proj", state_dict)
    if layer.weights:
        raise TypeError(f"No checkpoint mapping for layer {name!r} ({type(layer).__name__}).")
    return []


def assign_state_dict(model, state_dict, source="checkpoint", prefixes=_CLASSIFIER_PREFIXES):
    """Strictly copy an official state_dict (torch layout) into a built model.

    `prefixes` are stripped from the keys first (a model whose layers are named
    'encoder.*' passes ("module.",)). The classifier keys are skipped for models built
    without the top; everything else must match exactly, apart from BatchNorm's
    `num_batches_tracked` counters.
    """
    state_dict = strip_prefixes(state_dict, prefixes)
    plan, missing, mismatched, used = [], [], [], set()
    for layer in model.layers:
        keys = _layer_keys(layer, state_dict)
        used.update(key for key, _ in keys)
        if len(keys) != len(layer.weights):
            raise TypeError(f"Layer {layer.name!r} has {len(layer.weights)} weights, "
                            f"mapping gives {len(keys)}.")
        for (key, transform), variable in zip(keys, layer.weights):
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            value = transform(value) if transform is not None else value
            if tuple(value.shape) != tuple(variable.shape):
                mismatched.append(f"{key}: checkpoint {tuple(state_dict[key].shape)} -> "
                                  f"{tuple(value.shape)}, model expects {tuple(variable.shape)}")
                continue
            plan.append((variable, value))
    has_top = any(layer.name.startswith("classifier.") for layer in model.layers)
    unexpected = [k for k in state_dict if k not in used
                  and not k.endswith(_IGNORED_KEYS)
                  and not (not has_top and k.startswith("classifier."))]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match {model.name}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", mismatched)):
            if items:
                shown = "\n    ".join(items[:8]) + (
                    f"\n    ... and {len(items) - 8} more" if len(items) > 8 else "")
                lines.append(f"  {len(items)} {title} key(s):\n    {shown}")
        lines.append("Is it the checkpoint of another variant (or a classifier with another "
                     "number of classes)? Build the matching model, or use include_top=False "
                     "to load only the backbone.")
        raise CheckpointError("\n".join(lines))
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    return model


# ---------------------------------------------------------------- checkpoint files


def _pick_checkpoint(paths, folder):
    """The checkpoint inside a folder named `folder` (at any depth) among `paths`.

    Chosen by its folder, never by file name alone: a family archive holds one
    checkpoint_ema_best.pt per model.
    """
    inside = [p for p in paths if folder in p.replace("\\", "/").split("/")[:-1]]
    for name in _CHECKPOINT_NAMES:
        found = sorted(p for p in inside if p.replace("\\", "/").rsplit("/", 1)[-1] == name)
        if found:
            return found[0]
    return None


def _from_release_zip(path, folder, max_bytes):
    """The state_dict of `<folder>/checkpoint*.pt` inside a release zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = _pick_checkpoint(archive.namelist(), folder)
            if member is None:
                raise _NotInArchive(
                    f"{path} holds no folder {folder!r} with a checkpoint "
                    f"({', '.join(_CHECKPOINT_NAMES)}) at any depth.")
            info = archive.getinfo(member)
            if info.file_size > max_bytes:
                raise CheckpointError(f"{path}: '{member}' declares {info.file_size} bytes, more "
                                      f"than the {max_bytes} a checkpoint of this model needs.")
            with tempfile.TemporaryDirectory() as tmp:  # the zip's folder may be read-only
                extracted = os.path.join(tmp, "checkpoint.pt")
                with archive.open(info) as src, open(extracted, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                try:
                    return load_torch_state_dict(extracted, max_bytes=max_bytes)
                except CheckpointError as err:  # name the archive, not the temporary copy
                    raise CheckpointError(f"'{member}' in {path}: {err}") from err
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a readable zip archive ({err}).") from err


class _NotInArchive(CheckpointError):
    """A valid archive that does not hold the wanted folder (try the next asset)."""


def _from_local(path, entry, max_bytes=MAX_BYTES):
    """A state_dict from a local .pt, release .zip, or folder (a mirror of the release
    files, or an unpacked archive: the checkpoint is found by its folder name)."""
    folder = next((a.folder for a in entry.assets if a.folder), None)
    if os.path.isdir(path):
        walked = [os.path.join(root, f) for root, _, files in os.walk(path) for f in files]
        found = _pick_checkpoint(walked, folder) if folder else None
        names = {a.path.rsplit("/", 1)[-1] for a in entry.assets}
        found = found or next((p for p in sorted(walked) if os.path.basename(p) in names), None)
        if found is None:
            raise CheckpointError(
                f"{path} holds neither a folder {folder!r} with a checkpoint nor any of "
                f"{sorted(names)}." if folder else f"{path} holds none of {sorted(names)}.")
        path = found
    if zipfile.is_zipfile(path) and folder and not _is_torch_zip(path):
        return _from_release_zip(path, folder, max_bytes)
    return load_torch_state_dict(path, max_bytes=max_bytes)


def _is_torch_zip(path):
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/data.pkl") and n.count("/") == 1 for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False  # damaged: _from_release_zip says so with the path


# ---------------------------------------------------------------- downloads


class WeightsDownloadError(RuntimeError):
    """No candidate file could be downloaded; the message lists the URLs and what to do."""


def download_timeout():
    """Seconds a download waits for the server: $KERAS_MOBILEVIT_DOWNLOAD_TIMEOUT or
    DOWNLOAD_TIMEOUT."""
    return float(os.environ.get(TIMEOUT_ENV, DOWNLOAD_TIMEOUT))


def _origins(asset):
    """URLs to try for `asset`: the mirror's (upstream path, then bare file name) or
    upstream's."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return [asset.url]
    urls = [f"{mirror.rstrip('/')}/{asset.path}"]
    if "/" in asset.path:  # a flat mirror holding the bare file names
        urls.append(f"{mirror.rstrip('/')}/{asset.path.rsplit('/', 1)[-1]}")
    return urls


def _download(url, dest):
    """Fetches `url` to `dest` atomically; the timeout bounds each wait for the server."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "keras-mobilevit"})
    with urllib.request.urlopen(request, timeout=download_timeout()) as response:
        expected = response.headers.get("Content-Length")
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
            out.flush()
            if expected is not None and out.tell() != int(expected):
                raise OSError(f"connection closed after {out.tell()} of {expected} bytes")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_pin(path, url):
    """Pins the sha256 of a download the first time; later, a changed file is refused."""
    pin = path + ".sha256"
    digest = _sha256(path)
    if not os.path.exists(pin):
        write_text_atomic(pin, f"{digest}  {url}\n")
        return
    pinned = open(pin, encoding="utf-8").read().split()[:1]
    if pinned != [digest]:
        raise _PinMismatch(
            f"{path} has sha256 {digest}, but when first downloaded it had "
            f"{pinned[0] if pinned else '(unreadable pin)'} (recorded in {pin}): the file "
            f"changed since (upstream or on the way). If you trust the new file, delete "
            f"{pin} and load again.")


class _PinMismatch(CheckpointError):
    """A file differs from the sha256 recorded at its first download."""


def _move_aside(path, why):
    """Renames a damaged cache entry to <path>.broken-<time> so it is never read again."""
    aside = f"{path}.broken-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    warnings.warn(f"{path} was damaged ({str(why)[:300]}); moved it to {aside} and fetching "
                  "it again.", stacklevel=4)


def _load_asset(asset, entry, url):
    """Parses a downloaded file (so a broken download is never pinned), then pins it."""
    path = download_path(asset)
    state_dict = _from_local(path, entry)
    _check_pin(path, url)
    return state_dict


def _fetch_asset(asset, entry, tried):
    """The state_dict from one asset: its cache entry if sound, else a fresh download.
    Returns None when every origin answers HTTP 404 (try the next asset)."""
    path = download_path(asset)
    if os.path.exists(path):
        try:
            return _load_asset(asset, entry, asset.url)
        except _NotInArchive:
            raise
        except CheckpointError as err:
            _move_aside(path, err)
    for url in _origins(asset):
        try:
            _download(url, path)
        except urllib.error.HTTPError as err:
            tried.append(f"{url}: HTTP {err.code} {err.reason}")
            continue
        except (urllib.error.URLError, OSError) as err:  # timeout, refused, reset, DNS
            tried.append(f"{url}: {_network_reason(err)}")
            raise WeightsDownloadError(_failure_message(entry, tried)) from err
        tried.append(f"{url}: downloaded to {path}")
        try:
            return _load_asset(asset, entry, url)
        except _PinMismatch as err:
            rejected = f"{path}.rejected-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(path, rejected)
            raise _PinMismatch(f"{err} The new download is kept as {rejected}.") from None
    return None


def _network_reason(err):
    reason = getattr(err, "reason", err)
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"no answer within {download_timeout():g} s ({TIMEOUT_ENV} sets the timeout)"
    return f"{type(reason).__name__}: {reason}"


def _failure_message(entry, tried):
    first = entry.assets[0]
    folder = first.folder
    lines = [f"Could not download the {entry.dataset} weights of {entry.name}. Tried:"]
    lines += [f"  {t}" for t in tried]
    lines.append(f"Release page: {RELEASE_PAGES[first.base]}")
    lines.append(
        "Offline? Download the file elsewhere, then either\n"
        f"  - copy it to {download_path(first)}"
        + (f" (or any of {[a.path for a in entry.assets[1:]]} beside it)" if folder else "")
        + ", or\n"
        f"  - set {MIRROR_ENV} to a folder holding it"
        + (f" (an unpacked archive works: the checkpoint is found in its folder {folder!r} "
           "at any depth)" if folder else "")
        + " or to a mirror URL serving the upstream paths, or\n"
        "  - for a classifier, pass the .pt (or the release .zip / unpacked folder) as "
        "weights=...")
    return "\n".join(lines)


def pretrained_state_dict(name, dataset):
    """The published state_dict of model `name` trained on `dataset`, as numpy arrays.

    `dataset` is "imagenet", "voc", "ade20k", "coco" or "voc-v0.2" (the DeepLabV3 of
    mobilevit_s retrained under cvnets v0.2; see REGISTRY). Classifier keys
    lose the `module.` and `encoder.` prefixes; segmentation/detection keys keep theirs
    (`encoder.*`, `seg_head.*`, `aux_head.*`, `extra_layers.*`, `ssd_heads.*`) and lose
    only `module.`. The first call downloads (or reads $KERAS_MOBILEVIT_WEIGHTS_URL),
    converts without torch and caches `<name>-<dataset>.npz`; later calls are offline.

    Example:
        >>> sd = pretrained_state_dict("deeplabv3_mobilevit_xxs", "voc")
        >>> sd["seg_head.classifier.block.conv.weight"].shape
        (21, 256, 1, 1)
    """
    entry = registry_entry(name, dataset)
    cached = os.path.join(_weights_dir(), f"{name}-{dataset}.npz")
    state_dict = _read_npz(cached)
    if state_dict is not None:
        return state_dict
    state_dict = strip_prefixes(_fetch(entry), entry.strip)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with atomic_path(cached) as tmp:
        np.savez(tmp, **state_dict)
    return state_dict


def task_state_dict(weights, name, datasets, head_prefix, max_bytes=MAX_BYTES):
    """The state_dict of a segmentation / detection checkpoint, and where it came from.

    `weights` is one of the task's `datasets` ("voc", "ade20k", "coco":
    `pretrained_state_dict(name, weights)`) or the path of an official `.pt`, read with
    `max_bytes` (`max_checkpoint_bytes` of the model: a file asking for more is refused
    before anything is read). A checkpoint without `head_prefix` keys (say, an ImageNet
    classifier given as `weights=`) is refused with what to do instead.

    Example:
        >>> sd, source = task_state_dict("coco", "ssdlite_mobilevitv3_xs", ("coco",), "ssd_heads.")
    """
    if isinstance(weights, str) and weights in datasets:
        state_dict, source = pretrained_state_dict(name, weights), f"{weights} checkpoint of {name}"
    else:
        state_dict = load_torch_state_dict(weights, max_bytes=max_bytes)
        source = os.fspath(weights)
    state_dict = strip_prefixes(state_dict)
    if not any(key.startswith(head_prefix) for key in state_dict):
        raise ValueError(
            f"{source} has no '{head_prefix}*' keys: it is not a {name.split('_')[0]} checkpoint "
            f"(a classification checkpoint?). Pass a classification checkpoint as "
            f"backbone_weights=... instead of weights=....")
    return state_dict, source


def _fetch(entry):
    mirror = os.environ.get(MIRROR_ENV, "")
    local = mirror[len("file://"):] if mirror.startswith("file://") else mirror
    if local and os.path.isdir(local):
        return _from_local(local, entry)
    tried = []
    for asset in entry.assets:
        try:
            state_dict = _fetch_asset(asset, entry, tried)
        except _NotInArchive as err:
            tried.append(f"{asset.url}: {err}")
            continue
        if state_dict is not None:
            return state_dict
    raise WeightsDownloadError(_failure_message(entry, tried))


def _read_npz(path):
    """The converted cache, or None if absent; a damaged one is moved aside."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            state_dict = {k: data[k] for k in data.files}
        if state_dict:
            return state_dict
        problem = "it holds no arrays"
    except Exception as err:  # noqa: BLE001 - any unreadable cache is regenerated
        problem = f"{type(err).__name__}: {err}"
    _move_aside(path, problem)
    return None


def imagenet_state_dict(model_name):
    """The official ImageNet state_dict of a classifier (see pretrained_state_dict)."""
    return pretrained_state_dict(model_name, "imagenet")


def max_checkpoint_bytes(model, extra_params=0):
    """Most tensor bytes a checkpoint of `model` can need: float64 everywhere, plus a
    1000-class head a model built without its top does not count; `extra_params`: the
    parameters of parts not built yet (a head whose size depends on the checkpoint).

    Example:
        >>> sd = load_torch_state_dict(path, max_bytes=max_checkpoint_bytes(model))
    """
    return 8 * (model.count_params() + extra_params) + (32 << 20)


def load_weights(model, weights, model_name):
    """Load "imagenet", a Keras .weights.h5, an official .pt checkpoint, or a MobileViTv3
    release .zip / unpacked folder (the model's checkpoint is found by its folder name)
    into `model`."""
    if weights == "imagenet":
        return assign_state_dict(model, imagenet_state_dict(model_name),
                                 source=f"ImageNet checkpoint of {model_name}")
    path = os.fspath(weights)
    if path.endswith(".h5"):
        model.load_weights(path)
        return model
    entry = REGISTRY.get((model_name, "imagenet")) or Entry(model_name, "imagenet", (), ())
    return assign_state_dict(model, _from_local(path, entry, max_checkpoint_bytes(model)), source=path)
