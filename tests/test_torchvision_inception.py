"""torchvision's Inception-v3 in Flax, and the dfgan FID protocol, against torchvision and DF-GAN.

The golden arrays were made by tests/fixtures/make_dfgan_golden.py: torchvision 0.20.1 on a
`torchvision.models.inception_v3` state dict with random weights and measured batch-norm
statistics (`torchvision_inception_random.pth`, read here without torch), fed by DF-GAN's own
`InceptionV3` wrapper and `calculate_fid` transforms, and the FID by DF-GAN's own
`calculate_frechet_distance`.
"""

import pathlib
import sys

import jax
import numpy as np
import pytest
from conftest import fixture_script

from stackgan_jax.metrics import (
    fid,
    inception_features,
    inception_input,
    inception_weights,
    torchvision_inception,
)
from stackgan_jax.untrusted import RefusedFileError, torch_pickle
from stackgan_jax.weights import MissingWeightsError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
WEIGHTS = FIXTURES / "torchvision_inception_random.pth"
BATCH_SIZE = 16


@pytest.fixture(scope="module")
def golden():
    """The golden images, and the arrays make_dfgan_golden.py computed from them."""
    script = fixture_script("make_dfgan_golden")
    images = script.golden_images()
    with np.load(FIXTURES / "dfgan_golden.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    assert list(arrays["names"]) == list(images), "golden_images() changed since the fixture"
    assert list(arrays["sha256"]) == [script.fingerprint(i) for i in images.values()]
    return script, images, arrays


@pytest.fixture(scope="module")
def outputs(golden):
    """The Flax network's outputs on every golden image fed in the dfgan convention."""
    _, images, _ = golden
    inputs = np.concatenate(
        [
            inception_input.to_inception_input(
                image[None], convention=inception_input.DFGAN_CONVENTION
            )
            for image in images.values()
        ]
    )
    variables = torchvision_inception.load_variables(WEIGHTS)
    apply = jax.jit(torchvision_inception.TorchvisionInception().apply)
    padded = inception_features.pad_to(inputs, BATCH_SIZE)
    result = jax.device_get(apply(variables, padded))
    return inputs, {name: value[: len(inputs)] for name, value in result.items()}


def _relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def test_the_dfgan_convention_feeds_as_dfgan_does(golden, outputs):
    _, _, arrays = golden
    inputs, _ = outputs
    stride = 13
    assert np.abs(inputs[:, ::stride, ::stride] - arrays["inputs"]).max() <= 2e-6
    # DF-GAN applies torchvision's transform_input formula to [0, 1] pixels, not to
    # ImageNet-normalised ones: the network sees about [-0.19, 0.43], not [-1, 1].
    assert arrays["inputs"].min() > -0.19 and arrays["inputs"].max() < 0.43
    # The generator's floats go in unrounded (DF-GAN does not write PNGs first).
    assert not inception_input.DFGAN_CONVENTION.quantize


def test_network_matches_torchvision(golden, outputs):
    _, _, arrays = golden
    _, actual = outputs
    assert actual["logits"].shape == arrays["logits"].shape == (15, 1000)
    assert arrays["logits"].std(axis=1).min() > 1
    assert _relative_error(actual["logits"], arrays["logits"]) <= 1e-4
    assert actual["mixed_6e"].shape == (15, 17, 17, 768)
    stride = fixture_script("make_dfgan_golden").MIXED_6E_CHANNEL_STRIDE
    mixed_6e = actual["mixed_6e"][:2, ..., ::stride]
    assert _relative_error(mixed_6e, arrays["mixed_6e"]) <= 1e-4
    assert actual["pool"].shape == (15, 2048)
    assert _relative_error(actual["pool"], arrays["features"]) <= 1e-4
    assert "torch" not in sys.modules


def test_dfgan_protocol_gives_dfgans_features_and_fid(golden):
    script, images, arrays = golden
    with pytest.warns(UserWarning, match="not comparable"):  # random weights, not the release
        network = inception_weights.load_fid_inception(WEIGHTS, "dfgan")
    assert network.protocol == "dfgan" and network.path == str(WEIGHTS)
    assert network.convention == inception_input.DFGAN_CONVENTION
    # Sizes 427x640, 299, 256, 128, 64, uint8 and float, in one list.
    features = inception_features.fid_features(
        network, list(images.values()), batch_size=BATCH_SIZE
    )
    assert _relative_error(features, arrays["features"]) <= 1e-4
    count = len(script.SET_A)
    actual = fid.fid_from_features(features[:count], features[count:])
    assert actual == pytest.approx(float(arrays["fid"]), rel=1e-3)
    # Fed in pytorch-fid's convention, the same network is far off: the test sees the feeding.
    pytorch_fed = inception_features.pool3_features(
        network.params,
        list(images.values()),
        inception_input.PYTORCH_FID_CONVENTION,
        batch_size=BATCH_SIZE,
        protocol="dfgan",
    )
    assert _relative_error(pytorch_fed, arrays["features"]) > 0.05
    assert "torch" not in sys.modules


def test_state_dict_maps_onto_the_flax_variables():
    state = torch_pickle.load_state_dict(WEIGHTS)
    # A whole torchvision state dict: the auxiliary classifier and step counters are ignored.
    assert any(name.startswith("AuxLogits.") for name in state)
    assert "Mixed_6e.branch7x7_1.bn.num_batches_tracked" in state
    variables = torchvision_inception.params_from_state_dict(state)
    conv = variables["params"]["mixed_7"]["tower"]["conv"]
    np.testing.assert_array_equal(
        conv["conv"]["kernel"], state["Mixed_6e.branch7x7_1.conv.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(conv["bn"]["scale"], state["Mixed_6e.branch7x7_1.bn.weight"])
    stats = variables["batch_stats"]["mixed_7"]["tower"]["conv"]["bn"]
    np.testing.assert_array_equal(stats["mean"], state["Mixed_6e.branch7x7_1.bn.running_mean"])
    np.testing.assert_array_equal(stats["var"], state["Mixed_6e.branch7x7_1.bn.running_var"])
    # The batch norms are not the defaults, so the golden tests check they are used.
    assert np.abs(stats["mean"]).max() > 0.1 and np.abs(stats["var"] - 1).max() > 0.1
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.weight"].T)


def test_refuses_a_state_dict_that_does_not_fit():
    state = torch_pickle.load_state_dict(WEIGHTS)
    broken = dict(state)
    del broken["Mixed_7c.branch_pool.bn.running_var"]
    broken["head.weight"] = np.zeros(3, np.float32)
    broken["Mixed_5b.branch5x5_2.conv.weight"] = state["Mixed_5b.branch3x3dbl_2.conv.weight"]
    with pytest.raises(RefusedFileError) as error:
        torchvision_inception.params_from_state_dict(broken)
    message = str(error.value)
    assert "missing Mixed_7c.branch_pool.bn.running_var" in message
    assert "unexpected head.weight" in message
    assert "Mixed_5b.branch5x5_2.conv.weight: shape (96, 64, 3, 3) != (64, 48, 5, 5)" in message
    # pytorch-fid's file has torchvision's names but a 1008-way fc and no AuxLogits.
    with pytest.raises(RefusedFileError, match=r"fc\.weight: shape \(1008, 2048\)"):
        torchvision_inception.load_variables(FIXTURES / "pytorch_fid_random.pth")


def test_missing_weights_name_the_file_its_source_and_the_flag(tmp_path):
    with pytest.raises(
        MissingWeightsError,
        match=r"inception_v3_google-0cc3c7bd\.pth.*~/\.cache/torch/hub/checkpoints/",
    ):
        torchvision_inception.load_variables(tmp_path / "nope.pth")
    with pytest.raises(
        MissingWeightsError,
        match=r"dfgan.*inception_v3_google-0cc3c7bd\.pth.*hub/checkpoints.*--fid_weights",
    ):
        inception_weights.load_fid_inception(None, "dfgan")
    with pytest.raises(MissingWeightsError, match=r"nope\.pth \(--fid_weights.*0cc3c7bd"):
        inception_weights.load_fid_inception(tmp_path / "nope.pth", "dfgan")


def test_a_file_of_another_protocol_is_refused():
    with pytest.raises(ValueError, match="network of the dfgan FID protocol, not of pytorch-fid"):
        inception_weights.load_fid_inception(WEIGHTS, "pytorch-fid")
    # Refused before the digest is even looked at.
    with pytest.raises(ValueError, match="network of the pytorch-fid FID protocol, not of dfgan"):
        inception_weights.load_fid_inception(FIXTURES / "pytorch_fid_random.pth", "dfgan")
    with pytest.raises(ValueError, match="unknown FID protocol 'tf'"):
        inception_weights.load_fid_inception(WEIGHTS, "tf")
    # Unset, the protocol is the file's.
    with pytest.warns(UserWarning, match="not comparable"):
        assert inception_weights.load_fid_inception(WEIGHTS).protocol == "dfgan"


def test_dfgan_reference_statistics_load(tmp_path):
    # DF-GAN's bird_val256_FIDK0.npz and DM-GAN's bird_val.npz hold `mu` and `sigma`.
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(4), np.eye(4)
    np.savez(tmp_path / "bird_val256_FIDK0.npz", mu=mu.astype(np.float32), sigma=sigma)
    loaded_mu, loaded_sigma = fid.load_statistics(tmp_path / "bird_val256_FIDK0.npz")
    assert loaded_mu.dtype == np.float64 and np.allclose(loaded_mu, mu, atol=1e-6)
    np.testing.assert_array_equal(loaded_sigma, sigma)
