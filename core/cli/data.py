"""`python -m core dataset`: find a data set, validate every file, report problems."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli._app import (
    CACHE_OPTION,
    DATA_OPTION,
    JSON_OPTION,
    VERBOSE_OPTION,
    app,
    emit_json,
    fail,
    progress_bar,
    refuse_inside_inputs,
    setup_logging,
)


@app.command("dataset")
def dataset_cmd(
    data: Path | None = DATA_OPTION,
    cache: Path | None = CACHE_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Scan a data set: class counts, sizes, skipped files with reasons, duplicates."""
    from core.config import resolve_cache_dir, resolve_data_dir
    from core.data.dataset import DatasetError, find_dataset
    from core.data.manifest import build_manifest

    setup_logging(verbose)
    root = resolve_data_dir(data)
    refuse_inside_inputs(cache, "--cache", root)  # its files would be scanned as images
    try:
        ds = find_dataset(root)
    except DatasetError as exc:
        fail(str(exc))
    with progress_bar("checking images", as_json) as progress:
        manifest = build_manifest(ds, resolve_cache_dir(cache), progress=progress)
    dups = manifest.duplicates()
    cross = manifest.cross_class_duplicates()
    summary = {
        "root": str(ds.root),
        "layout": ds.layout,
        "class_names": ds.class_names,
        "counts": manifest.usable()
        .groupby(["split", "class"])
        .size()
        .unstack(fill_value=0)
        .to_dict(orient="index"),
        "n_files": len(manifest.df),
        "n_usable": len(manifest.usable()),
        "problems": manifest.reason_counts(),
        "skipped": manifest.skipped()[["path", "reason", "note"]].to_dict("records"),
        "ignored": [{"path": str(p), "reason": r} for p, r in ds.ignored],
        "duplicate_groups": int(dups["sha256"].nunique()) if len(dups) else 0,
        "cross_class_duplicates": cross.groupby("sha256")
        .apply(lambda g: g[["path", "split", "class"]].to_dict("records"), include_groups=False)
        .tolist()
        if len(cross)
        else [],
    }
    if as_json:
        emit_json(summary)
        return
    typer.echo(
        f"{ds.root} ({ds.layout} layout): {summary['n_usable']} usable of "
        f"{summary['n_files']} files"
    )
    for split, counts in summary["counts"].items():
        typer.echo(f"  {split:6s} " + "  ".join(f"{c}={n}" for c, n in counts.items()))
    for reason, n in summary["problems"].items():
        typer.echo(f"  {n:5d}  {reason}")
    for p in summary["ignored"]:
        typer.echo(f"  ignored {p['path']}: {p['reason']}")
    typer.echo(
        f"  duplicate groups: {summary['duplicate_groups']}, "
        f"filed under two classes: {len(summary['cross_class_duplicates'])}"
    )
    for group in summary["cross_class_duplicates"]:
        typer.echo("    " + "  ==  ".join(f"{g['path']} [{g['class']}]" for g in group))
