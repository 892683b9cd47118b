"""Saved runs: find them, load their trained model, score them on any labelled folder."""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.io import read_json, read_jsonl
from core.metrics import ClassificationResult, classification_result
from core.vision.backbones import Backbone, create_backbone
from core.vision.features import make_loader
from core.vision.inference import softmax_np
from core.vision.train import (
    CheckpointError,
    Hooks,
    RunFiles,
    SceneClassifier,
    TrainConfig,
    check_device,
    evaluate,
    load_checkpoint,
    mirror_average,
)
from core.vision.train.cross_model import CrossClassifier, build_cross

log = logging.getLogger(__name__)
_SCORE_KEYS = frozenset(ClassificationResult.__dataclass_fields__)


def scores_of(result: dict[str, Any] | None) -> ClassificationResult | None:
    """The test scores a run's result (result.json, or what `run_training` returns) holds:
    accuracy, per-class figures, confusion matrix and the report text. None: no result yet."""
    if result is None:
        return None
    return ClassificationResult.from_dict({k: v for k, v in result.items() if k in _SCORE_KEYS})


@dataclass
class RunInfo:
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    result: dict[str, Any] | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        return self.result is not None and len(self.metrics) >= int(self.config.get("epochs", 0))

    @property
    def resumable(self) -> bool:
        return RunFiles(self.path).last.exists() and not self.finished

    @property
    def selected_by(self) -> str | None:
        """ "validation" for runs that chose their checkpoint on validation; None for runs
        written before runs held out a validation set (chosen on the test set)."""
        return (self.result or {}).get("selected_by") or self.config.get("selected_by")

    @property
    def selected_by_text(self) -> str:
        return self.selected_by or "unknown (old run)"

    @property
    def scores(self) -> ClassificationResult | None:
        return scores_of(self.result)

    @property
    def accuracy(self) -> float | None:
        """Test accuracy of the reported checkpoint (result.json; None until the run is scored
        after training: epochs see validation only)."""
        if self.result is not None:
            return self.result.get("accuracy")
        return None

    @property
    def state(self) -> str:
        return "finished" if self.finished else ("resumable" if self.resumable else "empty")

    def row(self) -> dict[str, Any]:
        """The run as one row of a table of runs."""
        c = self.config
        return {
            "run": self.name,
            "backbone": c.get("backbone"),
            "mode": c.get("mode"),
            "image size": c.get("image_size"),
            "epochs": f"{len(self.metrics)}/{c.get('epochs')}",
            "test accuracy": self.accuracy,
            "chosen by": self.selected_by_text,
            "tails": c.get("members", 1),
            "test-time mirror": (self.result or {}).get("tta", "none") == "mirror",
            "state": self.state,
        }

    def label(self) -> str:
        c = self.config
        acc = self.accuracy
        state = "finished" if self.finished else f"{len(self.metrics)}/{c.get('epochs')} epochs"
        score = f", test acc {acc:.3f}" if acc is not None else ""
        return f"{self.name} — {c.get('backbone')} {c.get('mode')} {c.get('image_size')}px, {state}{score}"


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """`runs_dir/name`, or `runs_dir/name-YYYYmmdd-HHMMSS` when that already holds a run."""
    out = Path(runs_dir) / name
    if is_run(out):
        out = Path(runs_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return out


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def load_run(path: str | Path) -> RunInfo:
    files = RunFiles(Path(path))
    if not files.config.is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no config.json)")
    result = read_json(files.result) if files.result.exists() else None
    return RunInfo(files.root, read_json(files.config), read_jsonl(files.metrics), result)


