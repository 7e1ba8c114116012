"""Datasets for StackGAN: the procedural bird set, the release's pickles and image preprocessing."""
