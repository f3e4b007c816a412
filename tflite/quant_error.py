"""Where a trained model's int8 error comes from: its QAT twin against the float model
on held-out images, with the activation fake-quants of one part of the network at a time
left in float (weights stay int8), then with every activation in float, then also
every weight, then also the fixed ranges (the input's; attention probabilities and
swish's sigmoid, whose int8 step is 1/256 as LiteRT's int8 SOFTMAX / LOGISTIC give
them): what is left in the last row
is not int8 rounding (e.g. the QAT LayerNorm's variance floor).

    python -m tflite.quant_error runs/ssdlite_mobilevitv3_xxs-fashion_scenes --ranges mse

A part is a layer name's first component (`layer_3`, `ssd_heads`, `extra_layers`, ...).
If one part holds most of the error, its rows say so (and a fix there, e.g. more
precision for it, pays); if every part's share is small, the error is spread over the
network. What is compared, per task (`compare`):
- classification: top-1 agreement with the float model;
- segmentation: pixel agreement of the class maps;
- detection: for every anchor the float model scores above 0.5, the decoded box's
  largest coordinate error in pixels (p50, p90, share under a pixel), and the share of
  the float model's confident detections found within a pixel (`task_accuracy`), as
  `python -m tflite.benchmark --det-run` counts them for the `.tflite`; the same share
  of those whose box lies inside the image (`task_accuracy.inside_image`).

Example:
    >>> rows = quant_error("runs/ssdlite_x", ranges="mse", limit=200)
    >>> rows[0]
    {'float': 'none (all int8)', 'detections_within_a_pixel': 0.52, ...}
"""

import argparse
import contextlib
import sys

import numpy as np

from keras_mobilevit import box_coder
from keras_mobilevit.postprocess import SSDPostprocess
from tflite import compat, convert, data, qat, qat_layers, range_search, task_accuracy
from tflite.qat_layers import FakeQuant
from training.segdet import detection

CONFIDENT = task_accuracy.MIN_SCORE


def parts(twin, fixed=False):
    """{part: [its moving-range FakeQuants]} of a QAT twin, in layer order (`fixed`: the
    fixed-range ones instead: the input's, and the 1/256 step of attention probabilities
    and of swish's sigmoid)."""
    found = {}
    for layer in twin.layers:
        quants = [q for q in [layer, *compat.flatten_layers(layer)]
                  if isinstance(q, FakeQuant) and (q.fixed_range is not None) == fixed]
        if quants:
            found.setdefault(layer.name.split(".")[0], []).extend(quants)
    return found


@contextlib.contextmanager
def _in_float(quants, weights=False):
    """`quants` (and with `weights` every weight fake-quant) left in float inside."""
    for q in quants:
        q.bypass = True
    qat_layers.Diagnosis.float_weights = weights
    try:
        yield
    finally:
        qat_layers.Diagnosis.float_weights = False
        for q in quants:
            q.bypass = False


def _predict(model, images):
    return model.predict(images, batch_size=32, verbose=0)


def compare(task, reference, model, images):
    """How far `model`'s outputs on `images` are from `reference`'s ({metric: value})."""
    model.predict_function = None  # a bypass switched since the last trace
    if task == "classification":
        want, got = (np.argmax(_predict(m, images), axis=-1) for m in (reference, model))
        return {"top1_agreement": float(np.mean(want == got))}
    if task == "segmentation":
        want, got = (task_accuracy.class_maps(m, images) for m in (reference, model))
        return {"pixel_agreement": float(np.mean(want == got))}
    anchors = next(layer for layer in reference.layers
                   if isinstance(layer, SSDPostprocess)).anchors
    size = images.shape[1]
    want, got = _predict(reference, images), _predict(model, images)
    logits = want["class_logits"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    confident = probs[..., 1:].max(-1) > CONFIDENT  # [N, A]

    def boxes(out):
        return np.asarray(box_coder.center_to_corner(
            box_coder.decode(out["box_regressions"], anchors))) * size

    error = np.abs(boxes(got) - boxes(want)).max(-1)[confident]
    wanted, found = detection.detections(want, size), detection.detections(got, size)
    matched, total = task_accuracy.matched_detections(wanted, found)
    inside, total_inside = task_accuracy.matched_detections(
        task_accuracy.inside_image(wanted, size), found)
    return {"confident_anchors": int(confident.sum()),
            "box_error_px_p50": float(np.percentile(error, 50)) if error.size else None,
            "box_error_px_p90": float(np.percentile(error, 90)) if error.size else None,
            "anchors_within_a_pixel": float(np.mean(error < 1)) if error.size else None,
            "detections_within_a_pixel": matched / total if total else None,
            "confident_detections": total,
            "inside_image_within_a_pixel": inside / total_inside if total_inside else None,
            "confident_inside_image": total_inside}


def quant_error(run, ranges=qat.DEFAULT_RANGES, limit=200, num_calib=100):
    """Rows of `compare` for the run's calibrated QAT twin (as `convert` makes it for
    int8 PTQ) with nothing, each part, then every activation left in float."""
    config = data.run_config(run)
    task = config.get("task", "classification")
    float_model = qat.load_keras_model(f"{run}/model.keras")
    images = data.images(config, "eval", limit)[0]  # the held-out split, eval transform
    twin = convert.ptq_twin(float_model, data.calibration_images(config, num_calib), ranges)
    groups = parts(twin)
    if not groups:
        raise ValueError(f"{run}/model.keras has layers the QAT twin does not cover (int8 "
                         "comes from the converter's own calibration): there are no "
                         "fake-quants to leave in float")
    rows = [{"float": "none (all int8)", **compare(task, float_model, twin, images)}]
    moving = sum(groups.values(), [])
    everything = moving + sum(parts(twin, fixed=True).values(), [])
    for name, quants, weights in [*[(n, q, False) for n, q in groups.items()],
                                  ("every activation", moving, False),
                                  ("every activation and weight", moving, True),
                                  ("all that, and the fixed ranges", everything, True)]:
        with _in_float(quants, weights):
            rows.append({"float": name, "fake_quants": len(quants),
                         **compare(task, float_model, twin, images)})
    return rows


def markdown(rows):
    keys = [k for k in rows[0] if k != "float"]
    lines = ["| activations left in float | fake-quants | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 2) + "|"]
    for row in rows:
        cells = [f"{row[k]:.3f}" if isinstance(row.get(k), float) else str(row.get(k, "-"))
                 for k in keys]
        lines.append(f"| {row['float']} | {row.get('fake_quants', '-')} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a training run folder (config.json, model.keras)")
    parser.add_argument("--ranges", default=qat.DEFAULT_RANGES, choices=range_search.METHODS)
    parser.add_argument("--limit", type=int, default=200, help="held-out images (default 200)")
    parser.add_argument("--num-calib", type=int, default=100, help="calibration images")
    args = parser.parse_args(argv)
    print(markdown(quant_error(args.run, args.ranges, args.limit, args.num_calib)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
