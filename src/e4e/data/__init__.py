"""Datasets: the emoji training set builder, the avataaars face builder (labels and counterfactual
pairs), and a generic image-folder dataset."""
