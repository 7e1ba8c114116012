"""Types shared by every loader of pretrained weights: text encoders, metric networks, releases.

They live at the top of the package, not in one of `text/`, `metrics/` or `pretrained/`, so that
each of those can use them without importing another.
"""

from typing import Any

Params = Any  # a pytree of arrays, as returned by `flax.linen.Module.init`


class MissingWeightsError(FileNotFoundError):
    """Raised when a network's weight files are not where they were looked for.

    The message says what to install, or where to place which file; nothing is downloaded.
    """
