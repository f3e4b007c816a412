"""Segmentation and detection training parts for train.py: data sources, joint
augmentations, losses, metrics, figures."""
