"""StackGAN text-to-image synthesis (Zhang et al., ICCV 2017) in JAX/Flax."""

__version__ = "0.1.0"
