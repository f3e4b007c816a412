"""The weights registry: every model and dataset published upstream has a well-formed
entry, and a segmentation/detection checkpoint downloads with its key prefixes kept."""

import collections
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_torch_reader import Storage, Tensor, f32, write_checkpoint
from test_weights import serve  # noqa: F401 - the fixture

from keras_mobilevit import weights as W
from keras_mobilevit.torch_reader import load_torch_state_dict

BACKBONES = ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s",
             *(f"mobilevitv2_{w}" for w in ("050", "075", "100", "125", "150", "175", "200")),
             "mobilevitv3_xxs", "mobilevitv3_xs", "mobilevitv3_s",
             "mobilevitv3_050", "mobilevitv3_075", "mobilevitv3_100"]
CLASSIFIERS = BACKBONES + ["mobilevitv3_xxs_l2", "mobilevitv3_xs_l2", "mobilevitv3_s_l2"]
# (backbone, dataset) published upstream (ml-cvnets model zoo; MobileViTv3 README).
SEGMENTATION = {
    "voc": ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050", "mobilevitv2_100",
            "mobilevitv2_125", "mobilevitv2_150", "mobilevitv3_xxs", "mobilevitv3_xs",
            "mobilevitv3_s", "mobilevitv3_050", "mobilevitv3_100"],
    "ade20k": [b for b in BACKBONES if b.startswith("mobilevitv2_")]
    + ["mobilevitv3_050", "mobilevitv3_075", "mobilevitv3_100"],
    "voc-v0.2": ["mobilevit_s"],  # retrained under cvnets v0.2 (model zoo: 79.44 mIoU)
}
URL = re.compile(r"https://(docs-assets\.developer\.apple\.com/ml-research/models/cvnets(-v2)?/"
                 r"|github\.com/micronDLA/MobileViTv3/releases/download/v1\.0\.0/)[\w./-]+\.(pt|zip)")


def test_registry_lists_exactly_the_published_checkpoints():
    expected = {(n, "imagenet") for n in CLASSIFIERS}
    expected |= {(f"deeplabv3_{b}", ds) for ds, names in SEGMENTATION.items() for b in names}
    expected |= {(f"ssdlite_{b}", "coco") for b in BACKBONES}
    assert set(W.REGISTRY) == expected
    assert sorted(W.SEG_DET_BACKBONES) == sorted(BACKBONES)
    # every backbone has a segmentation entry
    assert {b for b in BACKBONES if any((f"deeplabv3_{b}", d) in W.REGISTRY
                                         for d in SEGMENTATION)} == set(BACKBONES)


@pytest.mark.parametrize("key", sorted(W.REGISTRY))
def test_entries_are_well_formed(key):
    entry = W.REGISTRY[key]
    assert (entry.name, entry.dataset) == key
    assert re.fullmatch(r"((deeplabv3|ssdlite)_)?mobilevit(v2|v3)?_[a-z0-9]+(_l2)?", entry.name)
    assert entry.assets and len(set(entry.assets)) == len(entry.assets)
    for asset in entry.assets:
        assert URL.fullmatch(asset.url), asset.url
        assert (asset.folder is not None) == asset.url.endswith(".zip")
    is_v3 = entry.assets[0].base == "mobilevitv3"
    assert is_v3 == ("mobilevitv3" in entry.name)
    if is_v3:  # the per-model zip first, then archives; all for the same folder
        folder = entry.assets[0].folder
        assert entry.assets[0].path == f"{folder}.zip"
        assert {a.folder for a in entry.assets} == {folder}
        assert len(entry.assets) >= 3
    assert entry.strip == (("module.", "encoder.") if entry.dataset == "imagenet" else
                           ("module.",))


def test_v3_folders_match_the_release():
    folder = {k: e.assets[0].folder for k, e in W.REGISTRY.items() if e.assets[0].folder}
    assert len(set(folder.values())) == len(folder)  # one folder per checkpoint
    assert folder["mobilevitv3_xxs_l2", "imagenet"] == "mobilevitv3_XXS_L2_e300_7023"
    assert folder["mobilevitv3_xs_l2", "imagenet"] == "mobilevitv3_XS_L2_e300_7610"
    assert folder["mobilevitv3_s_l2", "imagenet"] == "mobilevitv3_S_L2_e300_7906"
    assert folder["deeplabv3_mobilevitv3_s", "voc"] == "mobilevitv3_S_voc_e50_7959"
    assert folder["deeplabv3_mobilevitv3_075", "ade20k"] == "mobilevitv3_ade20k_0_7_5"
    assert folder["ssdlite_mobilevitv3_xxs", "coco"] == "mobilevitv3_XXS_coco_e200_1930"
    assert folder["ssdlite_mobilevitv3_100", "coco"] == "mobilevitv3_coco_1_0_0"
    families = {a.path for e in W.REGISTRY.values() for a in e.assets}
    assert "MobileViTv3-v1.zip" in families and "MobileViTv3-v2.zip" in families
    for key, family in [(("deeplabv3_mobilevitv3_050", "voc"), "MobileViTv3-v2.zip"),
                        (("mobilevitv3_100", "imagenet"), "MobileViTv3-v2.zip"),
                        (("mobilevitv3_xxs_l2", "imagenet"), "MobileViTv3-v1.zip"),
                        (("ssdlite_mobilevitv3_s", "coco"), "MobileViTv3-v1.zip")]:
        assert family in [a.path for a in W.REGISTRY[key].assets], key


