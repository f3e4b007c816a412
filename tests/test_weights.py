"""Official weights: the download path (against a local HTTP server), the cache, strict
loading and the errors a user gets for bad input."""

import functools
import hashlib
import http.server
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import keras_mobilevit as kmv
from keras_mobilevit import weights as W
from keras_mobilevit.torch_reader import CheckpointError, load_torch_state_dict, strip_prefixes

TOL = 2e-4


class _Server:
    """A static file server on 127.0.0.1 that records (path, status) of each request."""

    def __init__(self, root):
        self.log = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                outer.log.append((self.path, int(getattr(code, "value", code))))

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def served(self):
        """Paths answered with 200."""
        return [path for path, code in self.log if code == 200]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """serve() -> (server, root): a 127.0.0.1 mirror of an empty folder; an empty cache."""
    servers = []
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))

    def start():
        root = tmp_path / "mirror"
        root.mkdir(exist_ok=True)
        servers.append(_Server(root))
        monkeypatch.setenv(W.MIRROR_ENV, servers[-1].url)
        return servers[-1], root

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def mirror(serve, fixtures_path):
    """Upstream file names served from 127.0.0.1; an empty cache."""
    server, root = serve()
    shutil.copy(fixtures_path / "mobilevit_v1_xxs.pt", root / "mobilevit_xxs.pt")
    # v3 weights as one zip per model holding <folder>/checkpoint_ema_best.pt.
    with zipfile.ZipFile(root / "mobilevitv3_XXS_e300_7098.zip", "w") as archive:
        archive.write(fixtures_path / "mobilevit_v3_xxs.pt",
                      "mobilevitv3_XXS_e300_7098/checkpoint_ema_best.pt")
    return server


@pytest.mark.parametrize("builder,fixture", [("MobileViTv1XXS", "mobilevit_v1_xxs"),
                                             ("MobileViTv3XXS", "mobilevit_v3_xxs")])
