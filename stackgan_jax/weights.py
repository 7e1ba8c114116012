"""Types shared by every loader of pretrained weights: text encoders, metric networks, releases.

They live at the top of the package, not in one of `text/`, `metrics/` or `pretrained/`, so that
each of those can use them without importing another.
"""

from typing import Any

from stackgan_jax.errors import UserError

Params = Any  # a pytree of arrays, as returned by `flax.linen.Module.init`


class MissingWeightsError(UserError, FileNotFoundError):
    """Raised when a network's weight files are not where they were looked for.

    The message says what to install, or where to place which file; nothing is downloaded.
    """
