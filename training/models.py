"""The classifier to train: built new, from `--weights`, or from a saved `.keras` model.

`load_model` is the one `.keras` loader of training/ (safe_mode: a file cannot run code);
`build_classifier` is the classification task's model factory (`tasks.Task.build_model`)
and `compile_model` its optimizer, loss and metrics.

Example:
    >>> model = build_classifier(config)      # a TrainConfig; uncompiled, float32 logits
    >>> compile_model(model, config, loss, metrics)
    >>> model = load_model("runs/x/model.keras")
"""

import importlib.metadata

import keras

import keras_mobilevit as kmv
from training import recipes

# Modules that register serializable Keras layers (setup.py: `qat = tflite.qat`).
LAYER_PLUGINS = "keras_mobilevit.keras_layers"


def load_model(path):
    """A saved `.keras` model, uncompiled, loaded with `safe_mode=True` (no Lambda code).

    Layers of other packages (e.g. tflite's QAT layers) load too: the modules registered
    under the entry-point group LAYER_PLUGINS are imported first, which registers their
    layers with Keras (training never imports tflite by name).
    """
    for entry in importlib.metadata.entry_points(group=LAYER_PLUGINS):
        try:
            entry.load()
        except ImportError:  # its extra is not installed: its layers cannot be in use
            pass
    return keras.models.load_model(path, compile=False, safe_mode=True)


def build_classifier(config, transform=None):
    """The network to train, uncompiled: new, from `config.weights`, or `config.from_model`.

    A new Dense head replaces the classifier when the number of classes differs.
    `transform`: model -> model applied to it last (the QAT plugin's twin).
    """
    model = _classifier(config)
    return transform(model) if transform else model


def _classifier(config):
    recipe, num_classes = config.recipe, config.num_classes
    size = recipe.image_size
    input_shape = (None, None, 3) if recipe.multi_scale else (size, size, 3)
    name, weights, dropout = config.model, config.weights, config.dropout
    if config.from_model:
        model = load_model(config.from_model)
        if model.output_shape[-1] == num_classes:
            return model
        features = model.layers[-1].input  # the classifier's input
        return _with_head(model.input, features, num_classes, dropout, model.name)
    if weights is None or str(weights).endswith(".h5") or num_classes == 1000:
        return kmv.create_model(name, weights=weights, input_shape=input_shape,
                                classes=num_classes, classifier_activation=None,
                                dropout=dropout)
    backbone = kmv.create_model(name, include_top=False, pooling="avg", weights=weights,
                                input_shape=input_shape)
    if dropout is None:
        dropout = kmv.architectures.get_spec(name).family.classifier_dropout
    return _with_head(backbone.input, backbone.output, num_classes, dropout, name)


def _with_head(inputs, features, num_classes, dropout, name):
    """inputs -> features [B, C] -> dropout -> new Dense classifier (float32 logits)."""
    x = keras.layers.Dropout(dropout or 0.0, name="head_dropout")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(x)
    return keras.Model(inputs, logits, name=name)


def compile_model(model, config, loss, metrics, lr_multipliers=None):
    """AdamW + warm-up/cosine + EMA from the recipe, with the task's loss and metrics
    (and the task's per-layer learning-rate multipliers).

    Compile metrics as `weighted_metrics`: the eval pipeline pads with weight-0 examples.
    """
    recipe = config.recipe
    schedule = recipes.make_schedule(recipe.lr, recipe.min_lr, recipe.warmup_init_lr,
                                     recipe.warmup_steps, config.total_steps)
    optimizer = recipes.make_optimizer(recipe, schedule, model, recipe.ema_momentum,
                                       lr_multipliers)
    model.compile(optimizer=optimizer, loss=loss, weighted_metrics=metrics)
    # Built here, not in the first step: that step would be traced twice (~3x slower).
    optimizer.build(model.trainable_variables)
