"""What train.py builds for segmentation and detection from a TrainConfig: models,
recipes, the task options, pipeline settings and the final evaluation.

`build_segmenter` / `build_detector` are the tasks' model factories (`tasks.Task`):
`keras_mobilevit.DeepLabV3` / `SSDLite` for `config.model` as the backbone, new or from
an official checkpoint (`--weights voc|coco|PATH.pt`), its backbone from the ImageNet
classifier or a classification checkpoint (`--backbone-weights imagenet|PATH.pt`) or
from a classifier trained here (`--backbone-weights run/model.keras`), or everything
from a segmentation/detection model trained here (`--from run/model.keras`). Weights
from a `.keras` file go over by layer name where the shapes agree (a new head when the
classes differ).

What trains is not always what is saved: DeepLabV3 trains with its auxiliary head's
logits as a second output (v0.2 families) and is saved without them; SSDLite trains on
its raw outputs joined as [B, A, 4 + C] and is saved with its post-processing
(`export_model`).

Example:
    >>> model = build_segmenter(config)          # a resolved TrainConfig, task segmentation
    >>> keras_model = export_model(model)         # what model.keras holds
"""

import dataclasses
import weakref

import keras

from keras_mobilevit import box_coder
from keras_mobilevit import segmentation as seg_lib
from keras_mobilevit.detection import SSDLite
from keras_mobilevit.segmentation import DeepLabV3
from training import models as classification_models
from training import recipes
from training.options import option, positive
from training.segdet import detection, segmentation, sources


BUNDLED_MATCH_IOU = 0.4  # anchor matching on the bundled scenes (official: 0.5)


@dataclasses.dataclass(frozen=True)
class SegDetOptions:
    """Settings of the segmentation and detection tasks (flags of train.py)."""

    GROUP = "segmentation / detection (--task segmentation|detection)"

    backbone_weights: str | None = option(
        None, "start the backbone from 'imagenet', an official classification .pt, or a "
        "classifier trained here (run/model.keras; layers matched by name)")
    output_stride: int = option(None, "DeepLabV3 output stride (default: the official "
                                "config's of --weights, else 16)", choices=(8, 16, 32))
    head_lr_multiplier: float | None = option(
        None, "DeepLabV3 head learning rate / backbone's (default: 10 as cvnets; 1 on the "
        "bundled scenes, where the backbone starts from scratch too)", check=positive)
    aux_loss_weight: float = option(0.4, "DeepLabV3 auxiliary-head loss weight (v0.2 "
                                    "families: v2, v3 0.5/0.75/1.0)")
    scale_min: float | None = option(
        None, "segmentation random resize: smallest factor of the crop size (default: 0.5 "
        "as cvnets; 0.75 on the bundled scenes, whose objects already vary in size)",
        check=positive)
    scale_max: float | None = option(
        None, "segmentation random resize: largest factor (default: 2.0 as cvnets; 1.5 on "
        "the bundled scenes)", check=positive)
    match_iou: float | None = option(
        None, "detection: anchors matched at this IoU (default: 0.5, as cvnets; "
        f"{BUNDLED_MATCH_IOU} on the bundled scenes: more positives on their coarse anchor "
        "grid)", check=positive)
    photometric: bool = option(True, "photometric distortion (brightness, contrast, "
                               "saturation, hue)")
    ssd_crop: bool | None = option(
        None, "detection: SSD random crop (default: on, as cvnets; off on the bundled "
        "scenes, whose ten-minute run learns faster without it)")


OFFICIAL_HEAD_LR_MULTIPLIER = 10.0  # cvnets DeepLabV3 configs: the head at 10x the lr
OFFICIAL_SCALES = (0.5, 2.0)       # cvnets VOC: random short-side resize, x crop size
# The bundled scenes draw each garment at 0.25-0.5 of the canvas already; 0.5-2.0 on
# top of that made 12-px garments (or 96-px ones cut by the crop) out of 28-px images.
BUNDLED_SCALES = (0.75, 1.5)

