"""`models.build_classifier`: a new model, fine-tuning from official weights, `--from`."""

import dataclasses
import types

import keras
import numpy as np
import pytest

import training_utils  # noqa: F401  (makes `training` importable)
import keras_mobilevit as kmv
from training import models, recipes
from training.config import TrainConfig


def _config(multi_scale=False, **overrides):
    recipe = dataclasses.replace(recipes.V1, image_size=64, multi_scale=multi_scale)
    return TrainConfig(**{"model": "mobilevitv3_xxs", "num_classes": 7, "recipe": recipe,
                          **overrides})


def test_new_model_outputs_logits_for_the_classes():
    model = models.build_classifier(_config())
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 7)
    assert model.layers[-1].activation is keras.activations.linear  # logits
    multi_scale = models.build_classifier(_config(multi_scale=True))
    assert multi_scale.input_shape == (None, None, None, 3)


def test_fine_tuning_from_official_weights_gets_a_new_head(fixtures_path):
    checkpoint = fixtures_path / "mobilevit_v3_xxs.pt"
    model = models.build_classifier(_config(weights=str(checkpoint), dropout=0.2))
    assert model.output_shape == (None, 7) and model.get_layer("head").units == 7
    assert model.get_layer("head_dropout").rate == 0.2
    reference = kmv.create_model("mobilevitv3_xxs", include_top=False, pooling="avg",
                                 weights=str(checkpoint), input_shape=(64, 64, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("head_dropout").input)
    np.testing.assert_allclose(features.predict(x, verbose=0),
                               reference.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_from_a_saved_model_keeps_or_replaces_the_head(tmp_path):
    path = tmp_path / "model.keras"
    kmv.create_model("mobilevitv3_xxs", weights=None, input_shape=(32, 32, 3), classes=7,
                     classifier_activation=None).save(path)
    same = models.build_classifier(_config(from_model=str(path)))
    assert same.output_shape == (None, 7) and "head" not in [l.name for l in same.layers]
    other = models.build_classifier(_config(from_model=str(path), num_classes=3))
    assert other.output_shape == (None, 3) and other.get_layer("head").units == 3


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_mixed_precision_flag(tmp_path, policy):
    folder = training_utils.make_image_folder(tmp_path / "images", per_class=6)
    result = training_utils.run_script(
        "tiny", "--image-folder", folder, "--image-size", "16", "--batch-size", "4",
        "--epochs", "1", "--steps-per-epoch", "3", "--multi-scale", "--randaugment",
        "--mixup", "0.2", "--cutmix", "1.0", "--random-erasing", "0.25",
        "--mixed-precision", policy, "--output-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.isfinite(
        keras.models.load_model(tmp_path / "run" / "model.keras").predict(
            np.zeros((1, 16, 16, 3), "float32"), verbose=0)).all()


def test_evaluate_script_reports_top1_top5_and_loss(tmp_path):
    import json

    from training import evaluate

    classes = [f"c{i}" for i in range(6)]
    folder = training_utils.make_image_folder(tmp_path / "images", classes=classes,
                                              per_class=2, splits=("train", "val"))
    model = training_utils.tiny_cnn(types.SimpleNamespace(num_classes=6))
    model.save(tmp_path / "model.keras")
    out = tmp_path / "metrics.json"
    evaluate.main([str(tmp_path / "model.keras"), "--image-folder", str(folder),
                   "--split", "val", "--image-size", "16", "--batch-size", "5",
                   "--json", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["examples"] == 12 and 0 <= metrics["accuracy"] <= metrics["top5"] <= 1
    assert np.isfinite(metrics["loss"])
