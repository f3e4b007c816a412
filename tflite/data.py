"""Images for calibration and evaluation, from the training pipeline (training/).

A training run folder holds `config.json`; its dataset, splits and eval transform are
what calibration (training split) and accuracy (held-out split) use here, so the int8
model is calibrated and measured on exactly what the float model was trained and
evaluated on. Images come out as raw pixels in [0, 255], float32 NHWC.
"""

import json
import os

import numpy as np


def run_config(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        return json.load(f)


def _source_and_settings(config):
    from training import data, pipeline

    source = data.open_source(config["dataset"], config.get("image_folder"),
                              train_split=config.get("train_split"),
                              eval_split=config.get("eval_split"), check_images=False)
    return source, pipeline.PipelineSettings(**config["pipeline"])


def default_config(image_size):
    """A config for the bundled default dataset at `image_size`, eval transform defaults."""
    from training import data, pipeline
    import dataclasses

    settings = pipeline.PipelineSettings(image_size=image_size, batch_size=64)
    return {"dataset": data.DEFAULT_DATASET, "pipeline": dataclasses.asdict(settings)}


def images(config, split="eval", limit=None):
    """(images [N, H, W, 3] float32, labels [N] int) of `split` ("eval", "train" or a
    split name) through the run's eval transform (resize, center crop)."""
    from training import pipeline

    source, settings = _source_and_settings(config)
    name = {"eval": source.eval_split, "train": source.train_split}.get(split, split)
    xs, ys, count = [], [], 0
    for x, y, *weight in pipeline.eval_dataset(source, settings, split=name, batch_size=256):
        # Batches may be padded with blank examples of weight 0: drop those.
        real = weight[0].numpy() > 0 if weight else np.ones(len(x), bool)
        xs.append(x.numpy()[real])
        ys.append(np.argmax(y.numpy()[real], axis=-1))
        count += len(xs[-1])
        if limit and count >= limit:
            break
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    return (xs[:limit], ys[:limit]) if limit else (xs, ys)


def calibration_images(config, num_samples=200):
    """Training-split images through the eval transform: the representative dataset."""
    return images(config, "train", num_samples)[0]
