"""Shared fixtures: small synthetic images (no ../shared needed) and one loaded codec."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def codec():
    import torch

    from neuralcodec.codec import Codec

    torch.set_num_threads(1)
    return Codec()
