"""The Torch7 reader (stackgan_jax.untrusted.torch7) on files written by a small serializer.

The writer below (the format of torch.File:writeObject) is what tests/test_text_char_cnn_rnn.py
writes the released encoder's module objects with.
"""

import dataclasses
import struct

import numpy as np
import pytest

from stackgan_jax.untrusted import RefusedFileError, torch7

# ---------------------------------------------------------------------------------------------
# A minimal Torch7 writer


@dataclasses.dataclass(eq=False)
class Storage:
    data: np.ndarray  # 1-D float32


@dataclasses.dataclass(eq=False)
class Tensor:
    storage: Storage
    shape: tuple[int, ...]


@dataclasses.dataclass(eq=False)
class TorchObject:
    class_name: str
    fields: dict


def float_tensor(array) -> Tensor:
    array = np.ascontiguousarray(array, np.float32)
    return Tensor(Storage(array.reshape(-1)), array.shape)


def shared_tensor(tensor: Tensor) -> Tensor:
    """What Tensor:set does for nn.Module:share: a new tensor on the same storage."""
    return Tensor(tensor.storage, tensor.shape)


def nn_module(class_name, **fields) -> TorchObject:
    return TorchObject(class_name, {"train": False, **fields})


class T7Writer:
    """torch.File binary writeObject: int32 tags, 8-byte longs, float64 numbers."""

    NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5

    def __init__(self, file):
        self.file = file
        self.indices = {}

    def pack(self, fmt, *values):
        self.file.write(struct.pack("<" + fmt, *values))

    def write_string(self, text: str):
        data = text.encode()
        self.pack("i", len(data))
        self.file.write(data)

    def write(self, obj):
        if obj is None:
            self.pack("i", self.NIL)
        elif isinstance(obj, bool):
            self.pack("ii", self.BOOLEAN, int(obj))
        elif isinstance(obj, (int, float)):
            self.pack("id", self.NUMBER, obj)
        elif isinstance(obj, str):
            self.pack("i", self.STRING)
            self.write_string(obj)
        else:
            is_torch = isinstance(obj, (Storage, Tensor, TorchObject))
            self.pack("i", self.TORCH if is_torch else self.TABLE)
            if id(obj) in self.indices:
                self.pack("i", self.indices[id(obj)])
                return
            self.indices[id(obj)] = len(self.indices) + 1
            self.pack("i", self.indices[id(obj)])
            if is_torch:
                self.write_torch(obj)
            else:
                self.write_table(obj)

    def write_table(self, table):
        items = enumerate(table, start=1) if isinstance(table, list) else table.items()
        items = list(items)
        self.pack("i", len(items))
        for key, value in items:
            self.write(key)
            self.write(value)

    def write_torch(self, obj):
        self.write_string("V 1")
        if isinstance(obj, Storage):
            self.write_string("torch.FloatStorage")
            self.pack("q", obj.data.size)
            self.file.write(obj.data.astype("<f4").tobytes())
        elif isinstance(obj, Tensor):
            self.write_string("torch.FloatTensor")
            strides = np.cumprod((1, *obj.shape[:0:-1]))[::-1]
            self.pack("i", len(obj.shape))
            self.pack(f"{len(obj.shape)}q", *obj.shape)
            self.pack(f"{len(obj.shape)}q", *strides)
            self.pack("q", 1)  # 1-based storage offset
            self.write(obj.storage)
        else:
            self.write_string(obj.class_name)
            self.write(obj.fields)


def write_t7(path, obj):
    with open(path, "wb") as file:
        T7Writer(file).write(obj)


# ---------------------------------------------------------------------------------------------
# The reader


def test_reads_tables_tensors_and_modules(tmp_path):
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    linear = nn_module("nn.Linear", weight=float_tensor(weight), bias=float_tensor([1, 2]))
    dropout = nn_module("nn.Dropout", p=0.5, v2=True)
    write_t7(tmp_path / "net.t7", {"net": nn_module("nn.Sequential", modules=[linear, dropout])})
    net = torch7.load_t7(tmp_path / "net.t7")[b"net"]
    assert torch7.typename(net) == "nn.Sequential" and torch7.typename([]) == "list"
    assert [torch7.typename(m) for m in torch7.children(net)] == ["nn.Linear", "nn.Dropout"]
    found = torch7.single_module(net, "nn.Linear")
    np.testing.assert_array_equal(found["weight"], weight)
    assert torch7.modules_of_type(net, "nn.Tanh") == []
    torch7.check_fields(torch7.single_module(net, "nn.Dropout"), p=0.5)


def test_reads_lua_arrays_as_tables_when_asked(tmp_path):
    write_t7(tmp_path / "captions.t7", {"raw_txt": ["a bird", "ünïcödé"]})
    table = torch7.load_t7(tmp_path / "captions.t7", lua_lists=False, decode_strings=True)
    assert dict(table["raw_txt"]) == {1: "a bird", 2: "ünïcödé"}
    assert torch7.lua_list(table["raw_txt"]) == ["a bird", "ünïcödé"]


def test_module_tree_errors_say_what_does_not_fit(tmp_path):
    tanh = nn_module("nn.Tanh")
    net = nn_module("nn.Sequential", modules=[tanh, tanh, nn_module("nn.Dropout", p=0.1)])
    write_t7(tmp_path / "net.t7", net)
    net = torch7.load_t7(tmp_path / "net.t7")
    with pytest.raises(RefusedFileError, match="expected one nn.Tanh in the encoder, found 2"):
        torch7.single_module(net, "nn.Tanh")
    with pytest.raises(RefusedFileError, match="nn.Tanh has no modules list"):
        torch7.children(torch7.children(net)[0])
    with pytest.raises(RefusedFileError, match=r"nn.Dropout.p is 0.1, the reference has 0.5"):
        torch7.check_fields(torch7.children(net)[2], p=0.5)


def test_rejects_files_that_are_not_torch7(tmp_path):
    (tmp_path / "empty.t7").write_bytes(b"")
    with pytest.raises(RefusedFileError, match="empty.t7 is not a Torch7 file"):
        torch7.load_t7(tmp_path / "empty.t7")
    (tmp_path / "text.t7").write_bytes(b"not a Torch7 file at all")
    with pytest.raises(RefusedFileError, match="text.t7 is not a Torch7 file"):
        torch7.load_t7(tmp_path / "text.t7")
