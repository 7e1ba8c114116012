"""Evaluation metrics: FID, Inception Score and the synthetic birds' attribute classifier."""
