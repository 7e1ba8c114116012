"""The restricted unpickler reads Python-2 StackGAN pickles and refuses everything else."""

import functools
import io
import os
import pickle
import pickletools
import re
import struct
import subprocess

import numpy as np
import numpy.testing._private.utils as np_testing_utils
import pytest

from stackgan_jax.untrusted import RefusedFileError
from stackgan_jax.untrusted.numpy_pickle import load_pickle

try:
    from numpy._core import multiarray
except ImportError:
    from numpy.core import multiarray

# The module names Python 2 with numpy 1.x wrote for numpy's reconstruction functions.
_PY2_GLOBAL_NAMES = {
    id(multiarray._reconstruct): b"numpy.core.multiarray\n_reconstruct\n",
    id(multiarray.scalar): b"numpy.core.multiarray\nscalar\n",
}


class _Py2Unicode(str):
    """A Python 2 `unicode` value; plain `str` and `bytes` stand for Python 2 `str`."""


class _Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2 with numpy 1.x did.

    `str` and `bytes` are written as Python 2 `str` (STRING, SHORT_BINSTRING or BINSTRING),
    `_Py2Unicode` as `unicode`, and numpy's reconstruction functions under their old `numpy.core`
    module name.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if self.proto == 0:
            # Python 2's repr of a str, e.g. 'a\\x00', is what protocol 0 writes.
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[_Py2Unicode] = pickle._Pickler.save_str

    def save_global(self, obj, name=None):
        py2_name = _PY2_GLOBAL_NAMES.get(id(obj))
        if py2_name is None:
            super().save_global(obj, name)
        else:
            self.write(pickle.GLOBAL + py2_name)
            self.memoize(obj)


def _py2_dumps(obj, protocol=2):
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def _write_py2_pickle(path, obj, protocol=2):
    path.write_bytes(_py2_dumps(obj, protocol))


def _opcodes(data):
    return [(op.name, arg) for op, arg, _ in pickletools.genops(data)]


def _globals(data):
    """Returns 'module.name' for each GLOBAL and STACK_GLOBAL in a pickle."""
    names, strings = [], []
    for name, arg in _opcodes(data):
        if name == "GLOBAL":
            names.append(arg.replace(" ", "."))
        elif name == "STACK_GLOBAL":
            names.append(".".join(strings[-2:]))
        elif isinstance(arg, str):
            strings.append(arg)
    return names


def test_py2_writer_uses_python2_opcodes_and_numpy_core_names():
    # 24 bytes of array data fit a SHORT_BINSTRING; 800 bytes need a BINSTRING.
    data = _py2_dumps([np.zeros((2, 3), np.float32), np.zeros((10, 10)), np.int64(7), "key"])
    ops = _opcodes(data)
    assert ops[0] == ("PROTO", 2)
    assert set(_globals(data)) == {
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
    }
    op_names = {name for name, _ in ops}
    assert {"SHORT_BINSTRING", "BINSTRING"} <= op_names
    assert not op_names & {"BINBYTES", "SHORT_BINBYTES", "BINUNICODE", "SHORT_BINUNICODE"}
    assert "STRING" in {name for name, _ in _opcodes(_py2_dumps(["key"], protocol=0))}


# Python 2's pickle.dump defaults to protocol 0, which the reference preprocess scripts used.
@pytest.mark.parametrize("protocol", [0, 2])
def test_loads_release_style_files(tmp_path, protocol):
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((3, 10, 1024)).astype(np.float32)
    images = [rng.integers(0, 256, (76, 76, 3), dtype=np.uint8) for _ in range(2)]
    keys = [
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027",
        b"caf\xe9/it's",
        _Py2Unicode("jpg/x"),
    ]
    files = {
        "filenames.pickle": keys,
        "class_info.pickle": [2, 2, np.int64(200)],
        "char-CNN-RNN-embeddings.pickle": embeddings,
        "76images.pickle": images,
        "mixed.pickle": {"shape": (3, 10, 1024), "flag": True, "scale": np.float32(0.5)},
    }
    for name, obj in files.items():
        _write_py2_pickle(tmp_path / name, obj, protocol)

    assert load_pickle(tmp_path / "filenames.pickle") == [
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027",
        "caf\u00e9/it's",
        "jpg/x",
    ]
    class_info = load_pickle(str(tmp_path / "class_info.pickle"))
    assert class_info == [2, 2, 200]
    assert isinstance(class_info[2], np.int64)

    loaded = load_pickle(tmp_path / "char-CNN-RNN-embeddings.pickle")
    assert loaded.dtype == np.float32 and loaded.shape == (3, 10, 1024)
    np.testing.assert_array_equal(loaded, embeddings)

    loaded_images = load_pickle(tmp_path / "76images.pickle")
    assert len(loaded_images) == 2
    for got, want in zip(loaded_images, images, strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)

    mixed = load_pickle(tmp_path / "mixed.pickle")
    assert mixed == {"shape": (3, 10, 1024), "flag": True, "scale": np.float32(0.5)}
    assert mixed["scale"].dtype == np.float32


