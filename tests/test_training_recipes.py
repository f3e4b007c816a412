"""Recipes: family mapping, schedule values, weight-decay exclusion, EMA, checkpoints."""

import math

import keras
import numpy as np
import pytest

import training_utils
from keras_mobilevit import fileio
from training import callbacks, checkpoint, recipes, reporting


@pytest.mark.parametrize("name,recipe,interpolation", [
    ("mobilevit_xxs", "v1", "bilinear"), ("mobilevitv3_xs", "v1", "bilinear"),
    ("mobilevitv2_100", "v2", "bicubic"), ("mobilevitv3_050", "v2", "bicubic")])
def test_recipe_by_family(name, recipe, interpolation):
    r = recipes.get_recipe(name)
    assert (r.name, r.interpolation) == (recipe, interpolation)
    assert r.multi_scale == (recipe == "v1") and r.randaugment == (recipe == "v2")
    assert r.decay_norm_and_bias == (recipe == "v1")
    assert r.clipnorm == (None if recipe == "v1" else 10.0)


def test_v2_hyper_parameters_by_width():
    assert (recipes.get_recipe("mobilevitv2_050").lr, recipes.get_recipe(
        "mobilevitv2_050").weight_decay) == (0.009, 0.004)
    r = recipes.get_recipe("mobilevitv2_200")
    assert (r.lr, r.min_lr, r.weight_decay, r.warmup_steps) == (0.002, 0.0002, 0.05, 20000)
    r = recipes.get_recipe("mobilevitv3_100")  # v3 (v2-based): LR 2e-3 -> 2e-4, decay 0.05
    assert (r.lr, r.min_lr, r.weight_decay) == (2e-3, 2e-4, 0.05)
    assert recipes.get_recipe("mobilevitv2_050", "v1") is recipes.V1


def test_schedule_values_at_known_steps():
    schedule = recipes.make_schedule(2e-3, 2e-4, 2e-4, warmup_steps=100, total_steps=1100)
    lr = {step: float(schedule(step)) for step in (0, 50, 100, 600, 1100, 5000)}
    assert lr[0] == pytest.approx(2e-4)
    assert lr[50] == pytest.approx(1.1e-3)             # halfway up the linear warm-up
    assert lr[100] == pytest.approx(2e-3)              # peak
    assert lr[600] == pytest.approx(1.1e-3, rel=1e-4)  # cosine midpoint: (max + min) / 2
    assert lr[1100] == pytest.approx(2e-4, rel=1e-4)   # end
    assert lr[5000] == pytest.approx(2e-4, rel=1e-4)   # stays at the minimum
    no_warmup = recipes.make_schedule(1e-3, 1e-4, 1e-6, warmup_steps=0, total_steps=10)
    assert float(no_warmup(0)) == pytest.approx(1e-3)


def test_ema_momentum_is_capped_for_short_runs():
    assert recipes.effective_ema_momentum(0.9995, 375_000) == 0.9995
    assert recipes.effective_ema_momentum(0.9995, 1000) == pytest.approx(0.99)
    assert recipes.effective_ema_momentum(0.9995, 5) == 0.0


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    return model


@pytest.mark.parametrize("recipe", [recipes.V1, recipes.V2])
def test_weight_decay_skips_norm_and_bias_only_for_v2(recipe):
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    for v in model.trainable_variables:
        v.assign(np.ones(v.shape, "float32"))
    optimizer = recipes.make_optimizer(recipe, 0.1, model, ema_momentum=0.0)
    optimizer.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables],
                    model.trainable_variables)  # zero gradients: only the decay moves weights
    for v in model.trainable_variables:
        decayed = not np.allclose(v.numpy(), 1.0)
        assert decayed == (len(v.shape) > 1 or recipe.decay_norm_and_bias), v.path


def test_ema_tracks_and_replaces_the_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    momentum, lr = 0.5, 0.1
    optimizer = keras.optimizers.SGD(lr, use_ema=True, ema_momentum=momentum)
    model.compile(optimizer, "mse")
    kernel = model.trainable_variables[0]
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    raw = [kernel.numpy().copy()]
    ema = kernel.numpy().copy()
    for step in range(3):
        model.train_on_batch(x, y)
        raw.append(kernel.numpy().copy())
        # Keras: the average starts at the first updated value, then m * ema + (1 - m) * w.
        ema = raw[-1] if step == 0 else momentum * ema + (1 - momentum) * raw[-1]
    np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), ema,
                               rtol=1e-6)
    optimizer.finalize_variable_values(model.trainable_variables)
    np.testing.assert_allclose(kernel.numpy(), ema, rtol=1e-6)


def test_keep_training_weights_undoes_the_ema_swap():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9), "mse")
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.KeepTrainingWeights()])
    raw = [v.numpy() for v in model.trainable_variables]
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    assert not all(np.allclose(r, a) for r, a in zip(raw, averages))  # raw, not the EMA
    model.fit(x, y, epochs=1, verbose=0)  # without the callback fit swaps the EMA in
    for v, a in zip(model.trainable_variables, model.optimizer._model_variables_moving_average):
        np.testing.assert_allclose(v.numpy(), a.numpy())


def test_checkpoints_round_trip_and_fall_back(tmp_path):
    model = _tiny_model()
    model.compile(recipes.make_optimizer(recipes.V2, 0.1, model, ema_momentum=0.9), "mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    manager = checkpoint.CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        model.train_on_batch(x, y)
        manager.save(model, step)
    assert [s for s, _ in manager.checkpoints()] == [3, 2]
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-000000002.weights.h5", "ckpt-000000003.weights.h5"]
    saved = [v.numpy() for v in model.variables + model.optimizer.variables]

    fresh = _tiny_model()
    fresh.compile(recipes.make_optimizer(recipes.V2, 0.1, fresh, ema_momentum=0.9), "mse")
    assert checkpoint.CheckpointManager(tmp_path).restore(fresh) == 3
    for a, b in zip(saved, [v.numpy() for v in fresh.variables + fresh.optimizer.variables]):
        np.testing.assert_array_equal(a, b)  # weights, moments, EMA and step counter

    (tmp_path / "ckpt-000000003.weights.h5").write_bytes(b"torn")  # newest is unreadable
    assert checkpoint.CheckpointManager(tmp_path).restore(fresh) == 2


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "summary.json"
    fileio.write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and not list(tmp_path.glob(".tmp-*"))


def test_history_trim_drops_resumed_epochs_and_torn_lines(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n2,0.7,0.8\n3,0.")
    assert len(reporting.read_history(path)) == 3
    reporting.trim_history(path, epochs_done=2)
    assert path.read_text() == "epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n"
    reporting.plot_history(path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_steps_for():
    assert recipes.steps_for(10000, 128) == math.ceil(10000 / 128)
    assert training_utils.REPO.joinpath("training", "train.py").exists()
