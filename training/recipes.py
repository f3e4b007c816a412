"""The official ImageNet training recipes, as data, and the Keras objects they build.

Two recipes cover the three families (MOBILEVIT.md, "Training recipes"):

* "v1" (MobileViT v1, v3 XXS/XS/S): AdamW, weight decay 0.01 on every weight, cosine
  2e-3 -> 2e-4 after 3k warm-up steps from 2e-4, label smoothing 0.1, EMA 0.0005,
  multi-scale variable-batch sampler, bilinear RandomResizedCrop + flip only.
* "v2" (MobileViT v2, v3 0.5/0.75/1.0): AdamW with LR and weight decay by width, BN and
  biases not decayed, 20k warm-up steps from 1e-6, cosine to LR/10, gradient clipping
  at 10, fixed 256 px, bicubic RandomResizedCrop, flip, RandAugment, RandomErasing 0.25,
  MixUp 0.2 / CutMix 1.0, label smoothing 0.1, EMA 0.0005.

cvnets' EMA "momentum 0.0005" is Keras' `ema_momentum=0.9995` (weight of the old
average). Batch 1024, 300 epochs at 256 px for both.

Example:
    >>> recipe = get_recipe("mobilevitv2_050")
    >>> recipe.lr, recipe.weight_decay, recipe.decay_norm_and_bias
    (0.009, 0.004, False)
    >>> schedule = make_schedule(recipe.lr, recipe.min_lr, recipe.warmup_init_lr,
    ...                          warmup_steps=100, total_steps=1000)
"""

import dataclasses
import math

import keras

