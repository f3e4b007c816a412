"""Datasets that ship with the project (no download needed)."""