# Official recipes (cvnets configs): DeepLabV3 on PASCAL VOC, SSDLite on COCO. AdamW,
# cosine from 9e-4 to 1e-6 after 500 warm-up steps from 9e-5, weight decay 0.01, no
# label smoothing, EMA, mixing or erasing. Batch 128 = 4 GPUs x 32.
_DENSE = dict(lr=9e-4, min_lr=1e-6, warmup_init_lr=9e-5, warmup_steps=500,
              weight_decay=0.01, decay_norm_and_bias=True, clipnorm=None,
              label_smoothing=0.0, ema_momentum=0.0, interpolation="bilinear",
              antialias=False, multi_scale=False, randaugment=False, random_erasing=0.0,
              mixup_alpha=0.0, cutmix_alpha=0.0, crop_scale_min=1.0, eval_crop_fraction=1.0,
              batch_size=128)
SEGMENTATION_RECIPE = recipes.Recipe(name="deeplabv3", image_size=512, epochs=50, **_DENSE)
DETECTION_RECIPE = recipes.Recipe(name="ssdlite", image_size=320, epochs=200, **_DENSE)

# The bundled Fashion-MNIST scenes (96x96 canvases, 4,000 train scenes), meant for
# about ten minutes on two free CPU cores. Segmentation: 3 epochs of 250 steps, random
# resize 0.75-1.5 (`SegDetOptions`; 18.9% mIoU in 16.1 min at load 2-6, training/README.md).
# Detection: SSDLite needs at least 129 px (its anchor grid), so it trains on the
# canvases resized to 160; 2 epochs of 1,000 steps of batch 4 at lr 3e-3, with no SSD
# crop and anchors matched at IoU 0.4 (`SegDetOptions`). In 6,400-image trials batch 4
# beat 8 and 16 (more updates in the same time), IoU 0.4 beat 0.5, lr 4e-3 beat 2.5e-3
# and 6e-3; 3 epochs at 4e-3 did worse (training/README.md). Explicit flags still win.
_QUICK = dict(batch_size=16, lr=2e-3, min_lr=2e-5, warmup_init_lr=2e-4, warmup_steps=100)
SEGMENTATION_QUICK = dict(image_size=96, epochs=3, **_QUICK)
DETECTION_QUICK = dict(image_size=160, epochs=2, batch_size=4, lr=3e-3, min_lr=2e-5,
                       warmup_init_lr=2e-4, warmup_steps=100)


def segmentation_recipe(model_name, recipe="auto"):
    """The DeepLabV3 recipe (the same for every backbone, as in cvnets' configs)."""
    return _dense_recipe(SEGMENTATION_RECIPE, recipe)


def detection_recipe(model_name, recipe="auto"):
    """The SSDLite recipe (the same for every backbone)."""
    return _dense_recipe(DETECTION_RECIPE, recipe)


def _dense_recipe(official, recipe):
    if recipe not in ("auto", official.name):
        raise ValueError(f"--recipe {recipe} is a classification recipe; the "
                         f"{official.name} task has one recipe ('auto').")
    return official


def has_aux_head(config):
    """True where the DeepLabV3 to train has an auxiliary head: the official head of
    its named `--weights` (the v1-S "voc-v0.2": cvnets v0.2), else of its backbone."""
    named = config.weights if config.weights in seg_lib.NAMED_WEIGHTS else None
    return seg_lib.seg_head(config.model, named).aux_head


def build_segmenter(config, transform=None):
    """DeepLabV3 to train: logits, plus {"logits", "aux_logits"} with an aux head;
    `transform(model)` last (the QAT plugin's twin)."""
    size, options = config.recipe.image_size, config.segdet
    model = DeepLabV3(config.model, weights=_official(config.weights),
                      classes=config.num_classes, output_stride=options.output_stride,
                      input_shape=(size, size, 3),
                      backbone_weights=_official(options.backbone_weights),
                      aux_output=has_aux_head(config))
    model = _transfer_weights(model, config)
    return transform(model) if transform else model


def build_detector(config, transform=None):
    """SSDLite to train: its raw outputs as one [B, A, 4 + C] tensor (training_model);
    the full detector, with post-processing, is kept for `export_model`.
    `transform(detector)` comes before both (the QAT plugin's twin)."""
    size, options = config.recipe.image_size, config.segdet
    detector = SSDLite(config.model, weights=_official(config.weights),
                       classes=config.num_classes, input_shape=(size, size, 3),
                       backbone_weights=_official(options.backbone_weights))
    detector = _transfer_weights(detector, config)
    if transform:
        detector = transform(detector)
    trainer = detection.training_model(detector)
    _EXPORTS[trainer] = detector
    return trainer


