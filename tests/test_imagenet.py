import json

import numpy as np
import pytest

from keras_mobilevit.imagenet import decode_predictions, imagenet_class_names

KNOWN = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    2: ("n01484850", "great_white_shark"),
    3: ("n01491361", "tiger_shark"),
    281: ("n02123045", "tabby"),
    282: ("n02123159", "tiger_cat"),
    285: ("n02124075", "Egyptian_cat"),
    999: ("n15075141", "toilet_tissue"),
}


def test_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert all(isinstance(n, str) and n and " " not in n for n in names)
    for i, (_, name) in KNOWN.items():
        assert names[i] == name


def test_index_file_is_keras_format_in_sorted_synset_order():
    from importlib.resources import files

    index = json.loads(
        (files("keras_mobilevit") / "data" / "imagenet_class_index.json").read_text()
    )
    assert sorted(index, key=int) == [str(i) for i in range(1000)]
    synsets = [index[str(i)][0] for i in range(1000)]
    assert synsets == sorted(synsets) and len(set(synsets)) == 1000
    for i, entry in KNOWN.items():
        assert tuple(index[str(i)]) == entry


def test_decode_predictions_one_hot():
    preds = np.zeros((3, 1000), np.float32)
    for row, cls in enumerate([281, 0, 285]):
        preds[row, cls] = 0.9
        preds[row, (cls + 1) % 1000] = 0.1
    decoded = decode_predictions(preds, top=2)
    assert len(decoded) == 3 and all(len(d) == 2 for d in decoded)
    assert decoded[0][0] == ("n02123045", "tabby", pytest.approx(0.9))
    assert decoded[0][1][:2] == KNOWN[282]
    assert decoded[1][0][:2] == KNOWN[0]
    assert decoded[2][0][:2] == KNOWN[285]


def test_decode_predictions_accepts_tensors():
    tf = pytest.importorskip("tensorflow")
    preds = tf.one_hot([2], 1000)
    assert decode_predictions(preds, top=1) == [[("n01484850", "great_white_shark", 1.0)]]


@pytest.mark.parametrize("shape", [(1000,), (2, 10), (1, 1000, 1)])
def test_decode_predictions_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"shape \(samples, 1000\); got .*" + str(shape)[1:-1]):
        decode_predictions(np.zeros(shape))
