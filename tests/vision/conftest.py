"""Fixtures the vision tests share."""

from __future__ import annotations

import pytest

from core.vision.backbones import Backbone, create_backbone


@pytest.fixture(scope="session")
def lite0() -> Backbone:
    """EfficientNet-Lite0 with its packaged ImageNet weights (loaded once)."""
    return create_backbone("efficientnet_lite0")
