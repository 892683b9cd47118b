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
    progress_bar,
    refuse_inside_inputs,
    setup_logging,
)

PREDICT_BAR_MIN = 16  # files from which `predict` shows a progress bar

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
                f"accuracy {r['val_accuracy']:.4f}, lr {r['lr']:.2e}, {r['seconds']:.1f} s"
            )

    with bars:
        yield Hooks(on_stage=on_stage, on_epoch=on_epoch)


def _line(exc: BaseException) -> str:
    """The first line of an error (some libraries' messages run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _backbone_help() -> str:
    from core.vision.catalog import backbone_help

    return (
        f"{backbone_help()}. Default: resnet50 when its weights are on disk, else "
        "efficientnet_lite0, and in partial mode the backbones its search chose on "
        "validation (core/resources/partial_search.json). Several, comma-separated (partial "
        "mode): an ensemble of tails on each backbone's own activations, probabilities "
        "averaged."
    )


# The train command's options (module level: the command itself stays short).
TRAIN_DIR = typer.Option(..., "--train", help="Folder of <class>/ sub-folders to train on.")
TEST_DIR = typer.Option(
    ..., "--test", help="Folder of <class>/ sub-folders, scored once after training."
)
OUT_DIR = typer.Option(..., "--out", help="Run folder (created; --resume continues it).")
VAL_DIR = typer.Option(
    None,
    "--val",
    help="Validation folder (default: a val/ or seg_val/ folder beside "
    "--train, else --val-fraction of the training images).",
)
VAL_FRACTION = typer.Option(
    0.1,
    "--val-fraction",
    help="Share of training images held out for validation, which "
    "alone scores the epochs, chooses the best checkpoint and stops early (stratified, seeded).",
)
BACKBONE = typer.Option("", "--backbone", help=_backbone_help())
MODE = typer.Option("linear-probe", "--mode", help="linear-probe | fine-tune | partial")
EPOCHS = typer.Option(None, "--epochs", help="Default 20; partial: the count chosen on validation.")
IMAGE_SIZE = typer.Option(None, "--image-size", help="Pixels (default 224).")
UNFREEZE = typer.Option(
    None,
    "--unfreeze",
    help="partial: first trained block, e.g. blocks.5.0 or layer4.0 "
    "(default: chosen on validation).",
)
LR = typer.Option(None, "--lr", help="Default 1e-3; partial: the rate chosen on validation.")
SCHEDULE = typer.Option(
    None, "--schedule", help="step (StepLR) | cosine (default: step; partial: chosen)."
)
PATIENCE = typer.Option(
    None, "--patience", help="Stop after this many epochs without a better validation score."
)
WEIGHTS = typer.Option("imagenet", "--weights", help="imagenet, a state-dict file, or none")
MAX_MINUTES = typer.Option(None, "--max-minutes", help="Stop after the epoch that passes this.")
TTA = typer.Option(
    "auto",
    "--tta",
    help="auto | none | mirror: average each photo with its mirror image (partial mode; "
    "auto: when validation says so).",
)
MEMBERS = typer.Option(
    None,
    "--members",
    help="partial: tails trained side by side on one frozen trunk, their probabilities "
    "averaged (default: chosen on validation).",
)


@app.command("train")
def train_cmd(
    train: Path = TRAIN_DIR,
    test: Path = TEST_DIR,
    out: Path = OUT_DIR,
    val: Path | None = VAL_DIR,
    val_fraction: float = VAL_FRACTION,
    backbone: str = BACKBONE,
    mode: str = MODE,
    epochs: int | None = EPOCHS,
    image_size: int | None = IMAGE_SIZE,
    unfreeze: str | None = UNFREEZE,
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float | None = LR,
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    schedule: str | None = SCHEDULE,
    step_size: int = typer.Option(5, "--step-size", help="StepLR step in epochs."),
    gamma: float = typer.Option(0.1, "--gamma", help="StepLR factor."),
    label_smoothing: float | None = typer.Option(None, "--label-smoothing"),
    rotation: float = typer.Option(10.0, "--rotation", help="Random rotation in degrees."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip"),
    patience: int | None = PATIENCE,
    weights: str = WEIGHTS,
    seed: int = typer.Option(0, "--seed"),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers."),
    device: str | None = typer.Option(None, "--device", help="Default: cuda when available."),
    max_minutes: float | None = MAX_MINUTES,
    no_amp: bool = typer.Option(False, "--no-amp", help="float32 on CUDA too (CPU always is)."),
    tta: str = TTA,
    members: int | None = MEMBERS,
    resume: bool = typer.Option(False, "--resume", help="Continue from checkpoint_last.pt."),
    cache: Path | None = CACHE_OPTION,
    review: Path | None = REVIEW,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Train (or resume) a CNN classifier: every epoch is scored on validation, which chooses
    the checkpoint; the test set is scored once, for that checkpoint, after training."""
    # Every option but the paths and output switches is a TrainConfig setting.
    settings = {k: v for k, v in locals().items() if k not in _NOT_SETTINGS}
    setup_logging(verbose)
    backbone, reason = _choose_backbone(backbone, mode)
    cfg = _train_config(mode, {**settings, "backbone": backbone}, weights, no_amp)
    from core.config import resolve_cache_dir

    refuse_inside_inputs(out, "--out", train, test, val)
    refuse_inside_inputs(cache, "--cache", train, test, val)
    hold_writer_lock(out, "run")  # two `--resume` at once would interleave one metrics.jsonl
    cache_dir = resolve_cache_dir(cache)
    data, applied = _split(train, test, val, review, cache_dir)
    header = (
        f"backbone {backbone} ({reason}); {len(data.train_paths)} train"
        f"{' + ' + str(len(data.val_paths)) + ' validation' if data.val_paths else ''}"
        f", {len(data.test_paths)} test images (scored once, after training)"
    )
    result = _run(cfg, data, out, resume, cache_dir, as_json, header)
    result["backbone_reason"] = reason
    if review is not None:
        result["review"] = {"file": str(review), **applied.to_dict()}
    _report(result, out, as_json)


