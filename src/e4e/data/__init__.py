"""Datasets: the emoji training set builder and a generic image-folder dataset."""