def test_imagenet_download_convert_cache_then_offline(mirror, fixtures_path, builder, fixture):
    golden = np.load(fixtures_path / f"{fixture}.npz")
    build = getattr(kmv, builder)
    model = build(weights="imagenet", include_preprocessing=False, classifier_activation=None)
    np.testing.assert_allclose(model.predict(golden["input_nhwc"], verbose=0), golden["logits"],
                               rtol=0, atol=TOL)
    assert len(mirror.served) == 1
    mirror.stop()  # from now on the network is gone: the converted cache must serve
    again = build(weights="imagenet", include_top=False, include_preprocessing=False)
    features = kmv.get_feature_extractor(again, ("s32",))(golden["input_nhwc"])
    np.testing.assert_allclose(np.asarray(features["s32"]), golden["features_s32"],
                               rtol=0, atol=TOL)
    assert len(mirror.served) == 1


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(W.MIRROR_ENV, "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="(?s)Offline\\?.*weights=") as err:
        kmv.MobileViTv2_050(weights="imagenet")
    assert "mobilevitv2-0.5.pt" in str(err.value)


def _in_thread(fn, limit):
    """Runs fn() in a daemon thread; fails (without hanging pytest) if it outlives `limit`."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still blocked after {limit} s"
    return result


def test_silent_server_times_out_with_a_clear_message(tmp_path, monkeypatch):
    # Accepts the connection and never answers, as a captive proxy does.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv(W.MIRROR_ENV, url)
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(W, "DOWNLOAD_TIMEOUT", 0.5)
    try:
        result = _in_thread(lambda: W.pretrained_state_dict("mobilevit_xs", "imagenet"), 30)
    finally:
        listener.close()
    err = result.get("error")
    assert isinstance(err, W.WeightsDownloadError), result
    message = str(err)
    assert f"{url}/classification/mobilevit_xs.pt: no answer within 0.5 s" in message
    assert W.TIMEOUT_ENV in message and "Offline?" in message and W.MIRROR_ENV in message
    assert W.download_path(W.REGISTRY["mobilevit_xs", "imagenet"].assets[0]) in message


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(W.TIMEOUT_ENV, "2.5")
    assert W.download_timeout() == 2.5


def test_imagenet_weights_need_1000_classes():
    with pytest.raises(ValueError, match="classes=10.*include_top=False"):
        kmv.MobileViTv3XS(weights="imagenet", classes=10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(weights="/no/such/file.pt"), "must be None, 'imagenet', or the path"),
    (dict(input_shape=(64, 64, 1)), "RGB images as \\(height, width, 3\\)"),
    (dict(input_shape=(3, 64, 64)), "channels last"),
    (dict(input_shape=(16, 64, 3)), "too small"),
    (dict(pooling="sum", include_top=False), "pooling"),
    (dict(output_stride=4), "output_stride"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmv.create_model("mobilevitv3_xxs", **kwargs)


def test_truncated_checkpoint(tmp_path, fixtures_path):
    data = (fixtures_path / "mobilevit_v3_xxs.pt").read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        kmv.MobileViTv3XXS(weights=str(bad))


def test_checkpoint_of_another_variant(fixtures_path):
    with pytest.raises(CheckpointError) as err:
        kmv.MobileViTv3XXS(weights=str(fixtures_path / "mobilevit_v3_xs.pt"))
    message = str(err.value)
    assert "another variant" in message and "wrong shape" in message
    assert "conv_1x1_exp.block.conv.weight" in message or "layer_1.0" in message


def test_strict_missing_unexpected_and_prefixes(fixtures_path):
    state = load_torch_state_dict(fixtures_path / "mobilevit_v2_050.pt")
    model = kmv.MobileViTv2_050(include_preprocessing=False, classifier_activation=None)

    missing = {k: v for k, v in state.items() if k != "layer_3.1.global_rep.2.weight"}
    with pytest.raises(CheckpointError, match="(?s)1 missing key.*layer_3.1.global_rep.2.weight"):
        W.assign_state_dict(model, missing)

    extra = dict(state, **{"layer_9.0.bogus.weight": np.zeros(3, "float32")})
    with pytest.raises(CheckpointError, match="(?s)1 unexpected key.*layer_9.0.bogus.weight"):
        W.assign_state_dict(model, extra)

    # Upstream files sometimes carry an "encoder." prefix: it is stripped.
    W.assign_state_dict(model, {f"encoder.{k}": v for k, v in state.items()})
    golden = np.load(fixtures_path / "mobilevit_v2_050.npz")
    np.testing.assert_allclose(model.predict(golden["input_nhwc"], verbose=0), golden["logits"],
                               rtol=0, atol=TOL)


def test_classifier_of_other_width_is_a_clear_error(fixtures_path):
    with pytest.raises(CheckpointError, match="classifier.fc.weight"):
        kmv.MobileViTv1XXS(weights=str(fixtures_path / "mobilevit_v1_xxs.pt"), classes=10)


def test_keras_weights_file_roundtrip(tmp_path, fixtures_path):
    model = kmv.MobileViTv3_050(weights=str(fixtures_path / "mobilevit_v3_050.pt"))
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    again = kmv.MobileViTv3_050(weights=str(path))
    x = np.random.RandomState(0).uniform(0, 255, (1, 256, 256, 3)).astype("float32")
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("build", [
    lambda path: kmv.create_model("mobilevit_xxs", weights=path, input_shape=(64, 64, 3)),
    lambda path: kmv.DeepLabV3("mobilevit_xxs", weights=path, input_shape=(64, 64, 3)),
    lambda path: kmv.SSDLite("mobilevit_xxs", weights=path)],
    ids=["classifier", "deeplabv3", "ssdlite"])
def test_checkpoint_larger_than_the_model_needs_is_refused_unread(tmp_path, build):
    """Issue 11 item 3: a .pt is read with the bytes the model can need
    (`max_checkpoint_bytes`), not the reader's 1 GiB default (segmentation / detection
    used the default). 64 MiB of zeros in a ~65 KB file (standing for 1 GiB) named by one
    storage: refused from the zip directory."""
    from test_torch_reader import Storage, Tensor, deflated_checkpoint

    obj = {"seg_head.w": Tensor(Storage("0", 16 << 20), [16 << 20], [1])}
    path = deflated_checkpoint(tmp_path / "bomb.pt", obj, {"0": bytes(64 << 20)})
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match=r"storage records hold 67108864 bytes, more than "
                                              r"the \d+ this load allows"):
        build(str(path))


# --- Damaged cache entries (issue 11 item 8) and sha256 pins (issue 14 item 5).


def _expected(fixtures_path, name, prefixes=("module.", "encoder.")):
    return strip_prefixes(load_torch_state_dict(fixtures_path / name), prefixes)


def _assert_same(got, expected):
    assert list(got) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)


def _npz(name, dataset="imagenet"):
    return Path(W.cache_dir()) / "models" / "keras_mobilevit" / f"{name}-{dataset}.npz"


def _asides(path):
    return sorted(path.parent.glob(path.name + ".broken-*"))


@pytest.mark.parametrize("damage", ["partial .pt", "partial v3 .zip", "garbage .npz",
                                    "partial .npz"])
def test_damaged_cache_entry_is_moved_aside_and_fetched_again(mirror, fixtures_path, damage):
    name = "mobilevitv3_xxs" if "zip" in damage else "mobilevit_xxs"
    fixture = "mobilevit_v3_xxs.pt" if "zip" in damage else "mobilevit_v1_xxs.pt"
    expected = _expected(fixtures_path, fixture)
    download = Path(W.download_path(W.REGISTRY[name, "imagenet"].assets[0]))
    npz = _npz(name)
    if damage.endswith(".npz"):
        W.pretrained_state_dict(name, "imagenet")
        data = npz.read_bytes()
        npz.write_bytes(b"\x93NUMPY garbage" if damage == "garbage .npz" else data[:len(data) // 2])
        broken = npz
    else:
        download.parent.mkdir(parents=True)
        data = (mirror_root(mirror) / download.name).read_bytes()
        download.write_bytes(data[: len(data) // 2])
        broken = download
    with pytest.warns(UserWarning, match=f"{broken.name} was damaged.*moved it to"):
        got = W.pretrained_state_dict(name, "imagenet")
    _assert_same(got, expected)
    assert len(_asides(broken)) == 1 and broken.exists()
    _assert_same(W.pretrained_state_dict(name, "imagenet"), expected)  # sound from now on


def mirror_root(server):
    return Path(server.httpd.RequestHandlerClass.keywords["directory"])


def test_first_download_is_pinned_and_a_changed_file_refused(mirror, fixtures_path):
    entry = W.REGISTRY["mobilevit_xxs", "imagenet"]
    download = Path(W.download_path(entry.assets[0]))
    W.pretrained_state_dict("mobilevit_xxs", "imagenet")
    pin = Path(str(download) + ".sha256")
    digest = hashlib.sha256(download.read_bytes()).hexdigest()
    assert pin.read_text().split() == [digest, f"{mirror.url}/mobilevit_xxs.pt"]
    npz = _npz("mobilevit_xxs")

    # Changed on disk, unchanged upstream: moved aside, fetched again, accepted by its pin.
    npz.unlink()
    shutil.copy(fixtures_path / "mobilevit_v2_050.pt", download)
    with pytest.warns(UserWarning, match="damaged"):
        W.pretrained_state_dict("mobilevit_xxs", "imagenet")
    assert hashlib.sha256(download.read_bytes()).hexdigest() == digest

    # Changed upstream: refused, saying which pin to delete.
    npz.unlink()
    download.unlink()
    shutil.copy(fixtures_path / "mobilevit_v2_050.pt", mirror_root(mirror) / "mobilevit_xxs.pt")
    with pytest.raises(CheckpointError, match=f"(?s)when first downloaded it had {digest}.*"
                                              f"delete {re.escape(str(pin))}"):
        W.pretrained_state_dict("mobilevit_xxs", "imagenet")
    assert not npz.exists()
    pin.unlink()  # the user trusts the new file
    _assert_same(W.pretrained_state_dict("mobilevit_xxs", "imagenet"),
                 _expected(fixtures_path, "mobilevit_v2_050.pt"))


# --- MobileViTv3 release layouts (issue 14 item 5).


def _family_archive(path, fixtures_path, layout):
    """A release archive holding XS and XXS checkpoints; the XS one comes first."""
    prefix = {"per-family": "MobileViTv3-v1/results_classification/",
              "per-task": "results_classification/", "nested": "a/b/c/"}[layout]
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(fixtures_path / "mobilevit_v3_xs.pt",
                      f"{prefix}mobilevitv3_XS_e300_7671/checkpoint_ema_best.pt")
        archive.write(fixtures_path / "mobilevit_v3_xs.pt",
                      f"{prefix}mobilevitv3_XXS_e300_7098/checkpoint_last.pt")
        archive.write(fixtures_path / "mobilevit_v3_xxs.pt",
                      f"{prefix}mobilevitv3_XXS_e300_7098/checkpoint_ema_best.pt")


@pytest.mark.parametrize("asset, layout", [("MobileViTv3-v1.zip", "per-family"),
                                           ("results_classification.zip", "per-task"),
                                           ("MobileViTv3-v1_results_classification.zip",
                                            "nested")])
def test_v3_archive_layouts_choose_the_member_by_folder(serve, fixtures_path, asset, layout):
    server, root = serve()
    _family_archive(root / asset, fixtures_path, layout)
    got = W.pretrained_state_dict("mobilevitv3_xxs", "imagenet")
    _assert_same(got, _expected(fixtures_path, "mobilevit_v3_xxs.pt"))
    assert server.served == [f"/{asset}"]
    assert ("/mobilevitv3_XXS_e300_7098.zip", 404) in server.log  # tried first


def test_archive_without_the_folder_says_what_was_tried(serve, fixtures_path):
    server, root = serve()
    with zipfile.ZipFile(root / "MobileViTv3-v1.zip", "w") as archive:
        archive.write(fixtures_path / "mobilevit_v3_xs.pt",
                      "MobileViTv3-v1/results_classification/mobilevitv3_XS_e300_7671/"
                      "checkpoint_ema_best.pt")
    with pytest.raises(W.WeightsDownloadError) as err:
        W.pretrained_state_dict("mobilevitv3_xxs", "imagenet")
    message = str(err.value)
    for asset in W.REGISTRY["mobilevitv3_xxs", "imagenet"].assets:
        assert f"{server.url}/{asset.path}" in message
    assert "holds no folder 'mobilevitv3_XXS_e300_7098'" in message
    assert "https://github.com/micronDLA/MobileViTv3/releases" in message
    assert "weights=" in message and W.MIRROR_ENV in message and "unpacked archive" in message


def test_local_folder_and_manual_files(tmp_path, fixtures_path, monkeypatch):
    """Offline: an unpacked release archive as the mirror folder, or passed as weights=."""
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))
    _family_archive(tmp_path / "release.zip", fixtures_path, "per-family")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(tmp_path / "release.zip") as archive:
        archive.extractall(unpacked)
    monkeypatch.setenv(W.MIRROR_ENV, str(unpacked))
    expected = _expected(fixtures_path, "mobilevit_v3_xxs.pt")
    _assert_same(W.pretrained_state_dict("mobilevitv3_xxs", "imagenet"), expected)

    golden = np.load(fixtures_path / "mobilevit_v3_xxs.npz")
    for weights in (tmp_path / "release.zip", unpacked):
        model = kmv.MobileViTv3XXS(weights=str(weights), include_preprocessing=False,
                                   classifier_activation=None)
        np.testing.assert_allclose(model.predict(golden["input_nhwc"], verbose=0),
                                   golden["logits"], rtol=0, atol=TOL)
