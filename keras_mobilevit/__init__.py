"""MobileViT v1, v2 and v3 for Keras 3, with the official ImageNet weights, and DeepLabV3
segmentation on every MobileViT backbone.

Example:
    >>> import keras_mobilevit
    >>> model = keras_mobilevit.MobileViTv3XS(weights="imagenet")
    >>> probs = model.predict(images)             # RGB in [0, 255], NHWC
    >>> keras_mobilevit.decode_predictions(probs, top=5)
"""

from keras_mobilevit.architectures import get_family, list_models
from keras_mobilevit.detection import SSDLite, model_anchors
from keras_mobilevit.imagenet import decode_predictions
from keras_mobilevit.models import (
    MobileViT,
    MobileViTv1S,
    MobileViTv1XS,
    MobileViTv1XXS,
    MobileViTv2_050,
    MobileViTv2_075,
    MobileViTv2_100,
    MobileViTv2_125,
    MobileViTv2_150,
    MobileViTv2_175,
    MobileViTv2_200,
    MobileViTv3_050,
    MobileViTv3_075,
    MobileViTv3_100,
    MobileViTv3S,
    MobileViTv3S_L2,
    MobileViTv3XS,
    MobileViTv3XS_L2,
    MobileViTv3XXS,
    MobileViTv3XXS_L2,
    create_backbone,
    create_model,
    get_feature_extractor,
    preprocess_input,
)
from keras_mobilevit.segmentation import DeepLabV3
from keras_mobilevit.torch_reader import CheckpointError
from keras_mobilevit.weights import load_weights

__version__ = "0.1.0"
