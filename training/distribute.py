"""`--strategy` -> a tf.distribute strategy (Keras' `fit` runs on any of them).

* "default": TF's default strategy (one device: the first GPU if any, else the CPU).
* "one_device": OneDeviceStrategy on the first GPU, or the CPU.
* "mirrored": MirroredStrategy over every local GPU, or every logical CPU
  (`cpu_devices` splits the CPU into that many, to try data parallelism without GPUs).
* "multi_worker": MultiWorkerMirroredStrategy; the cluster comes from $TF_CONFIG.
* "tpu": TPUStrategy on `tpu` (a name or grpc:// address; "" = the local TPU VM).

Call `make_strategy` first thing: TF_CONFIG, logical devices and TPU initialisation
must happen before TF runs anything.

Example:
    >>> strategy = make_strategy("mirrored", cpu_devices=2)
    >>> strategy.num_replicas_in_sync
    2
"""

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name="default", cpu_devices=1, tpu=""):
    """The strategy called `name` (one of STRATEGIES)."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    # These two configure the runtime themselves: nothing may initialise it before.
    if name == "multi_worker":
        return _MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0].name)
    return tf.distribute.MirroredStrategy([d.name for d in devices])


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with a `reduce` that Keras 3's `fit` can use.

    Keras 3 (keras-team/keras#20585) calls `strategy.reduce` on the (images, labels)
    tuple of the first batch, which this strategy only accepts tensor by tensor, and
    with `axis=0` on scalar metrics, which it rejects (the mean over replicas is meant).
    MirroredStrategy does not need this.
    """

    def reduce(self, reduce_op, value, axis):
        reduce = super().reduce

        def one(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            return reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def is_chief(strategy):
    """True on the worker that writes files (the only one unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
