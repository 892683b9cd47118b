"""The backbones' names and their speed as measured here, readable without importing torch
(the CLI builds its --backbone help from them at start-up). core.vision.backbones builds its
registry (BACKBONE_SPECS) from this one list."""

from __future__ import annotations

import json
from typing import Any

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50")
SPEED_RESOURCE = "backbone_speed.json"  # written by benchmarks/backbones.py --write


def measured_speed() -> dict[str, Any]:
    """The img/s of each backbone measured here (core/resources/backbone_speed.json, written
    by benchmarks/backbones.py --write, with the date and CPU); {} when not measured."""
    from core.resources import resource_path

    try:
        return dict(json.loads(resource_path(SPEED_RESOURCE).read_text("utf-8")))
    except (OSError, ValueError):
        return {}


def backbone_help() -> str:
    """The --backbone help: every backbone with its size, input resolution and speed as
    measured here (the speed resource; read without importing timm or torchvision, so the
    CLI starts fast). A backbone not measured is listed by name."""
    speed = measured_speed()
    rows = speed.get("backbones") or {}
    parts = []
    for name in BACKBONES:
        m = rows.get(name)
        if m:
            parts.append(
                f"{name} ({m['parameters'] / 1e6:.1f} M parameters, {m['input_px']} px, "
                f"{m['images_per_second']:.1f} img/s)"
            )
        else:
            parts.append(f"{name} (not measured here)")
    where = f"; img/s measured {speed.get('date')} on {speed.get('cpu')}" if rows else ""
    return " | ".join(parts) + where
