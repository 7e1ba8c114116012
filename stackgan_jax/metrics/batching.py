"""A network run over many inputs in batches of one shape, with a progress bar of images/s."""

from collections.abc import Callable
from typing import Any

import numpy as np
import tqdm


def map_batches(
    function: Callable[[np.ndarray], Any], inputs: Any, batch_size: int, *, desc: str
) -> np.ndarray:
    """`function` over the rows of `inputs`, `batch_size` rows per call.

    The last batch is padded by repeating its last row, so `function` compiles once for any
    number of inputs; the padding's outputs are dropped. That changes nothing as long as each
    row's output depends on that row alone, as for every network here in inference mode.

    Args:
        function: [batch_size, ...] array -> [batch_size, ...] outputs.
        inputs: [N, ...] array (NumPy or JAX), N >= 1.
        batch_size: rows per call.
        desc: the progress bar's label (shown when there is more than one batch).

    Returns:
        The N rows of output, as one NumPy array.
    """
    outputs = []
    with tqdm.tqdm(
        total=len(inputs), desc=desc, unit=" images", disable=len(inputs) <= batch_size
    ) as progress:
        for start in range(0, len(inputs), batch_size):
            chunk = np.asarray(inputs[start : start + batch_size])
            padding = np.repeat(chunk[-1:], batch_size - len(chunk), 0)
            outputs.append(np.asarray(function(np.concatenate([chunk, padding])))[: len(chunk)])
            progress.update(len(chunk))
    return np.concatenate(outputs)
