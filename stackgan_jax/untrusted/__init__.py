"""Readers of untrusted file formats: downloaded pickles, `.pth`, TorchScript and `.t7` files.

Unpickling may call any importable callable that the file names, so the pickle readers here
resolve only an allow-list of globals, each to a stand-in that builds data and runs nothing, and
refuse every other global before anything is called; the Torch7 format names no Python code at
all. A file that a reader refuses, for a global off its list or for not being the file it
expects, raises `RefusedFileError`.

* `numpy_pickle`: the StackGAN release's Python-2 pickles of lists, strings and numpy arrays.
* `torch_pickle`: PyTorch's `.pth` state dicts and TorchScript modules, without torch.
* `torch7`: Lua torch's `.t7` files, and the `nn` module trees saved in them.
"""

from stackgan_jax.untrusted.errors import RefusedFileError

__all__ = ["RefusedFileError"]