import keras_mobilevit as kmv
from training.options import non_negative, option, positive


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one recipe; every field is also a CLI flag that overrides it."""

    GROUP = ("recipe (defaults: the official ImageNet recipe of the model's family; the "
             "bundled dataset uses a short preset)")
    OVERRIDES = True  # the CLI flags default to None: keep the recipe's value

    name: str = option(help="v1: MobileViT v1 / v3 XXS-S; v2: MobileViT v2 / v3 0.5-1.0 "
                       "(default: auto, from the model's family)", flag="--recipe",
                       choices=("auto", "v1", "v2"))
    lr: float = option(help="peak learning rate (cosine start)")
    min_lr: float = option(help="final learning rate of the cosine")
    warmup_init_lr: float = option(help="learning rate at step 0")
    warmup_steps: int = option(help="linear warm-up steps (default: the recipe's, at most "
                               "a tenth of the run)", check=non_negative)
    weight_decay: float = option(help="decoupled (AdamW) weight decay: "
                                 "w -= lr * weight_decay * w", check=non_negative)
    decay_norm_and_bias: bool = option(
        help="also decay norm scales/offsets and biases (the 1-D weights)")
    clipnorm: float | None = option(help="clip the global gradient norm (0: off)",
                                    check=non_negative)
    label_smoothing: float = option(check=non_negative)
    ema_momentum: float = option(
        help="EMA of the weights, Keras semantics: ema = m * ema + (1 - m) * w (0.9995 = "
        "cvnets' 0.0005; 0: off). Default: the recipe's, averaging over at most a tenth "
        "of the run", check=non_negative)
    interpolation: str = option(help="RandomResizedCrop and eval resize",
                                choices=("bilinear", "bicubic"))
    antialias: bool = option(help="antialias when resizing down (PIL, v2, does; "
                             "OpenCV, v1, does not)")
    multi_scale: bool = option(help="multi-scale variable-batch sampler (v1 recipe)")
    randaugment: bool = option()
    random_erasing: float = option(help="probability per image", check=non_negative)
    mixup_alpha: float = option(help="MixUp alpha (0: off)", flag="--mixup",
                                check=non_negative)
    cutmix_alpha: float = option(help="CutMix alpha (0: off)", flag="--cutmix",
                                 check=non_negative)
    epochs: int = option(300, check=positive)
    batch_size: int = option(1024, "global batch size (all replicas)", check=positive)
    image_size: int = option(256, "training/eval resolution (the multi-scale sampler "
                             "varies around it)", check=positive)
    crop_scale_min: float = option(
        0.08, "RandomResizedCrop keeps between this fraction and all of the area",
        check=positive)
    eval_crop_fraction: float = option(
        256 / 288, "eval: resize the short side to size / fraction, center crop",
        check=positive)

V1 = Recipe(
    name="v1", lr=2e-3, min_lr=2e-4, warmup_init_lr=2e-4, warmup_steps=3000,
    weight_decay=0.01, decay_norm_and_bias=True, clipnorm=None, label_smoothing=0.1,
    ema_momentum=0.9995, interpolation="bilinear", antialias=False, multi_scale=True,
    randaugment=False, random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)

V2 = Recipe(
    name="v2", lr=2e-3, min_lr=2e-4, warmup_init_lr=1e-6, warmup_steps=20000,
    weight_decay=0.05, decay_norm_and_bias=False, clipnorm=10.0, label_smoothing=0.1,
    ema_momentum=0.9995, interpolation="bicubic", antialias=True, multi_scale=False,
    randaugment=True, random_erasing=0.25, mixup_alpha=0.2, cutmix_alpha=1.0)

# MobileViTv2 by width (cvnets-v0.2 README): (peak LR, weight decay); min LR = LR / 10.
# The v3 0.5/0.75/1.0 models use the v2 recipe with LR 2e-3 and weight decay 0.05 (V2).
V2_BY_WIDTH = {
    "mobilevitv2_050": (0.009, 0.004), "mobilevitv2_075": (0.009, 0.008),
    "mobilevitv2_100": (0.0075, 0.013), "mobilevitv2_125": (0.0049, 0.020),
    "mobilevitv2_150": (0.0035, 0.029), "mobilevitv2_175": (0.0026, 0.039),
    "mobilevitv2_200": (0.002, 0.05),
}


def get_recipe(model_name, recipe="auto"):
    """The recipe of `model_name` ("auto": from its family), or the one named."""
    if recipe == "auto":
        recipe = "v1" if kmv.get_family(model_name) in ("v1", "v3_v1") else "v2"
    if recipe == "v1":
        return V1
    if recipe != "v2":
        raise ValueError(f"Unknown recipe {recipe!r}: expected 'auto', 'v1' or 'v2'.")
    if model_name in V2_BY_WIDTH:
        lr, weight_decay = V2_BY_WIDTH[model_name]
        return dataclasses.replace(V2, lr=lr, min_lr=lr / 10, weight_decay=weight_decay)
    return V2


def make_schedule(lr, min_lr, warmup_init_lr, warmup_steps, total_steps):
    """Linear warm-up from `warmup_init_lr` to `lr`, then cosine down to `min_lr`.

    Keras' CosineDecay does both; its `alpha` is relative to the warm-up target.
    """
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=warmup_init_lr if warmup_steps else lr,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=min_lr / lr,
        warmup_target=lr if warmup_steps else None,
        warmup_steps=warmup_steps)


def effective_ema_momentum(ema_momentum, total_steps):
    """The recipe's EMA momentum, made shorter-sighted for short runs.

    The EMA averages over about 1 / (1 - momentum) steps (2,000 for the recipes'
    0.9995). A run much shorter than ImageNet's 375k steps would average in weights
    from early, high-LR training, so the window is capped at a tenth of the run.
    """
    return min(ema_momentum, max(0.0, 1.0 - 10.0 / max(1, total_steps)))


def make_optimizer(recipe, schedule, model, ema_momentum):
    """AdamW with decoupled weight decay, optional clipping and EMA (momentum 0: off)."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=recipe.weight_decay, beta_1=0.9,
        beta_2=0.999, global_clipnorm=recipe.clipnorm, use_ema=ema_momentum > 0,
        ema_momentum=ema_momentum if ema_momentum > 0 else 0.99)
    if not recipe.decay_norm_and_bias:
        # Norm scales/offsets and biases are exactly the 1-D trainable weights.
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    return optimizer


def make_loss(label_smoothing):
    """Cross-entropy on logits against one-hot (or MixUp/CutMix-mixed) labels."""
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing)


def make_metrics(num_classes):
    """Top-1 always, top-5 when there are more than 5 classes.

    Compile them as `weighted_metrics`: the eval pipeline pads with weight-0 examples.
    """
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    return metrics


def steps_for(num_examples, images_per_step):
    """Steps that see every example about once."""
    return max(1, math.ceil(num_examples / images_per_step))
