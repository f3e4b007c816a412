"""ImageNet-1k class names, shipped with the package (no download at run time).

The index file has the format Keras uses for
``keras.applications.imagenet_utils.decode_predictions``:
``{"0": ["n01440764", "tench"], ...}``, class ``i`` being the ``i``-th WordNet
synset in sorted order (see ``data/README.md`` for its source and licence).
"""

import functools
import importlib.resources
import json

import numpy as np

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _class_index():
    resource = importlib.resources.files("keras_mobilevit") / "data" / "imagenet_class_index.json"
    text = resource.read_text(encoding="utf-8")
    index = json.loads(text)
    return tuple(tuple(index[str(i)]) for i in range(NUM_CLASSES))


def imagenet_class_names():
    """Returns the 1000 ImageNet-1k class names, in class-id order.

    Example:
        >>> imagenet_class_names()[:3]
        ['tench', 'goldfish', 'great_white_shark']
    """
    return [name for _, name in _class_index()]


def decode_predictions(preds, top=5):
    """Decodes ImageNet predictions, like ``keras.applications`` does, offline.

    Args:
        preds: array or tensor of shape ``(samples, 1000)`` (logits or
            probabilities; the ranking is the same).
        top: how many of the best classes to return per sample.

    Returns:
        One list per sample of ``(class_id, class_name, score)`` tuples,
        best first.

    Example:
        >>> p = np.zeros((1, 1000)); p[0, 281] = 1.0
        >>> decode_predictions(p, top=1)
        [[('n02123045', 'tabby', 1.0)]]
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            "decode_predictions expects a batch of predictions with shape "
            f"(samples, {NUM_CLASSES}); got an array of shape {preds.shape}. "
            "Add a batch axis for a single image (preds[None])."
        )
    index = _class_index()
    results = []
    for pred in preds:
        # Stable sort of the negated scores: ties keep the lower class id first.
        best = np.argsort(-pred, kind="stable")[:top]
        results.append([index[i] + (float(pred[i]),) for i in best])
    return results
