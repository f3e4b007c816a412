"""Dense prediction tasks (semantic segmentation, object detection) for train.py: their
data sources, joint augmentations, losses, metrics and figures."""
