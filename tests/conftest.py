"""Test setup: 8 virtual CPU devices and a persistent compilation cache.

Both must be in place before JAX is imported anywhere. `JAX_NUM_CPU_DEVICES` is used instead of
`XLA_FLAGS`, which TensorFlow in the same process parses too.
"""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_NUM_CPU_DEVICES"] = "8"
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

# Tests compare numbers computed on different paths; full float32 matmul precision everywhere.
jax.config.update("jax_default_matmul_precision", "highest")
