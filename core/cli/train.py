"""`python -m core train | evaluate | predict`: CNN classifiers on pretrained backbones."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from core.cli._app import (
    CACHE_OPTION,
    JSON_OPTION,
    VERBOSE_OPTION,
    StageBars,
    app,
    check_choice,
    emit_json,
    fail,
    hold_writer_lock,
    refuse_inside_inputs,
    setup_logging,
)

# Options the commands here share.
REVIEW = typer.Option(
    None, "--apply-review", help="Review sidecar (Curate page): drop/relabel images."
)
CHECKPOINT = typer.Option("best", "--checkpoint", help="best (chosen on validation) | last")


@contextlib.contextmanager
def _stage_bars(quiet: bool, header: str = "") -> Iterator[Any]:
    """Training hooks drawing one bar per stage (feature extraction, each epoch, evaluation)
    (`StageBars`), and a line per finished epoch. `header` goes to stderr when the work
    starts, after every check passed (an error stays the only line)."""
    from tqdm import tqdm

    from core.vision.train import Hooks

    bars = StageBars(quiet)
    started: list[bool] = []

    def on_stage(stage: str, done: int, total: int) -> None:
        if header and not started and not quiet:
            tqdm.write(header, file=sys.stderr)
        started.append(True)
        bars(stage, done, total)

    def on_epoch(r: dict) -> None:
        bars.close()
        if not quiet:
            tqdm.write(
                f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}, validation "
                f"accuracy {r['val_accuracy']:.4f}, test accuracy {r['accuracy']:.4f}, "
                f"lr {r['lr']:.2e}, {r['seconds']:.1f} s"
            )

    with bars:
        yield Hooks(on_stage=on_stage, on_epoch=on_epoch)


def _line(exc: BaseException) -> str:
    """The first line of an error (some libraries' messages run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@app.command("train")
def train_cmd(
    train: Path = typer.Option(..., "--train", help="Folder of <class>/ sub-folders to train on."),
    test: Path = typer.Option(..., "--test", help="Folder of <class>/ sub-folders to score."),
    out: Path = typer.Option(..., "--out", help="Run folder (created; --resume continues it)."),
    val: Path | None = typer.Option(
        None,
        "--val",
        help="Validation folder (default: a val/ or seg_val/ folder beside "
        "--train, else --val-fraction of the training images).",
    ),
    val_fraction: float = typer.Option(
        0.1,
        "--val-fraction",
        help="Share of training images held out for validation, which "
        "alone chooses the best checkpoint and early stopping (stratified, seeded).",
    ),
    backbone: str = typer.Option(
        "",
        "--backbone",
        help="efficientnet_lite0 | resnet50 (default: resnet50 when its "
        "weights are on disk, else efficientnet_lite0)",
    ),
    mode: str = typer.Option("linear-probe", "--mode", help="linear-probe | fine-tune | partial"),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Default 20; partial: the count chosen on validation."
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Pixels (default 224)."),
    unfreeze: str | None = typer.Option(
        None,
        "--unfreeze",
        help="partial: first trained block, e.g. blocks.5.0 or layer4.0 "
        "(default: chosen on validation).",
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float | None = typer.Option(
        None, "--lr", help="Default 1e-3; partial: the rate chosen on validation."
    ),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    schedule: str | None = typer.Option(
        None, "--schedule", help="step (StepLR) | cosine (default: step; partial: chosen)."
    ),
    step_size: int = typer.Option(5, "--step-size", help="StepLR step in epochs."),
    gamma: float = typer.Option(0.1, "--gamma", help="StepLR factor."),
    label_smoothing: float | None = typer.Option(None, "--label-smoothing"),
    rotation: float = typer.Option(10.0, "--rotation", help="Random rotation in degrees."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip"),
    patience: int | None = typer.Option(
        None, "--patience", help="Stop after this many epochs without a better validation score."
    ),
    weights: str = typer.Option(
        "imagenet", "--weights", help="imagenet, a state-dict file, or none"
    ),
    seed: int = typer.Option(0, "--seed"),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers."),
    device: str | None = typer.Option(None, "--device", help="Default: cuda when available."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop after the epoch that passes this."
    ),
    no_amp: bool = typer.Option(False, "--no-amp", help="float32 on CUDA too (CPU always is)."),
    tta: str = typer.Option(
        "auto",
        "--tta",
        help="auto | none | mirror: average each photo with its mirror image (partial mode; "
        "auto: when validation says so).",
    ),
    members: int | None = typer.Option(
        None,
        "--members",
        help="partial: tails trained side by side on one frozen trunk, their probabilities "
        "averaged (default: chosen on validation).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from checkpoint_last.pt."),
    cache: Path | None = CACHE_OPTION,
    review: Path | None = REVIEW,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Train (or resume) a CNN classifier; the checkpoint is chosen on validation, the test
    set is scored for the report."""
    from core.config import resolve_cache_dir
    from core.data.dataset import DatasetError
    from core.data.split import split_data
    from core.vision.activations import SplitPointError
    from core.vision.backbones import BACKBONES, BackboneWeightsError, default_backbone
    from core.vision.runs import scores_of
    from core.vision.train import RunExistsError, TrainConfig, check_device, run_training

    setup_logging(verbose)
    reason = "chosen with --backbone"
    if not backbone:
        backbone, reason = default_backbone()
    check_choice("--backbone", backbone, BACKBONES)
    try:
        cfg = TrainConfig.for_mode(
            mode,
            backbone=backbone,
            weights=None if weights.lower() == "none" else weights,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            step_size=step_size,
            gamma=gamma,
            image_size=image_size,
            hflip=hflip,
            rotation=rotation,
            label_smoothing=label_smoothing,
            unfreeze=unfreeze,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            workers=workers,
            device=device,
            amp=not no_amp,
            max_minutes=max_minutes,
            tta=tta,
            members=members,
        )
        check_device(cfg.device)
        if cfg.weights not in (None, "imagenet") and not Path(cfg.weights).is_file():
            fail(f"--weights {cfg.weights}: no such file (use imagenet, none or a state-dict file)")
    except ValueError as exc:
        fail(_line(exc))
    refuse_inside_inputs(out, "--out", train, test, val)
    refuse_inside_inputs(cache, "--cache", train, test, val)
    hold_writer_lock(out, "run")  # two `--resume` at once would interleave one metrics.jsonl
    cache_dir = resolve_cache_dir(cache)
    try:
        data = split_data(train, test, cache_dir, val_dir=val)
        if review is not None:
            from core.data.review import apply_review_split

            data, applied = apply_review_split(data, review)
    except (DatasetError, ValueError) as exc:  # core.data.review.ReviewError is a ValueError
        fail(_line(exc))
    header = (
        f"backbone {backbone} ({reason}); {len(data.train_paths)} train"
        f"{' + ' + str(len(data.val_paths)) + ' validation' if data.val_paths else ''}"
        f", {len(data.test_paths)} test images"
    )
    with _stage_bars(quiet=as_json, header=header) as hooks:
        try:
            result = run_training(cfg, data, out, resume=resume, cache_dir=cache_dir, hooks=hooks)
        except (RunExistsError, BackboneWeightsError, SplitPointError, ValueError, OSError) as exc:
            fail(_line(exc))
        except KeyboardInterrupt:
            fail(f"interrupted; continue with the same command plus --resume (run {out})", 130)
    result["backbone_reason"] = reason
    if review is not None:
        result["review"] = {"file": str(review), **applied.to_dict()}
    if as_json:
        emit_json(result)
        return
    typer.echo(scores_of(result).report())
    typer.echo(
        f"{result['backbone']} {result['mode']}: test accuracy {result['accuracy']:.4f} "
        f"(validation {result['val_accuracy']:.4f}) at epoch {result['best_epoch']}, "
        f"chosen on validation, of {result['epochs_done']} epochs in "
        f"{result['train_seconds']:.1f} s; run {out}"
    )


@app.command("evaluate")
def score_run_cmd(
    run: Path = typer.Option(..., "--run", help="A run folder written by `train`."),
    test: Path = typer.Option(..., "--test", help="Folder of <class>/ sub-folders to score."),
    checkpoint: str = CHECKPOINT,
    device: str | None = typer.Option(None, "--device"),
    workers: int | None = typer.Option(None, "--workers", min=0),
    cache: Path | None = CACHE_OPTION,
    review: Path | None = REVIEW,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Score a saved run on any labelled folder."""
    from core.data.dataset import DatasetError
    from core.vision.backbones import BackboneWeightsError
    from core.vision.runs import score_run

    setup_logging(verbose)
    with _stage_bars(quiet=as_json) as hooks:
        try:
            res, out = score_run(run, test, checkpoint, device, workers, cache, review, hooks)
        except (OSError, DatasetError, BackboneWeightsError, ValueError) as exc:
            fail(_line(exc))
    if as_json:
        emit_json(out)
        return
    typer.echo(res.report())
    typer.echo(
        f"accuracy {res.accuracy:.4f} ({checkpoint} checkpoint, epoch {out['checkpoint_epoch']}, "
        f"chosen by: {out['selected_by_text']})"
    )


@app.command("predict")
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="Image files."),
    run: Path = typer.Option(..., "--run", help="A run folder written by `train`."),
    checkpoint: str = CHECKPOINT,
    device: str | None = typer.Option(None, "--device"),
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Class and probabilities per image (and the backbone's ImageNet top-5)."""
    from core.data.images import BadImageError, load_rgb
    from core.vision.backbones import BackboneWeightsError
    from core.vision.predict import imagenet_reference, predict_images
    from core.vision.runs import load_trained

    setup_logging(verbose)
    try:
        trained = load_trained(run, checkpoint, device)
    except (OSError, BackboneWeightsError, ValueError) as exc:
        fail(_line(exc))
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
            if "error" in r:  # a row of the report; the error itself goes to stderr below
                typer.echo(f"{r['path']}: {r['error']}")
                continue
            probs = "  ".join(f"{c}={p:.3f}" for c, p in r["probabilities"].items())
            typer.echo(f"{r['path']}: {r['label']}  ({probs})")
    bad = [r for r in rows if "error" in r]
    if bad:
        named = ", ".join(f"{Path(r['path']).name} ({r['error']})" for r in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        fail(f"{len(bad)} of {len(rows)} images could not be read: {named}{more}", 1)
