"""Export-friendly graphs: a float .tflite of every variant uses builtin ops only, runs in
the LiteRT interpreter, matches Keras, and has no tensor of rank > 4 (GPU delegates and
NPUs reject those). One variant per family runs by default; all 16 with `-m slow`."""

import keras
import numpy as np
import pytest

import keras_mobilevit as kmv

tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")

PER_FAMILY = ["mobilevit_xxs", "mobilevitv2_050", "mobilevitv3_xxs", "mobilevitv3_050"]
SLOW = [pytest.param(m, marks=pytest.mark.slow) for m in kmv.list_models() if m not in PER_FAMILY]


def _float_tflite(model):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex
    return converter.convert()


@pytest.mark.parametrize("name", PER_FAMILY + SLOW)
def test_float_tflite_builtin_rank4_and_matches_keras(name):
    # Fixed batch 1, as on a device; 256x256 is the size the official weights use.
    model = kmv.create_model(name, input_tensor=keras.Input((256, 256, 3), batch_size=1),
                             classifier_activation=None)
    interpreter = litert.Interpreter(model_content=_float_tflite(model))
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any("FLEX" in op or op == "CUSTOM" for op in ops), ops
    ranks = {t["name"]: len(t["shape"]) for t in interpreter.get_tensor_details()}
    assert max(ranks.values()) <= 4, {k: r for k, r in ranks.items() if r > 4}
    x = np.random.RandomState(0).uniform(0, 255, (1, 256, 256, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(y, model.predict(x, verbose=0), rtol=0, atol=1e-4)