def list_runs(root: str | Path) -> list[RunInfo]:
    """Runs directly under `root` (or `root` itself), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    candidates = [root] if is_run(root) else [p for p in root.iterdir() if p.is_dir() and is_run(p)]
    runs = []
    for p in candidates:
        try:
            runs.append(load_run(p))
        except (OSError, ValueError) as exc:  # a half-written folder is skipped, not fatal
            log.warning("skipping run %s: %s", p, exc)
    return sorted(runs, key=lambda r: r.path.stat().st_mtime, reverse=True)


@dataclass
class TrainedModel:
    model: SceneClassifier | CrossClassifier
    backbone: Backbone
    class_names: list[str]
    config: TrainConfig
    epoch: int
    device: torch.device
    checkpoint: Path
    tta: str = "none"  # "mirror": predictions average each photo's and its mirror image's


def checkpoint_tta(ckpt: dict[str, Any]) -> str:
    """How a checkpoint predicts: the test-time augmentation validation chose for its epoch
    (runs written before mirror averaging: "none")."""
    history = ckpt.get("history") or []
    for record in history:
        if record.get("epoch") == ckpt.get("epoch"):
            return str(record.get("tta", "none"))
    return "none"


CHECKPOINTS = ("best", "last")


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """checkpoint_best.pt (chosen on validation) or checkpoint_last.pt. "best" falls back to
    the last checkpoint when a run has none (nothing was better than nothing)."""
    files = RunFiles(Path(run_dir))
    path = {"last": files.last, "best": files.best}.get(which)
    if path is None:
        raise ValueError(f"checkpoint must be 'best' or 'last', not {which!r}")
    if which == "best" and not path.exists() and files.last.exists():
        path = files.last
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {path.name}; train the run first")
    return path


def load_trained(
    run_dir: str | Path, which: str = "best", device: str | None = None
) -> TrainedModel:
    """Rebuild a run's classifier from its checkpoint (a linear probe's frozen backbone comes
    from the pretrained weights; other modes carry every layer in the checkpoint).

    The one way every part of SceneSeek loads a run: the checkpoint is read with
    weights_only=True (core.vision.train.checkpoint.load_checkpoint); a checkpoint holding anything but
    tensors and plain values, a truncated or a foreign file raises CheckpointError."""
    path = checkpoint_path(run_dir, which)
    ckpt = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config is not valid ({exc})") from None
    trained_head_only = ckpt["trained"] == "head"
    model: nn.Module
    if "cross_json" in ckpt:  # tails on several backbones, each with its own preprocessing
        groups = json.loads(ckpt["cross_json"])
        model, backbone = build_cross(groups, len(ckpt["class_names"]))
    else:
        backbone = create_backbone(cfg.backbone, cfg.weights if trained_head_only else None)
        model = SceneClassifier(backbone, len(ckpt["class_names"]), cfg.members, cfg.unfreeze)
    target = model.head if trained_head_only else model
    try:
        target.load_state_dict(ckpt["model"], strict=True)
    except (RuntimeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:240]  # torch's first line alone says nothing
        raise CheckpointError(f"{path}: its tensors do not fit {cfg.backbone} ({first})") from None
    dev = check_device(device or cfg.device)
    model.eval().to(dev, memory_format=torch.channels_last)
    return TrainedModel(
        model,
        backbone,
        list(ckpt["class_names"]),
        cfg,
        int(ckpt["epoch"]),
        dev,
        path,
        checkpoint_tta(ckpt),
    )


def score_images(
    trained: TrainedModel,
    paths: Sequence[str | Path],
    labels: Sequence[str],
    batch_size: int = 64,
    workers: int | None = None,
    hooks: Hooks | None = None,
) -> tuple[ClassificationResult, np.ndarray, np.ndarray]:
    """Score a trained model on labelled images: (result, logits, features)."""
    index = {n: i for i, n in enumerate(trained.class_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"classes the run was not trained on: {unknown}")
    y = [index[v] for v in labels]
    tf = trained.backbone.preprocess(False, trained.config.image_size)
    loader = make_loader(paths, y, tf, batch_size, workers=workers, device=trained.device)
    logits, feats = evaluate(trained.model, loader, trained.device, trained.config.amp, hooks)
    if trained.tta == "mirror":
        mirrored, _ = evaluate(
            trained.model, loader, trained.device, trained.config.amp, hooks, mirror=True
        )
        logits = mirror_average(logits, mirrored)
    return (
        classification_result(np.asarray(y), logits.argmax(1), trained.class_names),
        logits,
        feats,
    )


def score_run(
    run_dir: str | Path,
    test_dir: str | Path,
    checkpoint: str = "best",
    device: str | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    review: str | Path | None = None,
    hooks: Hooks | None = None,
) -> tuple[ClassificationResult, dict[str, Any]]:
    """Score a saved run's checkpoint ("best": chosen on validation, or "last") on a labelled
    folder, with a review sidecar (Curate page) applied when given. Returns the scores and the
    report: the scores plus the run's settings, which checkpoint and what chose it."""
    from core.data.split import labelled_split

    info = load_run(run_dir)
    trained = load_trained(run_dir, checkpoint, device)
    paths, labels, skipped = labelled_split(test_dir, "test", cache_dir)
    applied = None
    if review is not None:  # ReviewError is a ValueError
        from core.data.review import apply_review

        pairs, applied = apply_review(list(zip(paths, labels, strict=True)), review)
        paths, labels = [p for p, _ in pairs], [str(y) for _, y in pairs]
    t0 = time.perf_counter()
    res, _, _ = score_images(trained, paths, labels, workers=workers, hooks=hooks)
    chosen_by = info.selected_by if checkpoint == "best" else None
    out = {
        **res.to_dict(),
        "backbone": trained.config.backbone,
        "mode": trained.config.mode,
        "image_size": trained.config.image_size,
        "epochs": info.metrics,
        "checkpoint": checkpoint,
        "checkpoint_epoch": trained.epoch,
        "tta": trained.tta,
        # Which split chose the checkpoint: "validation"; None for "last" (nothing chose it)
        # and for runs written before validation splits (chosen on the test set).
        "selected_by": chosen_by,
        "selected_by_text": info.selected_by_text
        if checkpoint == "best"
        else "none (last checkpoint)",
        "evaluate_seconds": time.perf_counter() - t0,
        "skipped": skipped,
        "run": str(run_dir),
    }
    if applied is not None:
        out["review"] = {"file": str(review), **applied.to_dict()}
    return res, out


def eval_artefacts(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The reported checkpoint's test logits, features, labels and paths (eval.npz): the
    validation-chosen one (runs written before validation splits: the last)."""
    path = RunFiles(Path(run_dir)).eval
    if not path.exists():
        return None
    try:
        with np.load(path) as z:  # allow_pickle stays False: data, never code
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: unreadable evaluation file ({type(exc).__name__}); the run's scores in "
            "result.json stand, retrain the run to rebuild it"
        ) from None


def misclassified(run_dir: str | Path, class_names: list[str], limit: int = 24) -> list[dict]:
    """Wrong test predictions, most confident first, with the top-3 classes and probabilities."""
    ev = eval_artefacts(run_dir)
    if ev is None:
        return []
    probs = softmax_np(ev["logits"])
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != ev["labels"])
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    out = []
    for i in wrong:
        top = np.argsort(-probs[i])[:3]
        out.append(
            {
                "path": str(ev["paths"][i]),
                "true": class_names[int(ev["labels"][i])],
                "predicted": class_names[int(pred[i])],
                "top3": [(class_names[int(j)], float(probs[i, j])) for j in top],
            }
        )
    return out
