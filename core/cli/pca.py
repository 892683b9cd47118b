"""`python -m core pca`: train and score the grayscale eigen-image classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from core.cli._app import (
    CACHE_OPTION,
    JSON_OPTION,
    VERBOSE_OPTION,
    app,
    check_choice,
    emit_json,
    fail,
    progress_bar,
    setup_logging,
)


def _usable(
    folder: Path, split: str, cache: Path, quiet: bool
) -> tuple[list[Path], list[str], int]:
    """(paths, labels, n_skipped) of the usable images in a folder of class sub-folders."""
    from core.data.dataset import DatasetError
    from core.data.split import labelled_split

    with progress_bar(f"checking {split} images", quiet, leave=False) as progress:
        try:
            return labelled_split(folder, split, cache, progress=progress)
        except DatasetError as exc:
            fail(f"--{split}: {exc}")


def _check_folders(folders: dict[str, Path]) -> None:
    """Fail on a bad folder before any work (and before a progress bar touches stderr)."""
    from core.data.dataset import DatasetError, scan_class_folder

    for split, folder in folders.items():
        try:
            scan_class_folder(folder, split)
        except DatasetError as exc:
            fail(f"--{split}: {exc}")


def _gray(paths: list[Path], image_size: int, cache: Path, desc: str, quiet: bool) -> Any:
    from core.vision.gray import load_gray_images

    with progress_bar(desc, quiet, leave=False) as progress:
        return load_gray_images(paths, image_size, cache, progress=progress)


@app.command("pca")
def pca_cmd(
    train: Path = typer.Option(..., "--train", help="Folder of <class>/ sub-folders to fit on."),
    test: Path = typer.Option(..., "--test", help="Folder of <class>/ sub-folders to score."),
    components: int = typer.Option(39, "--components", "-k", min=1, help="Principal components."),
    image_size: int = typer.Option(64, "--image-size", min=4, max=512, help="Side in pixels."),
    method: str = typer.Option("global", "--method", help="global | class-subspace"),
    solver: str = typer.Option("auto", "--solver", help="auto | full | randomized | gram"),
    sweep: int = typer.Option(
        0, "--sweep", min=0, help="Also score every k = 1..N from one fit of N components."
    ),
    cache: Path | None = CACHE_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Grayscale PCA eigen-images: fit on --train, report accuracy on --test."""
    from core.config import resolve_cache_dir
    from core.metrics import StageTimer, classification_result
    from core.vision.eigen import METHODS, SOLVERS, explained_variance_at, fit_sweep

    setup_logging(verbose)
    check_choice("--method", method, METHODS)
    check_choice("--solver", solver, SOLVERS)
    cache_dir = resolve_cache_dir(cache)
    _check_folders({"train": train, "test": test})
    timer = StageTimer()
    train_paths, train_labels, train_skipped = _usable(train, "train", cache_dir, as_json)
    test_paths, test_labels, test_skipped = _usable(test, "test", cache_dir, as_json)
    with timer("decode"):
        x_train = _gray(train_paths, image_size, cache_dir, "decoding train", as_json).pixels
        x_test = _gray(test_paths, image_size, cache_dir, "decoding test", as_json).pixels

    # With --sweep, fit the larger k once; every smaller k is a prefix of it.
    fitted = fit_sweep(
        x_train,
        train_labels,
        x_test,
        test_labels,
        max(components, sweep),
        range(1, sweep + 1),
        method=method,
        solver=solver,
    )
    model = fitted.model
    timer.seconds["fit"] = fitted.fit_seconds  # timed inside fit_sweep; same stage order
    scored = model.with_components(components)
    with timer("predict"):
        pred = scored.predict(x_test)
    if sweep:
        timer.seconds["sweep"] = fitted.sweep_seconds

    result = classification_result(test_labels, pred, fitted.class_names, timings=timer.seconds)
    out = result.to_dict()
    out.update(
        components=scored.n_components_,
        components_requested=components,
        method=method,
        svd_solver=model.svd_solver_,
        image_size=image_size,
        explained_variance=explained_variance_at(model, scored.n_components_),
        fit_seconds=timer.seconds["fit"],
        predict_seconds=timer.seconds["predict"],
        decode_seconds=timer.seconds["decode"],
        n_train=len(train_paths),
        n_test=len(test_paths),
        skipped_train=train_skipped,
        skipped_test=test_skipped,
        train_dir=str(train),
        test_dir=str(test),
        mean_distance_per_class=scored.mean_distance_per_class(x_test, test_labels),
    )
    if sweep:
        out["sweep"] = fitted.accuracy
    if as_json:
        emit_json(out)
        return
    typer.echo(
        f"eigen-images ({method}), k={scored.n_components_} of {image_size}x{image_size} "
        f"gray pixels ({out['explained_variance']:.1%} of variance, solver "
        f"{model.svd_solver_}); train {len(train_paths)}, test {len(test_paths)}"
    )
    typer.echo(result.report())
    typer.echo(
        f"\nfit {out['fit_seconds']:.2f}s · predict {out['predict_seconds']:.3f}s · "
        f"decode {out['decode_seconds']:.1f}s"
    )
    if sweep:
        best = max(fitted.accuracy, key=lambda k: fitted.accuracy[k])
        typer.echo(f"\naccuracy by k (best k={best}: {fitted.accuracy[best]:.3f}):")
        for k, acc in fitted.accuracy.items():
            typer.echo(f"  k={k:4d}  {acc:.3f}")
