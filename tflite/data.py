"""Images for calibration and evaluation, from the training pipeline (training/).

A training run folder holds `config.json`; its dataset, splits and eval transform are
what calibration (training split) and accuracy (held-out split) use here, so the int8
model is calibrated and measured on exactly what the float model was trained and
evaluated on. Images come out as raw pixels in [0, 255], float32 NHWC. Segmentation and
detection runs (`"task"` in the config) read their scene source (training/segdet/) and
its eval transform, a resize to the input size; their labels are None.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from training import data, pipeline, rundir
from training.segdet import detection, joint_augment, segmentation, sources

SCENE_TASKS = ("segmentation", "detection")

run_config = rundir.read_config  # run folder -> its config.json as a dict


def open_source(config):
    """The run's image source (a TFDS dataset or an image folder, with its class names)."""
    folder = config.get("image_folder")  # then "dataset" holds the folder's name only
    return data.open_source(None if folder else config["dataset"], folder,
                            data_dir=config.get("data_dir"),
                            train_split=config.get("train_split"),
                            eval_split=config.get("eval_split"), check_images=False)


def _source_and_settings(config):
    return open_source(config), pipeline.PipelineSettings(**config["pipeline"])


def default_config(image_size):
    """A config for the bundled default dataset at `image_size`, eval transform defaults."""
    settings = pipeline.PipelineSettings(image_size=image_size, batch_size=64)
    return {"dataset": data.DEFAULT_DATASET, "pipeline": dataclasses.asdict(settings)}


def images(config, split="eval", limit=None):
    """(images [N, H, W, 3] float32, labels [N] int) of `split` ("eval", "train" or a
    split name) through the run's eval transform (resize, center crop); for a
    segmentation or detection run (images resized to the input size, None)."""
    if config.get("task") in SCENE_TASKS:
        return _scene_images(config, split, limit), None
    source, settings = _source_and_settings(config)
    name = {"eval": source.eval_split, "train": source.train_split}.get(split, split)
    center = pipeline.eval_transform(settings)
    # pipeline.eval_dataset's transform, without its cache: stopping early in a cached
    # tf.data pipeline left an iterator that crashed TensorFlow (SIGSEGV) later on.
    ds = source.read(name).map(lambda image, label: (center(image), label),
                               num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    if limit:
        ds = ds.take(-(-limit // 256))
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    xs, ys = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    return (xs[:limit], ys[:limit]) if limit else (xs, ys)


def _scene_images(config, split, limit):
    """A segmentation/detection run's images of `split`, resized as its eval pipeline does."""
    folder = config.get("image_folder")
    source = sources.open_scene_source(
        config["task"], None if folder else config["dataset"], folder,
        data_dir=config.get("data_dir"), train_split=config.get("train_split"),
        eval_split=config.get("eval_split"))
    name = {"eval": source.eval_split, "train": source.train_split}.get(split, split)
    size = [config["pipeline"]["image_size"]] * 2
    ds = source.read(name).map(lambda example: joint_augment.resize_image(example["image"], size),
                               num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    if limit:
        ds = ds.take(-(-limit // 256))
    xs = np.concatenate([x.numpy() for x in ds])
    return xs[:limit] if limit else xs


def calibration_images(config, num_samples=200):
    """Training-split images through the eval transform: the representative dataset."""
    return images(config, "train", num_samples)[0]


def task_examples(config, limit=None):
    """(images [N, S, S, 3] float32, truth) of a segmentation or detection run's
    held-out split through its eval pipeline (training/segdet: image and masks or boxes
    resized to the input size together, as train.py evaluates), the first `limit`.

    truth: masks int32 [N, S, S] (255 = ignore), or per image (boxes [n, 4] pixel
    x0, y0, x1, y1, labels [n] in 1..K), what `detection.coco_metrics` takes.
    """
    task = config.get("task", "classification")
    if task not in SCENE_TASKS:
        raise ValueError(f"a {task} run has no masks or boxes: task accuracy needs a "
                         f"run of one of {SCENE_TASKS} (its config.json 'task')")
    folder = config.get("image_folder")
    source = sources.open_scene_source(
        task, None if folder else config["dataset"], folder, data_dir=config.get("data_dir"),
        train_split=config.get("train_split"), eval_split=config.get("eval_split"))
    count = source.num_examples(source.eval_split)
    count = min(count, limit) if limit else count
    # No cache: stopping early in a cached pipeline crashed TensorFlow (see `images`).
    if task == "segmentation":
        settings = dataclasses.replace(segmentation.SegmentationSettings(**config["pipeline"]),
                                       cache="no", aux_output=False)
        ds = segmentation.eval_dataset(source, settings)
    else:
        settings = dataclasses.replace(detection.DetectionSettings(**config["pipeline"]),
                                       cache="no")
        ds = detection.eval_dataset(source, settings, with_truth=True)
    images, truth = [], []
    for batch in ds.take(-(-count // settings.batch_size)).as_numpy_iterator():
        images.append(batch[0])
        if task == "segmentation":
            truth.append(batch[1])
        else:  # padding boxes have label 0
            truth += [(detection.yxyx_to_pixel_xyxy(boxes[labels > 0], settings.image_size),
                       labels[labels > 0]) for boxes, labels in zip(*batch[1:])]
    truth = np.concatenate(truth)[:count] if task == "segmentation" else truth[:count]
    return np.concatenate(images)[:count], truth
