"""The model code is backend-agnostic keras.ops: the JAX backend gives the same logits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_mobilevit as kmv

# Runs under KERAS_BACKEND=jax in a fresh process (the backend is fixed at import).
SCRIPT = """
import json, sys
import numpy as np
import keras, keras_mobilevit as kmv
assert keras.backend.backend() == "jax", keras.backend.backend()
pt, npz = sys.argv[1], sys.argv[2]
golden, out = np.load(npz), {}
for size, key in ((256, "input_nhwc"), (224, "input_nhwc_224")):
    model = kmv.MobileViTv3XXS(weights=pt, include_preprocessing=False,
                               classifier_activation=None, input_shape=(size, size, 3))
    out[size] = np.asarray(model(golden[key])).tolist()
print(json.dumps(out))
"""


def test_jax_backend_matches_tensorflow(fixtures_path):
    pytest.importorskip("jax")
    pt = str(fixtures_path / "mobilevit_v3_xxs.pt")
    npz = fixtures_path / "mobilevit_v3_xxs.npz"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", SCRIPT, pt, str(npz)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    jax_logits = json.loads(run.stdout.strip().splitlines()[-1])

    golden = np.load(npz)
    for size, key, logits in ((256, "input_nhwc", "logits"), (224, "input_nhwc_224", "logits_224")):
        model = kmv.MobileViTv3XXS(weights=pt, include_preprocessing=False,
                                   classifier_activation=None, input_shape=(size, size, 3))
        got = np.array(jax_logits[str(size)], dtype="float32")
        np.testing.assert_allclose(got, model.predict(golden[key], verbose=0), rtol=0, atol=2e-4)
        np.testing.assert_allclose(got, golden[logits], rtol=0, atol=2e-4)