_NOT_SETTINGS = {"train", "test", "out", "val", "mode", "resume", "cache", "review", "as_json"}
_NOT_SETTINGS |= {"verbose", "no_amp", "weights"}


def _choose_backbone(backbone: str, mode: str = "") -> tuple[str, str]:
    """(backbone, why): the one asked for; else ResNet-50 where its weights are on disk; else,
    in partial mode, the backbones the partial-mode search chose on validation; else Lite0."""
    from core.vision.backbones import BACKBONES, default_backbone
    from core.vision.train.config import partial_backbone

    if not backbone:
        name, reason = default_backbone()
        chosen = partial_backbone() if mode == "partial" else None
        if name == "efficientnet_lite0" and chosen:
            return chosen, (
                "partial mode's default, chosen on validation by benchmarks/partial_search.py "
                "(core/resources/partial_search.json)"
            )
        return name, reason
    for name in backbone.split(","):  # several: a cross-backbone ensemble (partial mode)
        check_choice("--backbone", name.strip(), BACKBONES)
    return backbone, "chosen with --backbone"


def _train_config(mode: str, settings: dict[str, Any], weights: str, no_amp: bool) -> Any:
    """The run's TrainConfig from the command's options (every range checked)."""
    from core.vision.train import TrainConfig, check_device

    try:
        cfg = TrainConfig.for_mode(
            mode,
            **settings,
            weights=None if weights.lower() == "none" else weights,
            amp=not no_amp,
        )
        check_device(cfg.device)
    except ValueError as exc:
        fail(_line(exc))
    if cfg.weights not in (None, "imagenet") and not Path(cfg.weights).is_file():
        fail(f"--weights {cfg.weights}: no such file (use imagenet, none or a state-dict file)")
    return cfg


def _split(train: Path, test: Path, val: Path | None, review: Path | None, cache_dir: Path) -> Any:
    """(SplitData, the review applied or None); a bad folder or review is one line."""
    from core.data.dataset import DatasetError
    from core.data.split import split_data

    applied = None
    try:
        data = split_data(train, test, cache_dir, val_dir=val)
        if review is not None:
            from core.data.review import apply_review_split

            data, applied = apply_review_split(data, review)
    except (DatasetError, ValueError) as exc:  # core.data.review.ReviewError is a ValueError
        fail(_line(exc))
    return data, applied


def _run(
    cfg: Any, data: Any, out: Path, resume: bool, cache_dir: Path, quiet: bool, header: str
) -> dict[str, Any]:
    from core.vision.activations import SplitPointError
    from core.vision.backbones import BackboneWeightsError
    from core.vision.train import RunExistsError, run_training

    with _stage_bars(quiet=quiet, header=header) as hooks:
        try:
            return run_training(cfg, data, out, resume=resume, cache_dir=cache_dir, hooks=hooks)
        except (RunExistsError, BackboneWeightsError, SplitPointError, ValueError, OSError) as exc:
            fail(_line(exc))
        except KeyboardInterrupt:
            fail(f"interrupted; continue with the same command plus --resume (run {out})", 130)
    raise AssertionError("unreachable: fail() exits")


def _report(result: dict[str, Any], out: Path, as_json: bool) -> None:
    """The test figures, printed once: those of the checkpoint validation chose."""
    from core.vision.runs import scores_of

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
    cache: Path | None = CACHE_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Class and probabilities per image (and the backbone's ImageNet top-5)."""
    from core.config import resolve_cache_dir
    from core.data.images import BadImageError
    from core.vision.backbones import BackboneWeightsError
    from core.vision.predict import imagenet_reference, predict_files
    from core.vision.runs import load_trained

    setup_logging(verbose)
    try:
        trained = load_trained(run, checkpoint, device)
    except (OSError, BackboneWeightsError, ValueError) as exc:
        fail(_line(exc))
    ref = imagenet_reference(trained)
    rows: list[dict] = []
    # A bar for a folder's worth of files; a handful is answered before one would draw.
    with progress_bar("predicting", as_json or len(images) < PREDICT_BAR_MIN) as progress:
        preds = predict_files(trained, images, resolve_cache_dir(cache), ref, progress)
    for path, pred in zip(images, preds, strict=True):
        if isinstance(pred, BadImageError):
            rows.append({"path": str(path), "error": f"not a readable image: {pred.reason}"})
        else:
            rows.append({"path": str(path), **pred.to_dict()})
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
