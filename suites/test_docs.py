"""The examples in the docstrings of the public API (``rfbench``, its functions and ``rfbench.nn``) run
and print what they say."""

import doctest

import pytest

import rfbench
from rfbench import impls
from rfbench.impls import nn


@pytest.mark.parametrize("module", [rfbench, impls, nn], ids=lambda m: m.__name__)
def test_docstring_examples_run(module, one_thread):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed, result