def test_unknown_name_or_dataset_says_what_exists():
    with pytest.raises(ValueError, match=r"'voc'.*mobilevitv2_075.*it has: \['ade20k'\]"):
        W.pretrained_state_dict("deeplabv3_mobilevitv2_075", "voc")
    with pytest.raises(ValueError, match="Registered models:.*ssdlite_mobilevit_xxs"):
        W.pretrained_state_dict("mobilevit_xxl", "imagenet")


def test_segmentation_download_keeps_published_prefixes(serve, fixtures_path):  # noqa: F811
    server, root = serve()
    fixture = fixtures_path / "segdet" / "deeplabv3_mobilevit_v2_050.pt"
    path = root / "segmentation/pascalvoc/mobilevitv2/deeplabv3-mobilevitv2-0.5.pt"
    path.parent.mkdir(parents=True)
    shutil.copy(fixture, path)
    got = W.pretrained_state_dict("deeplabv3_mobilevitv2_050", "voc")
    expected = load_torch_state_dict(fixture)
    assert list(got) == list(expected)  # encoder.*, seg_head.* as published
    assert any(k.startswith("seg_head.") for k in got) and any(
        k.startswith("seg_head.aux_head.") for k in got)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)
    assert server.served == ["/segmentation/pascalvoc/mobilevitv2/deeplabv3-mobilevitv2-0.5.pt"]
    server.stop()  # cached from now on
    assert list(W.pretrained_state_dict("deeplabv3_mobilevitv2_050", "voc")) == list(expected)


def test_v1_s_v02_download_keeps_published_prefixes(serve):  # noqa: F811
    """The v1-S DeepLabV3 retrained under cvnets v0.2 comes from the cvnets-v2 folder, its
    keys as published (the repo's v0.2-config fixture stands in for the file)."""
    server, root = serve()
    fixture = Path(__file__).parent / "fixtures" / "deeplabv3_mobilevit_v1_xxs_v02.pt"
    path = root / "segmentation/pascalvoc/deeplabv3-mobilevitv1.pt"
    path.parent.mkdir(parents=True)
    shutil.copy(fixture, path)
    assert W.REGISTRY["deeplabv3_mobilevit_s", "voc-v0.2"].assets[0].url == (
        "https://docs-assets.developer.apple.com/ml-research/models/cvnets-v2/"
        "segmentation/pascalvoc/deeplabv3-mobilevitv1.pt")
    got = W.pretrained_state_dict("deeplabv3_mobilevit_s", "voc-v0.2")
    assert list(got) == list(load_torch_state_dict(fixture))
    assert "seg_head.classifier.block.conv.weight" in got and any(
        k.startswith("seg_head.aux_head.") for k in got)
    assert server.served == ["/segmentation/pascalvoc/deeplabv3-mobilevitv1.pt"]


def test_v3_detection_archive_and_module_prefix(serve, fixtures_path, tmp_path):  # noqa: F811
    """A DataParallel checkpoint ('module.' prefix) in a family archive: only 'module.' goes."""
    server, root = serve()
    obj = collections.OrderedDict([
        ("module.encoder.conv_1.block.conv.weight", Tensor(Storage("0", 2), [2], [1])),
        ("module.ssd_heads.0.loc_cls_layer.block.conv.bias", Tensor(Storage("1", 1), [1], [1])),
    ])
    pt = write_checkpoint(tmp_path / "ckpt.pt", obj, {"0": f32(1, 2), "1": f32(3)})
    with zipfile.ZipFile(root / "MobileViTv3-v2.zip", "w") as archive:
        archive.write(pt, "MobileViTv3-v2/results_detection/mobilevitv3_coco_0_5_0/"
                          "checkpoint_ema_best.pt")
    got = W.pretrained_state_dict("ssdlite_mobilevitv3_050", "coco")
    assert list(got) == ["encoder.conv_1.block.conv.weight",
                         "ssd_heads.0.loc_cls_layer.block.conv.bias"]
    np.testing.assert_array_equal(got["encoder.conv_1.block.conv.weight"], [1, 2])
    assert server.served == ["/MobileViTv3-v2.zip"]
