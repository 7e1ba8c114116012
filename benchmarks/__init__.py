"""Throughput, FLOP and MFU benchmarks of the StackGAN training step and input pipeline."""
