"""`python -m core train | evaluate | predict`: CNN classifiers on pretrained backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from core.cli._app import app, emit_json, fail, setup_logging


def _bar_hooks(quiet: bool) -> tuple[Any, Any]:
    """Hooks drawing one tqdm bar per stage (feature extraction, each epoch, evaluation)."""
    from tqdm import tqdm

    from core.vision.train import Hooks

    bars: dict[str, Any] = {}

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars.clear()
            bars[stage] = tqdm(total=total, desc=stage, unit="img", disable=quiet, leave=False)
        bars[stage].update(done - bars[stage].n)

    def on_epoch(r: dict) -> None:
        for b in bars.values():
            b.close()
        bars.clear()
        if not quiet:
            tqdm.write(f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}, test accuracy "
                       f"{r['accuracy']:.4f}, macro F1 {r['macro_f1']:.4f}, lr {r['lr']:.2e}, "
                       f"{r['seconds']:.1f} s")  # fmt: skip

    def close() -> None:
        for b in bars.values():
            b.close()

    return Hooks(on_stage=on_stage, on_epoch=on_epoch), close


def _summary(result: dict) -> str:
    from core.evaluate import ClassificationResult

    keys = {f for f in ClassificationResult.__dataclass_fields__}
    res = ClassificationResult.from_dict({k: v for k, v in result.items() if k in keys})
    return res.report()


@app.command("train")
def train_cmd(
    train: Path = typer.Option(..., "--train", help="Folder of <class>/ sub-folders to train on."),
    test: Path = typer.Option(..., "--test", help="Folder of <class>/ sub-folders to score."),
    out: Path = typer.Option(..., "--out", help="Run folder (created; --resume continues it)."),
    backbone: str = typer.Option(
        "",
        "--backbone",
        help="efficientnet_lite0 | resnet50 (default: resnet50 when its "
        "weights are on disk, else efficientnet_lite0)",
    ),
    mode: str = typer.Option("linear-probe", "--mode", help="linear-probe | fine-tune | partial"),
    epochs: int = typer.Option(20, "--epochs", min=1),
    image_size: int = typer.Option(224, "--image-size", min=16, max=1024),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    step_size: int = typer.Option(5, "--step-size", min=1, help="StepLR step in epochs."),
    gamma: float = typer.Option(0.1, "--gamma", help="StepLR factor."),
    rotation: float = typer.Option(10.0, "--rotation", help="Random rotation in degrees."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip"),
    weights: str = typer.Option(
        "imagenet", "--weights", help="imagenet, a state-dict file, or none"
    ),
    seed: int = typer.Option(0, "--seed"),
    workers: int | None = typer.Option(None, "--workers", min=0, help="DataLoader workers."),
    device: str | None = typer.Option(None, "--device", help="Default: cuda when available."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop after the epoch that passes this."
    ),
    no_amp: bool = typer.Option(False, "--no-amp", help="Full float32 (slower on CPU)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from checkpoint_last.pt."),
    cache: Path | None = typer.Option(None, "--cache", help="Cache folder (default .sceneseek)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train (or resume) a CNN classifier; report the last checkpoint's test metrics."""
    from core.config import resolve_cache_dir
    from core.data.dataset import DatasetError
    from core.vision.backbones import BACKBONES, BackboneWeightsError, default_backbone
    from core.vision.runs import split_data
    from core.vision.train import RunExistsError, TrainConfig, run_training

    setup_logging(verbose)
    reason = "chosen with --backbone"
    if not backbone:
        backbone, reason = default_backbone()
    if backbone not in BACKBONES:
        fail(f"--backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
    try:
        cfg = TrainConfig(
            backbone=backbone, weights=None if weights.lower() == "none" else weights, mode=mode,
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            step_size=step_size, gamma=gamma, image_size=image_size, hflip=hflip,
            rotation=rotation, seed=seed, workers=workers, device=device, amp=not no_amp,
            max_minutes=max_minutes,
        )  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    cache_dir = resolve_cache_dir(cache)
    try:
        data = split_data(train, test, cache_dir)
    except DatasetError as exc:
        fail(str(exc))
    if not as_json:
        typer.echo(f"backbone {backbone} ({reason}); {len(data.train_paths)} train, "
                   f"{len(data.test_paths)} test images", err=True)  # fmt: skip
    hooks, close = _bar_hooks(quiet=as_json)
    try:
        result = run_training(cfg, data, out, resume=resume, cache_dir=cache_dir, hooks=hooks)
    except (RunExistsError, BackboneWeightsError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"interrupted; continue with the same command plus --resume (run {out})", 130)
    finally:
        close()
    result["backbone_reason"] = reason
    if as_json:
        emit_json(result)
        return
    typer.echo(_summary(result))
    typer.echo(f"{result['backbone']} {result['mode']}: accuracy {result['accuracy']:.4f} after "
               f"{result['epochs_done']} epochs in {result['train_seconds']:.1f} s; run {out}")  # fmt: skip


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Option(..., "--run", help="A run folder written by `train`."),
    test: Path = typer.Option(..., "--test", help="Folder of <class>/ sub-folders to score."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last | best"),
    device: str | None = typer.Option(None, "--device"),
    workers: int | None = typer.Option(None, "--workers", min=0),
    cache: Path | None = typer.Option(None, "--cache", help="Cache folder (default .sceneseek)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score a saved run on any labelled folder."""
    import time

    from core.config import resolve_cache_dir
    from core.data.dataset import DatasetError
    from core.vision.backbones import BackboneWeightsError
    from core.vision.runs import evaluate_folder, labelled_split, load_run, load_trained

    setup_logging(verbose)
    try:
        info = load_run(run)
        trained = load_trained(run, checkpoint, device)
        paths, labels, skipped = labelled_split(test, "test", resolve_cache_dir(cache))
        hooks, close = _bar_hooks(quiet=as_json)
        t0 = time.perf_counter()
        try:
            res, _, _ = evaluate_folder(trained, paths, labels, workers=workers, hooks=hooks)
        finally:
            close()
    except (FileNotFoundError, DatasetError, BackboneWeightsError, ValueError) as exc:
        fail(str(exc))
    out = {
        **res.to_dict(),
        "backbone": trained.config.backbone,
        "mode": trained.config.mode,
        "image_size": trained.config.image_size,
        "epochs": info.metrics,
        "checkpoint": checkpoint,
        "checkpoint_epoch": trained.epoch,
        "evaluate_seconds": time.perf_counter() - t0,
        "skipped": skipped,
        "run": str(run),
    }
    if as_json:
        emit_json(out)
        return
    typer.echo(res.report())
    typer.echo(f"accuracy {res.accuracy:.4f} ({checkpoint} checkpoint, epoch {trained.epoch})")


@app.command("predict")
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="Image files."),
    run: Path = typer.Option(..., "--run", help="A run folder written by `train`."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last | best"),
    device: str | None = typer.Option(None, "--device"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Class and probabilities per image (and the backbone's ImageNet top-5)."""
    from core.data.images import BadImageError, load_rgb
    from core.vision.predict import imagenet_reference, predict_images
    from core.vision.runs import load_trained

    setup_logging(verbose)
    try:
        trained = load_trained(run, checkpoint, device)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    ref = imagenet_reference(trained)
    rows: list[dict] = []
    for path in images:
        try:
            pred = predict_images(trained, [load_rgb(path)], ref)[0]
            rows.append({"path": str(path), **pred.to_dict()})
        except BadImageError as exc:
            rows.append({"path": str(path), "error": f"not a readable image: {exc.reason}"})
    if as_json:
        emit_json({"run": str(run), "class_names": trained.class_names, "predictions": rows})
    else:
        for r in rows:
            if "error" in r:
                typer.echo(f"{r['path']}: {r['error']}")
                continue
            probs = "  ".join(f"{c}={p:.3f}" for c, p in r["probabilities"].items())
            typer.echo(f"{r['path']}: {r['label']}  ({probs})")
    if any("error" in r for r in rows):
        raise typer.Exit(1)
