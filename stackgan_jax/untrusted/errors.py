"""The one error that every reader of an untrusted file raises when it refuses the file."""

import pickle

from stackgan_jax.errors import BadFileError


class RefusedFileError(BadFileError, pickle.UnpicklingError):
    """An untrusted file that a reader refuses; nothing in the file has been called.

    Raised for a pickle that names a global off its reader's allow-list, and for a file that is
    not what its reader expects (a pickle that is not a state dict, a tensor reaching outside its
    storage, a `.t7` file holding another network). It is a `pickle.UnpicklingError`, like a
    pickle's own failures, and a `ValueError`, like any other input that does not fit, so handlers
    written for either catch it.
    """
