"""Fixtures the search tests share."""

from __future__ import annotations

import pytest

from tests.helpers import IMAGE_SIZE


@pytest.fixture(scope="session")
def encoder():
    """The default backbone at the search tests' small input size, on the CPU (loaded once)."""
    from core.search.encoders import create_image_encoder

    return create_image_encoder(image_size=IMAGE_SIZE, device="cpu")
