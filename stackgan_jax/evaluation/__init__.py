"""Evaluation of a generator on its dataset's held-out captions, for training and the CLI.

`config.eval` (`config.default_config`) says which metrics and how; `evaluator.make_evaluator`
builds them by name, importing each metric's module (`attributes`, `clip_score`, `fid`,
`inception_score`) only when asked for. The `evaluate` CLI (`stackgan_jax/evaluate.py`) and
training (`train.py`) both evaluate through the `Evaluator`, so they give the same numbers for
the same generator.
"""
