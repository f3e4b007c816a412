"""End a segmentation graph with what an app draws: a per-pixel class map (uint8, the
argmax inside the model) or per-pixel logits (uint8 in an int8 model), at the input
resolution.

A keras_mobilevit segmenter ends in a bilinear resize of its low-resolution logits to
the input size, written as constant matmuls (exact in Keras, but in a `.tflite` two
large matmuls over the full-size map). The exported graph takes the low-resolution
logits instead and resizes them with one builtin RESIZE_BILINEAR (half-pixel centres,
or align-corners: torch's two modes), which LiteRT runs in int8 and XNNPACK takes in
float and int8. The argmax is ARG_MAX + CAST (builtin; LiteRT's own kernels).

Example:
    >>> trunk, align_corners = split_upsampling(model)
    >>> out = segmentation_outputs(trunk(pixels), (512, 512), align_corners, "class")
"""

OUTPUTS = ("class", "logits")


def split_upsampling(model):
    """(the model up to its low-resolution logits, the resize's align_corners), or
    (model, None) when the model does not end in a resize to its input size.

    The resize is the output layer when it is called on `[logits, model input]` and has
    an `align_corners` setting (keras_mobilevit's bilinear resize layers).
    """
    import keras

    layer = model.layers[-1]
    node = layer._inbound_nodes[0] if layer._inbound_nodes else None
    args = node.arguments.keras_tensors if node is not None else []
    if (len(model.outputs) != 1 or not hasattr(layer, "align_corners") or len(args) != 2
            or args[1] is not model.inputs[0]):
        return model, None
    return keras.Model(model.inputs[0], args[0], name=f"{model.name}_lowres"), \
        bool(layer.align_corners)


def segmentation_outputs(logits, size, align_corners, output="class"):
    """TensorFlow ops from (1, h, w, C) logits to what the app reads (call inside the
    exported function).

    Args:
        logits: low-resolution logits, or logits already at `size` (align_corners None).
        size: (H, W) of the input image.
        align_corners: the bilinear resize mode (torch's), None for no resize.
        output: "class" -> (1, H, W) uint8 class index; "logits" -> (1, H, W, C).
    """
    import tensorflow as tf

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if align_corners is not None:
        # torch: align_corners=False is TensorFlow's half-pixel centres
        logits = tf.raw_ops.ResizeBilinear(images=logits, size=size, align_corners=align_corners,
                                           half_pixel_centers=not align_corners)
    elif tuple(logits.shape[1:3]) != tuple(size):
        raise ValueError(f"logits of size {tuple(logits.shape[1:3])} for a {tuple(size)} "
                         "input and no resize: the model must return input-size logits")
    if output == "logits":
        return logits
    if logits.shape[-1] > 256:
        raise ValueError(f"{logits.shape[-1]} classes do not fit a uint8 class map")
    return tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.uint8)