def test_loads_numpy2_module_names(tmp_path):
    path = tmp_path / "numpy2.pickle"
    path.write_bytes(pickle.dumps([np.eye(3, dtype=np.float32), np.float64(1.5)], protocol=4))
    assert "numpy._core.multiarray._reconstruct" in _globals(path.read_bytes())
    array, scalar = load_pickle(path)
    np.testing.assert_array_equal(array, np.eye(3, dtype=np.float32))
    assert scalar == 1.5 and scalar.dtype == np.float64


@pytest.mark.parametrize(
    ("protocol", "refused"), [(2, "_codecs.encode"), (5, "numpy._core.numeric._frombuffer")]
)
def test_python3_only_array_encodings_are_refused(tmp_path, protocol, refused):
    # Not release formats: Python 3 writes bytes at protocol 2 through `_codecs.encode`, and
    # numpy writes arrays at protocol 5 through `_frombuffer`.
    path = tmp_path / "python3.pickle"
    path.write_bytes(pickle.dumps(np.zeros(3), protocol=protocol))
    assert refused in _globals(path.read_bytes())
    with pytest.raises(RefusedFileError, match=re.escape(refused)):
        load_pickle(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "train" / "filenames.pickle"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))) as info:
        load_pickle(path)
    assert info.value.filename == str(path)


class _Call:
    """Pickles as a call of `fn(*args)`, the shape of every pickle exploit."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _touch_code(marker):
    return f"open({str(marker)!r}, 'w').close()"


# Each payload creates the marker file it is given when unpickled by a plain unpickler.
_PAYLOADS = {
    "os.system": lambda marker: _Call(os.system, f"touch {marker}"),
    "subprocess.Popen": lambda marker: _Call(subprocess.Popen, ["touch", str(marker)]),
    "subprocess.call": lambda marker: _Call(subprocess.call, ["touch", str(marker)]),
    "builtins.exec": lambda marker: _Call(exec, _touch_code(marker)),
    "builtins.eval": lambda marker: _Call(eval, _touch_code(marker)),
    "numpy.testing.runstring": lambda marker: _Call(
        np_testing_utils.runstring, _touch_code(marker), {}
    ),
}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload_name", list(_PAYLOADS))
def test_code_running_payloads_are_refused_and_do_not_run(tmp_path, payload_name, protocol):
    marker = tmp_path / "pwned"
    dumps = _py2_dumps if protocol == 2 else functools.partial(pickle.dumps, protocol=protocol)
    payload = _PAYLOADS[payload_name](marker)
    data = dumps(payload)
    (global_name,) = _globals(data)

    # The payload is live: a plain unpickler runs it.
    result = pickle.loads(data)
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()
    marker.unlink()

    # Behind a real array in a release-looking list, it is still refused before it runs.
    path = tmp_path / "evil.pickle"
    path.write_bytes(dumps([np.zeros(3, np.float32), payload]))
    with pytest.raises(RefusedFileError, match=re.escape(global_name)):
        load_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "stream",
    [
        b"cos\nsystem\n.",
        b"csubprocess\ncall\n.",
        b"cnumpy\nload\n.",
        b"cnumpy.core.multiarray\nfrombuffer\n.",
        b"ccopy_reg\n_reconstructor\n.",
        b"c__builtin__\nset\n.",
        b"cbuiltins\ngetattr\n.",
        b"cnumpy.core.multiarray\n_reconstruct_evil\n.",
    ],
)
def test_other_globals_are_refused(tmp_path, stream):
    path = tmp_path / "refused.pickle"
    path.write_bytes(b"\x80\x02" + stream)
    module, name = stream[1:-2].decode().split("\n")
    with pytest.raises(RefusedFileError, match=re.escape(f"{module}.{name}")):
        load_pickle(path)


def test_line_endings_converted_to_crlf_are_named_and_the_suggested_repair_is_exact(tmp_path):
    # A protocol-0 release pickle as git's core.autocrlf checks it out on Windows.
    original = _py2_dumps(["002.Laysan_Albatross/x", {"k": np.float32(0.5)}], protocol=0)
    path = tmp_path / "filenames.pickle"
    path.write_bytes(original.replace(b"\n", b"\r\n"))
    with pytest.raises(RefusedFileError, match=r"has Windows line endings \(CRLF\)") as error:
        load_pickle(path)
    # The message's one-liner, run as a user would paste it.
    command = re.search(r'conversion with (python -c ".*") FILE', str(error.value)).group(1)
    subprocess.run(f"{command} {path}", shell=True, check=True, executable="/bin/bash")
    assert path.read_bytes() == original
    assert load_pickle(path) == ["002.Laysan_Albatross/x", {"k": np.float32(0.5)}]


def test_binary_pickles_with_crlf_bytes_are_not_taken_for_converted_ones(tmp_path):
    array = np.frombuffer(b"\r\n" * 8, np.uint8)
    path = tmp_path / "binary.pickle"
    _write_py2_pickle(path, [array], protocol=2)
    np.testing.assert_array_equal(load_pickle(path)[0], array)
