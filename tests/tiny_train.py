"""`python tests/tiny_train.py ARGS`: training/train.py with a tiny CNN for MobileViT.

The data pipeline, checkpoints, resume and tf.distribute code are the real ones; only
the model is small, so subprocess tests of that machinery stay fast.
"""

import training_utils
from training import train

if __name__ == "__main__":
    train.main(build_model=training_utils.tiny_cnn)
