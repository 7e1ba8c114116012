"""char-CNN-RNN: character mapping, Flax vs the Torch7 modules' maths, and the .t7 converter.

The converter is tested on real Torch7 binaries written by the small serializer of
tests/test_untrusted_torch7.py (the format of torch.File:writeObject), holding the module objects
of HybridCNNLong.lua and FixedGRU.lua, with nngraph's module order derived from the graphs those
files build.
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from test_untrusted_torch7 import (
    Tensor,
    TorchObject,
    float_tensor,
    nn_module,
    shared_tensor,
    write_t7,
)

from stackgan_jax.text import char_cnn_rnn, char_cnn_rnn_t7
from stackgan_jax.untrusted import RefusedFileError
from stackgan_jax.weights import MissingWeightsError

# The alphabet string of txt2img_demo.lua / get_embedding.lua, written out independently.
LUA_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
STEPS = 18
SMALL_CONV_FEATURES = (12, 10, 8)  # keeps the written .t7 files small
SMALL_EMBEDDING = 6


def lua_one_hot(text: str) -> np.ndarray:
    """The one-hot document the reference builds: dict[ch] = i in alphabet order, byte by byte."""
    lua_dict = {}
    for i in range(1, len(LUA_ALPHABET) + 1):
        lua_dict[LUA_ALPHABET[i - 1].encode()] = i
    data = text.encode("utf-8")
    one_hot = np.zeros((201, len(LUA_ALPHABET)))
    for t in range(1, 202):
        ix = lua_dict.get(data[t - 1 : t])
        if ix:
            one_hot[t - 1, ix - 1] = 1
    return one_hot


def random_torch_weights(rng, conv_features, embedding_dim):
    """Weights in Torch7 layout: TemporalConvolution [out, kW * in], Linear [out, in]."""
    weights = {}
    in_features = len(LUA_ALPHABET)
    for name, out_features in zip(("conv1", "conv2", "conv3"), conv_features, strict=True):
        fan_in = 4 * in_features
        weights[f"{name}.weight"] = rng.normal(0, fan_in**-0.5, (out_features, fan_in))
        weights[f"{name}.bias"] = rng.normal(0, 0.1, out_features)
        in_features = out_features
    for name in ("i2h", "i2h_update", "i2h_reset", "h2h", "h2h_update", "h2h_reset"):
        weights[f"gru.{name}.weight"] = rng.normal(0, in_features**-0.5, (in_features,) * 2)
        weights[f"gru.{name}.bias"] = rng.normal(0, 0.1, in_features)
    weights["projection.weight"] = rng.normal(0, in_features**-0.5, (embedding_dim, in_features))
    weights["projection.bias"] = rng.normal(0, 0.1, embedding_dim)
    return {name: value.astype(np.float32) for name, value in weights.items()}


def torch_maths_forward(weights, text, dropout_scale=1.0):
    """float64 re-computation of the Torch7 modules on one caption."""
    w = {name: value.astype(np.float64) for name, value in weights.items()}
    x = lua_one_hot(text)
    for index, conv in enumerate(("conv1", "conv2", "conv3")):
        # TemporalConvolution: each output frame sees kW = 4 input frames, concatenated.
        frames = np.stack([x[t : t + 4].reshape(-1) for t in range(len(x) - 3)])
        x = frames @ w[f"{conv}.weight"].T + w[f"{conv}.bias"]
        x = np.where(x > 1e-6, x, 0.0)  # nn.Threshold()
        if index < 2:  # TemporalMaxPooling(3, 3)
            x = x[: len(x) // 3 * 3].reshape(len(x) // 3, 3, -1).max(axis=1)
    assert len(x) == STEPS

    def linear(name, v):
        return w[f"gru.{name}.weight"] @ v + w[f"gru.{name}.bias"]

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    hids = [np.tanh(linear("i2h", x[0]))]
    for step in range(1, STEPS):
        update = sigmoid(linear("i2h_update", x[step]) + linear("h2h_update", hids[-1]))
        reset = sigmoid(linear("i2h_reset", x[step]) + linear("h2h_reset", hids[-1]))
        candidate = np.tanh(linear("i2h", x[step]) + linear("h2h", reset * hids[-1]))
        hids.append(update * candidate + (1 - update) * hids[-1])
    hid = hids[0]
    for h in hids[1:]:
        hid = hid + h
    hid = hid * (1.0 / STEPS)
    return w["projection.weight"] @ (hid * dropout_scale) + w["projection.bias"]


CAPTIONS = [
    "this bird has a white belly, a grey back and a short, pointed orange beak.",
    "A small bird -- with a RED crown; (and) wings: 100% black!?",
    "ünïcödé café 🐦\ttab",
    "",
]


# ---------------------------------------------------------------------------------------------
# Character mapping


def test_char_columns_follow_the_lua_lookup():
    text = "".join(LUA_ALPHABET) + "ABC é\t🐦~"
    columns = char_cnn_rnn.char_columns(text)
    expected = [int(np.argmax(row)) if row.any() else -1 for row in lua_one_hot(text)]
    assert columns.tolist() == expected[: len(columns)]
    # The repeated '-' always takes its second place; column 36 is never used.
    assert char_cnn_rnn.char_columns("-").tolist() == [59]
    assert 36 not in columns
    # Upper case, tab and every byte of a multi-byte character map to no column.
    assert char_cnn_rnn.char_columns("Aé\t").tolist() == [-1, -1, -1, -1]


def test_char_mapping_options():
    assert char_cnn_rnn.char_columns("Ab", lowercase=True).tolist() == [0, 1]
    space = LUA_ALPHABET.index(" ")
    assert char_cnn_rnn.char_columns("aé🐦", unknown_as_space=True).tolist() == [0, space, space]
    assert char_cnn_rnn.char_columns("É", lowercase=True).tolist() == [-1, -1]


def test_tokenize_truncates_to_201_bytes_with_a_warning():
    with pytest.warns(UserWarning, match="1 text.*201 bytes"):
        columns = char_cnn_rnn.tokenize(["a" * 250, "b" * 201])
    assert [len(c) for c in columns] == [201, 201]


# ---------------------------------------------------------------------------------------------
# Flax forward


@pytest.fixture(scope="module")
def full_size_weights():
    return random_torch_weights(np.random.default_rng(0), (384, 512, 512), 1024)


def test_flax_matches_torch_maths_at_full_size(full_size_weights):
    params = char_cnn_rnn.flax_params_from_torch(full_size_weights)
    model = char_cnn_rnn.model_for_params(params)
    assert (model.conv_features, model.embedding_dim) == ((384, 512, 512), 1024)
    char_ids = np.full((len(CAPTIONS), 201), -1, np.int32)
    for row, columns in enumerate(char_cnn_rnn.tokenize(CAPTIONS)):
        char_ids[row, : len(columns)] = columns
    actual = np.asarray(model.apply(params, char_ids))
    expected = np.stack([torch_maths_forward(full_size_weights, text) for text in CAPTIONS])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The reference's module objects, in nngraph's order


@dataclasses.dataclass(eq=False)
class Node:
    """An nngraph node: the module called and its input nodes, in call order."""

    module: TorchObject | None
    inputs: tuple = ()


def call(module, *inputs):
    return Node(module, inputs)


def g_module(output: Node) -> TorchObject:
    """nn.gModule: `modules` in topsort order, i.e. graph.Node:dfs post-order from the output."""
    modules, visited = [], set()

    def visit(node):
        if id(node) not in visited:
            visited.add(id(node))
            for parent in node.inputs:
                visit(parent)
            if node.module is not None:
                modules.append(node.module)

    visit(output)
    return nn_module("nn.gModule", modules=modules)


def linear(weight: Tensor, bias: Tensor) -> TorchObject:
    return nn_module("nn.Sequential", modules=[nn_module("nn.Linear", weight=weight, bias=bias)])


def fixed_gru(weights) -> TorchObject:
    """FixedGRU.rnn(18, avg=1, dim): step 1 is tanh(i2h(x)); later steps share the weights."""
    first = {
        role: (
            float_tensor(weights[f"gru.{role}.weight"]),
            float_tensor(weights[f"gru.{role}.bias"]),
        )
        for role in ("i2h", "i2h_update", "i2h_reset", "h2h", "h2h_update", "h2h_reset")
    }

    def layer(role):
        weight, bias = first[role]
        return linear(shared_tensor(weight), shared_tensor(bias))

    def module(name, **fields):
        return nn_module(f"nn.{name}", **fields)

    def summed(activation, x_role, x, h_role, h):
        """activation(x_role(x) + h_role(h)), the shape of every FixedGRU gate."""
        return call(
            module(activation),
            call(module("CAddTable"), call(layer(x_role), x), call(layer(h_role), h)),
        )

    inputs = [call(module("Identity")) for _ in range(STEPS)]
    hids = [call(module("Tanh"), call(layer("i2h"), inputs[0]))]
    for x in inputs[1:]:
        previous = hids[-1]
        update = summed("Sigmoid", "i2h_update", x, "h2h_update", previous)
        reset = summed("Sigmoid", "i2h_reset", x, "h2h_reset", previous)
        gated_hidden = call(module("CMulTable"), reset, previous)
        candidate = summed("Tanh", "i2h", x, "h2h", gated_hidden)
        zh = call(module("CMulTable"), update, candidate)
        one_minus_update = call(
            module("AddConstant", constant_scalar=1, inplace=False),
            call(module("MulConstant", constant_scalar=-1, inplace=False), update),
        )
        zhm1 = call(module("CMulTable"), one_minus_update, previous)
        hids.append(call(module("CAddTable"), zh, zhm1))
    hid = hids[0]
    for h in hids[1:]:
        hid = call(module("CAddTable"), hid, h)
    return g_module(call(module("MulConstant", constant_scalar=1.0 / STEPS, inplace=False), hid))


def hybrid_cnn_long(weights, dropout_p, dropout_v2) -> TorchObject:
    """HybridCNNLong.cnn(70, emb_dim, dropout, avg=1, cnn_dim) with FixedGRU as the RNN."""
    cnn_layers = []
    in_features = len(LUA_ALPHABET)
    for index, conv in enumerate(("conv1", "conv2", "conv3")):
        out_features = len(weights[f"{conv}.bias"])
        cnn_layers.append(
            nn_module(
                "nn.TemporalConvolution",
                inputFrameSize=in_features,
                outputFrameSize=out_features,
                kW=4,
                dW=1,
                weight=float_tensor(weights[f"{conv}.weight"]),
                bias=float_tensor(weights[f"{conv}.bias"]),
            )
        )
        cnn_layers.append(nn_module("nn.Threshold", threshold=1e-6, val=0, inplace=False))
        if index < 2:
            cnn_layers.append(nn_module("nn.TemporalMaxPooling", kW=3, dW=3))
        in_features = out_features
    document = call(nn_module("nn.Identity"))
    h1 = call(
        nn_module("nn.SplitTable", dimension=2),
        call(nn_module("nn.Sequential", modules=cnn_layers), document),
    )
    r2 = call(fixed_gru(weights), h1)
    dropout = nn_module("nn.Dropout", p=dropout_p, v2=dropout_v2)
    projection = nn_module(
        "nn.Linear",
        weight=float_tensor(weights["projection.weight"]),
        bias=float_tensor(weights["projection.bias"]),
    )
    return g_module(call(projection, call(dropout, r2)))


@pytest.fixture(scope="module")
def small_weights():
    return random_torch_weights(np.random.default_rng(1), SMALL_CONV_FEATURES, SMALL_EMBEDDING)


# ---------------------------------------------------------------------------------------------
# The converter


def test_nngraph_order_puts_gru_linears_where_the_converter_expects(small_weights):
    gru = fixed_gru(small_weights)
    kinds = [m.class_name for m in gru.fields["modules"]]
    assert len(kinds) == STEPS + 2 + 18 * (STEPS - 1) + (STEPS - 1) + 1
    # The indices at which martinduartemore/char_cnn_rnn_pytorch's extract_weights.py reads the
    # released CUB encoder: i2h 1, i2h_update 4, h2h_update 5, i2h_reset 9, h2h_reset 10, h2h 14
    # (8 is step 2's copy of i2h); and cnn 1, rnn 3, projection 5 in the outer gModule.
    wrappers = [i for i, kind in enumerate(kinds) if kind == "nn.Sequential"]
    assert wrappers[:7] == [1, 4, 5, 8, 9, 10, 14]
    outer = hybrid_cnn_long(small_weights, 0.0, True).fields["modules"]
    assert [m.class_name for m in outer] == [
        "nn.Identity",
        "nn.Sequential",
        "nn.SplitTable",
        "nn.gModule",
        "nn.Dropout",
        "nn.Linear",
    ]


@pytest.mark.parametrize(("dropout_p", "dropout_v2"), [(0.0, True), (0.5, False)])
def test_converts_a_torch7_file(tmp_path, small_weights, dropout_p, dropout_v2):
    t7_path, npz_path = tmp_path / "encoder.t7", tmp_path / "encoder.npz"
    snapshot = {"protos": {"enc_doc": hybrid_cnn_long(small_weights, dropout_p, dropout_v2)}}
    write_t7(t7_path, snapshot)

    params = char_cnn_rnn_t7.convert(t7_path, npz_path)["params"]
    conv2 = small_weights["conv2.weight"].reshape(SMALL_CONV_FEATURES[1], 4, -1)
    np.testing.assert_array_equal(params["conv2"]["kernel"], conv2.transpose(1, 2, 0))
    for role in ("i2h", "i2h_update", "i2h_reset", "h2h", "h2h_update", "h2h_reset"):
        np.testing.assert_array_equal(
            params["gru"][role]["kernel"], small_weights[f"gru.{role}.weight"].T
        )

    encoder = char_cnn_rnn.load_char_cnn_rnn(str(npz_path), max_batch=4)
    assert (encoder.name, encoder.dim) == ("char_cnn_rnn", SMALL_EMBEDDING)
    scale = 1.0 if dropout_v2 else 1.0 - dropout_p
    expected = np.stack([torch_maths_forward(small_weights, t, scale) for t in CAPTIONS])
    np.testing.assert_allclose(encoder.encode(CAPTIONS), expected, rtol=1e-5, atol=1e-5)


def module_of(encoder, class_name):
    """The first module of `encoder` (a hybrid_cnn_long gModule) of torch class `class_name`."""
    return next(m for m in encoder.fields["modules"] if m.class_name == class_name)


def swap_gru_updates(encoder):
    gru_modules = module_of(encoder, "nn.gModule").fields["modules"]
    gru_modules[4], gru_modules[5] = gru_modules[5], gru_modules[4]  # i2h_update <-> h2h_update
    return {"protos": {"enc_doc": encoder}}


def drop_gru_average(encoder):
    # The final MulConstant(1/18) of avg = 1.
    module_of(encoder, "nn.gModule").fields["modules"].pop()
    return {"protos": {"enc_doc": encoder}}


def add_cnn_pooling(encoder):
    cnn = module_of(encoder, "nn.Sequential")
    cnn.fields["modules"].append(nn_module("nn.TemporalMaxPooling", kW=3, dW=2))  # flowers-like
    return encoder  # a bare gModule is accepted too


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param(swap_gru_updates, "share weights", id="gru_in_another_module_order"),
        pytest.param(drop_gru_average, "average", id="gru_that_keeps_only_its_last_state"),
        pytest.param(add_cnn_pooling, "CNN layers", id="cnn_with_another_layer_table"),
    ],
)
def test_rejects_another_network(tmp_path, small_weights, change, error):
    write_t7(tmp_path / "changed.t7", change(hybrid_cnn_long(small_weights, 0.0, True)))
    with pytest.raises(RefusedFileError, match=error):
        char_cnn_rnn_t7.read_char_cnn_rnn_t7(tmp_path / "changed.t7")


def test_convert_cli(tmp_path, small_weights):
    write_t7(tmp_path / "in.t7", {"protos": {"enc_doc": hybrid_cnn_long(small_weights, 0.0, True)}})
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stackgan_jax.text.convert_t7",
            f"--input={tmp_path / 'in.t7'}",
            f"--output={tmp_path / 'out.npz'}",
        ],
        check=True,
    )
    with np.load(tmp_path / "out.npz") as arrays:
        np.testing.assert_array_equal(
            arrays["projection/kernel"], small_weights["projection.weight"].T
        )


# ---------------------------------------------------------------------------------------------
# The encoder


@pytest.fixture(scope="module")
def small_encoder(tmp_path_factory, small_weights):
    path = tmp_path_factory.mktemp("char_cnn_rnn") / "small.npz"
    char_cnn_rnn.save_params(path, char_cnn_rnn.flax_params_from_torch(small_weights))
    return char_cnn_rnn.load_char_cnn_rnn(str(path), max_batch=4)


def test_edge_cases_give_finite_vectors(small_encoder):
    texts = ["", "   \t ", "çà et là — 鳥 🐦", "red " * 100]
    with pytest.warns(UserWarning, match="1 text.*truncated"):
        embeddings = small_encoder.encode(texts)
    assert embeddings.shape == (4, SMALL_EMBEDDING) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    assert small_encoder.encode([]).shape == (0, SMALL_EMBEDDING)


def test_lowercase_option_changes_upper_case_captions_only(tmp_path, small_weights):
    path = tmp_path / "small.npz"
    char_cnn_rnn.save_params(path, char_cnn_rnn.flax_params_from_torch(small_weights))
    lowercasing = char_cnn_rnn.load_char_cnn_rnn(str(path), lowercase=True, max_batch=4)
    upper, lower = lowercasing.encode(["A RED BIRD", "a red bird"])
    np.testing.assert_allclose(upper, lower, atol=1e-6)
    np.testing.assert_allclose(
        lower, torch_maths_forward(small_weights, "a red bird"), rtol=1e-5, atol=1e-5
    )


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(MissingWeightsError, match="convert_t7"):
        char_cnn_rnn.load_char_cnn_rnn(None)
    with pytest.raises(MissingWeightsError, match="nowhere.npz"):
        char_cnn_rnn.load_char_cnn_rnn(str(tmp_path / "nowhere.npz"))
    (tmp_path / "encoder.t7").write_bytes(b"")
    with pytest.raises(ValueError, match="convert it first"):
        char_cnn_rnn.load_char_cnn_rnn(str(tmp_path / "encoder.t7"))
