"""Official weights: where they live, how they are fetched, and how they map onto layers.

Keras layer names are the official state_dict prefixes, so the mapping is one rule per
layer class (`_layer_keys`). Loading is strict: a missing, unexpected or mis-shaped key
is an error that names it.

Example:
    >>> model = keras_mobilevit.MobileViTv1XXS(weights=None)
    >>> load_weights(model, "mobilevit_xxs.pt")           # an upstream checkpoint
"""

import os
import tempfile
import zipfile

import keras
import numpy as np

from keras_mobilevit import layers as L
from keras_mobilevit.torch_reader import CheckpointError, load_torch_state_dict, strip_prefixes

_V1 = "https://docs-assets.developer.apple.com/ml-research/models/cvnets/classification/"
_V2 = ("https://docs-assets.developer.apple.com/ml-research/models/cvnets-v2/classification/"
       "mobilevitv2/imagenet1k/256x256/")
_V3 = "https://github.com/micronDLA/MobileViTv3/releases/download/v1.0.0/"

# name -> (url, member inside a .zip release asset or None, sha256 or None).
# Upstream publishes no hashes; where none is known the download is not verified
# (the strict key/shape check on loading still catches a wrong or damaged file).
IMAGENET_WEIGHTS = {
    "mobilevit_xxs": (_V1 + "mobilevit_xxs.pt", None, None),
    "mobilevit_xs": (_V1 + "mobilevit_xs.pt", None, None),
    "mobilevit_s": (_V1 + "mobilevit_s.pt", None, None),
    "mobilevitv2_050": (_V2 + "mobilevitv2-0.5.pt", None, None),
    "mobilevitv2_075": (_V2 + "mobilevitv2-0.75.pt", None, None),
    "mobilevitv2_100": (_V2 + "mobilevitv2-1.0.pt", None, None),
    "mobilevitv2_125": (_V2 + "mobilevitv2-1.25.pt", None, None),
    "mobilevitv2_150": (_V2 + "mobilevitv2-1.5.pt", None, None),
    "mobilevitv2_175": (_V2 + "mobilevitv2-1.75.pt", None, None),
    "mobilevitv2_200": (_V2 + "mobilevitv2-2.0.pt", None, None),
    "mobilevitv3_xxs": (_V3 + "mobilevitv3_XXS_e300_7098.zip",
                        "mobilevitv3_XXS_e300_7098/checkpoint_ema_best.pt", None),
    "mobilevitv3_xs": (_V3 + "mobilevitv3_XS_e300_7671.zip",
                       "mobilevitv3_XS_e300_7671/checkpoint_ema_best.pt", None),
    "mobilevitv3_s": (_V3 + "mobilevitv3_S_e300_7930.zip",
                      "mobilevitv3_S_e300_7930/checkpoint_ema_best.pt", None),
    "mobilevitv3_050": (_V3 + "mobilevitv3_0_5_0.zip",
                        "mobilevitv3_0_5_0/checkpoint_ema_best.pt", None),
    "mobilevitv3_075": (_V3 + "mobilevitv3_0_7_5.zip",
                        "mobilevitv3_0_7_5/checkpoint_ema_best.pt", None),
    "mobilevitv3_100": (_V3 + "mobilevitv3_1_0_0.zip",
                        "mobilevitv3_1_0_0/checkpoint_ema_best.pt", None),
}

MIRROR_ENV = "KERAS_MOBILEVIT_WEIGHTS_URL"  # base URL of a mirror holding the same files
CACHE_ENV = "KERAS_MOBILEVIT_CACHE"  # default: $KERAS_HOME or ~/.keras
_IGNORED_KEYS = ("num_batches_tracked",)  # BN step counters: unused at inference


def is_weights_path(weights):
    """True for an existing file path (a string or os.PathLike)."""
    return isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)


def cache_dir():
    """Where downloads and converted weights are kept."""
    default = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.environ.get(CACHE_ENV, default)


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


def assign_state_dict(model, state_dict, source="checkpoint"):
    """Strictly copy an official state_dict (torch layout) into a built model.

    The classifier keys are skipped for models built without the top; everything else
    must match exactly, apart from BatchNorm's `num_batches_tracked` counters.
    """
    state_dict = strip_prefixes(state_dict)
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


# ---------------------------------------------------------------- downloads


def _download_imagenet(model_name):
    """Download (once) the official checkpoint; return the local .pt path."""
    if model_name not in IMAGENET_WEIGHTS:
        raise ValueError(f"No ImageNet weights are registered for {model_name!r}.")
    url, member, sha256 = IMAGENET_WEIGHTS[model_name]
    fname = url.rsplit("/", 1)[1]
    mirror = os.environ.get(MIRROR_ENV)
    origin = f"{mirror.rstrip('/')}/{fname}" if mirror else url
    subdir = os.path.join("models", "keras_mobilevit")
    # get_file silently falls back to /tmp/.keras when the cache folder does not exist yet.
    os.makedirs(cache_dir(), exist_ok=True)
    try:
        path = keras.utils.get_file(fname=f"{model_name}-{fname}", origin=origin,
                                    file_hash=sha256, cache_subdir=subdir,
                                    cache_dir=cache_dir())
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise RuntimeError(
            f"Could not download the ImageNet weights of {model_name} from {origin}: {err}\n"
            f"Offline? Download that file elsewhere and pass its path as weights=..., or "
            f"set {MIRROR_ENV} to a mirror that serves it."
        ) from err
    if member is None:
        return path
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(member.split("/", 1)[1])]
        if not names:
            raise CheckpointError(f"{path} has no {member}; delete it and retry.")
        target = os.path.join(os.path.dirname(path), f"{model_name}.pt")
        with archive.open(names[0]) as src:
            _atomic_write(target, src.read())
    return target


def _atomic_write(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def imagenet_state_dict(model_name):
    """The official state_dict of a variant, converted once to a cached .npz.

    The first call downloads the PyTorch checkpoint (through keras.utils.get_file, or
    from the mirror in $KERAS_MOBILEVIT_WEIGHTS_URL) and parses it without torch; later
    calls read the .npz and never touch the network.
    """
    cached = os.path.join(cache_dir(), "models", "keras_mobilevit", f"{model_name}-imagenet.npz")
    if os.path.exists(cached):
        with np.load(cached, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    state_dict = strip_prefixes(load_torch_state_dict(_download_imagenet(model_name)))
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached), suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **state_dict)
        os.replace(tmp, cached)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return state_dict


def load_weights(model, weights, model_name):
    """Load "imagenet", a Keras .weights.h5 or an official .pt checkpoint into `model`."""
    if weights == "imagenet":
        return assign_state_dict(model, imagenet_state_dict(model_name),
                                 source=f"ImageNet checkpoint of {model_name}")
    path = os.fspath(weights)
    if path.endswith(".h5"):
        model.load_weights(path)
        return model
    return assign_state_dict(model, load_torch_state_dict(path), source=path)