# training model -> the model to save, where they differ beyond a plain output subset
_EXPORTS = weakref.WeakKeyDictionary()


def export_model(model):
    """What model.keras holds: the full detector, or the segmenter's main logits."""
    if model in _EXPORTS:
        return _EXPORTS[model]
    output = model.output
    if isinstance(output, dict):
        output = output["logits"]
    return keras.Model(model.inputs, output, name=model.name)


def _official(weights):
    """`weights` for the keras_mobilevit constructors; a `.keras` file is applied later."""
    return None if weights is None or str(weights).endswith(".keras") else weights


def _transfer_weights(model, config):
    """Copies weights from `--from` (all layers) or a `.keras` `--backbone-weights`
    (the classifier's backbone) into `model`, by layer name where the shapes match."""
    for path, what in ((config.segdet.backbone_weights, "backbone"),
                       (config.from_model, "model")):
        if path is None or not str(path).endswith(".keras"):
            continue
        copied = copy_matching_weights(classification_models.load_model(path), model)
        if not copied:
            raise ValueError(f"{path} shares no layer (name and weight shapes) with "
                             f"{model.name}: it is not a {config.model} {what}.")
        print(f"Loaded {len(copied)} layers from {path}")
    return model


def copy_matching_weights(source, target):
    """Sets every layer of `target` that `source` has by name with equal weight shapes;
    returns their names."""
    by_name = {layer.name: layer for layer in _weighted_layers(source)}
    copied = []
    for layer in _weighted_layers(target):
        other = by_name.get(layer.name)
        if other is None:
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(weights)
            copied.append(layer.name)
    return copied


def _weighted_layers(model):
    """Layers with weights, nested models flattened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def segmentation_settings(config):
    """The segmentation pipelines' settings of a resolved TrainConfig."""
    recipe, options = config.recipe, config.segdet
    default_min, default_max = BUNDLED_SCALES if _bundled(config) else OFFICIAL_SCALES
    return segmentation.SegmentationSettings(
        image_size=recipe.image_size, batch_size=recipe.batch_size,
        scale_min=_default(options.scale_min, default_min),
        scale_max=_default(options.scale_max, default_max),
        photometric=options.photometric, cache=config.cache,
        aux_output=has_aux_head(config))


def detection_settings(config):
    """The detection pipelines' settings of a resolved TrainConfig."""
    recipe, options = config.recipe, config.segdet
    return detection.DetectionSettings(
        image_size=recipe.image_size, batch_size=recipe.batch_size, model=config.model,
        iou_threshold=_default(options.match_iou, BUNDLED_MATCH_IOU if _bundled(config)
                               else box_coder.MATCH_IOU_THRESHOLD),
        photometric=options.photometric,
        ssd_crop=_default(options.ssd_crop, not _bundled(config)),
        cache=config.cache)


def segmentation_loss(config):
    """Cross-entropy (ignore 255); with an aux head a dict, the aux loss weighted."""
    if not has_aux_head(config):
        return segmentation.SegmentationLoss()
    return {"logits": segmentation.SegmentationLoss(),
            "aux_logits": segmentation.SegmentationLoss(weight=config.segdet.aux_loss_weight)}


def segmentation_metrics(config):
    """Mean IoU of the main logits."""
    metric = [segmentation.mean_iou(config.num_classes)]
    return {"logits": metric} if has_aux_head(config) else metric


def segmentation_lr_multipliers(config):
    """{"seg_head": factor}: DeepLabV3's head learns `head_lr_multiplier` times faster."""
    factor = config.segdet.head_lr_multiplier
    if factor is None:
        factor = 1.0 if _bundled(config) else OFFICIAL_HEAD_LR_MULTIPLIER
    return {"seg_head": factor} if factor != 1.0 else {}


def _default(value, default):
    """`value`, or `default` where the flag was not given (None)."""
    return default if value is None else value


def _bundled(config):
    """True when `config` trains on the bundled Fashion-MNIST scenes (no data flags)."""
    return config.dataset == sources.DEFAULT_DATASET and not config.image_folder
