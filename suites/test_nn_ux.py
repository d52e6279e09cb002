"""The modules as a torch user expects them (issue 29, item 7): arguments after the channel counts
by name only, a wrong input blamed as the input, the backend "auto" picks in the repr, ACU's init
suggested for another synapse count, ``rfbench.__version__``."""

import re

import pytest
import torch

import rfbench
from rfbench import nn as rn

CLASSES = [(rn.DAUConv2d, "units"), (rn.DAUGaussConv2d, "units"), (rn.ACUConv2d, "synapses"), (rn.NJetConv2d, "order")]


@pytest.mark.parametrize("cls, name", CLASSES)
def test_a_third_positional_argument_is_refused_naming_the_keyword(cls, name):
    with pytest.raises(TypeError) as e:
        cls(3, 16, 3)
    msg = str(e.value)
    assert f"{cls.__name__}(3, 16, 3): arguments after in_channels and out_channels are keyword-only" in msg
    assert f"{cls.__name__}(3, 16, {name}=3)" in msg and "kernel_size" in msg


@pytest.mark.parametrize("cls, name", CLASSES)
def test_a_wrong_input_channel_count_blames_the_input(cls, name):
    m = cls(3, 4, backend="torch-naive")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "input x expected shape [N, 3, H, W] (in_channels=3), got x of shape (2, 5, 8, 8) (5 channels)"
        ),
    ):
        m(torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match=re.escape("got x of shape (3, 8, 8) (3-d input)")):
        m(torch.randn(3, 8, 8))
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("cls, name", CLASSES)
def test_the_repr_names_the_backend_auto_picks(cls, name):
    from rfbench.impls import _registry

    m = cls(3, 4)
    picked = _registry.resolve("auto", m._layer, torch.device("cpu"), torch.float32)
    assert f"backend='auto' -> {picked}" in repr(m)
    m64 = cls(3, 4, dtype=torch.float64)
    assert f"-> {_registry.resolve('auto', m._layer, torch.device('cpu'), torch.float64)}" in repr(m64)
    assert "backend='torch-naive')" in repr(cls(3, 4, backend="torch-naive"))  # named: as given


def test_acu_with_another_synapse_count_suggests_the_circle_init():
    with pytest.raises(ValueError, match=r"got 4; for 4 synapses use init='circle'"):
        rn.ACUConv2d(3, 4, synapses=4)
    assert rn.ACUConv2d(3, 4, synapses=4, init="circle").pos_x.shape == (4,)


def test_learn_sigma_defaults_follow_each_paper_and_are_stated():
    assert not rn.DAUConv2d(2, 2).learn_sigma
    assert rn.DAUGaussConv2d(2, 2).learn_sigma and rn.NJetConv2d(2, 2).learn_sigma
    assert "``learn_sigma``\ndefaults follow each paper" in rn.__doc__


def test_version_from_the_metadata_or_pyproject(monkeypatch):
    from importlib import metadata

    assert re.fullmatch(r"\d+\.\d+\.\d+.*", rfbench.__version__)

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert rfbench._version() == rfbench.__version__  # a checkout: pyproject.toml's version
