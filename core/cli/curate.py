"""`python -m core audit | export`: curate a collection (label mistakes, near-duplicates,
train/test leakage) and export a selection into class folders."""

from __future__ import annotations

from pathlib import Path

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
    refuse_inside_inputs,
    setup_logging,
)

MAX_LIST_BYTES = 64 * 1024 * 1024  # a --paths list: a million long paths


@app.command("audit")
def audit_cmd(
    images: Path = typer.Option(..., "--images", help="Data folder (any layout `dataset` reads)."),
    run: Path | None = typer.Option(None, "--run", help="Use this trained run's features."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Near-duplicate cosine distance (default 0.05)."
    ),
    neighbours: int = typer.Option(10, "--neighbours", min=1, help="Neighbours per image."),
    max_issues: int | None = typer.Option(None, "--max-issues", min=0, help="List at most N."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda if any)."),
    cache: Path | None = CACHE_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Likely label mistakes, near-duplicates and train/test leakage of a collection."""
    from core.curate.audit import run_audit
    from core.curate.duplicates import DEFAULT_THRESHOLD
    from core.curate.label_issues import LabelAuditError
    from core.data.dataset import DatasetError
    from core.vision.backbones import BackboneWeightsError

    setup_logging(verbose)
    refuse_inside_inputs(cache, "--cache", images)
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if not 0 <= threshold <= 2:
        fail(f"--threshold is a cosine distance between 0 and 2, not {threshold}")
    if device is not None:
        from core.vision.train import check_device

        try:
            check_device(device)
        except ValueError as exc:
            fail(str(exc))
    try:
        with StageBars(as_json) as stage:
            result = run_audit(images, run, cache, threshold, neighbours, device, stage)
    except (DatasetError, LabelAuditError, BackboneWeightsError, FileNotFoundError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    out = result.to_dict(max_issues)
    if as_json:
        emit_json(out)
        return
    typer.echo(
        f"{out['root']}: {out['n_images']} images ({out['n_labelled']} labelled), "
        f"features: {out['features']}; {out['seconds']:.1f} s"
    )
    typer.echo(f"likely label mistakes: {out['n_label_issues']} (most likely first)")
    for it in out["label_issues"][:20]:
        typer.echo(f"  {it['score']:.3f}  {it['path']}  given {it['given']} -> {it['suggested']}")
    typer.echo(
        f"near-duplicate groups at distance <= {out['threshold']}: "
        f"{out['n_duplicate_groups']} ({out['n_cross_class_groups']} across classes), "
        f"train/test pairs: {out['cross_split_pairs']} "
        f"({out['duplicate_search']} search, {out['duplicate_seconds']:.1f} s)"
    )
    for g in out["near_duplicates"][:20]:
        typer.echo(
            "  "
            + "  ==  ".join(
                f"{p} [{s}/{lab}]"
                for p, s, lab in zip(g["paths"], g["splits"], g["labels"], strict=True)
            )
            + f"  (d<={g['max_distance']:.4f})"
        )


def _read_paths(file: Path) -> list[str]:
    from core.io import read_regular

    try:
        lines = read_regular(file, MAX_LIST_BYTES).decode("utf-8").splitlines()
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror or exc})")
    except UnicodeDecodeError as exc:
        fail(f"{file}: not UTF-8 text (byte {exc.start}); save the list of paths as UTF-8")
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", help="New (or empty) folder to write into."),
    images: Path | None = typer.Option(None, "--images", help="Data folder to export from."),
    category: list[str] = typer.Option([], "--category", help="Only this label (repeatable)."),
    review: Path | None = typer.Option(None, "--apply-review", help="Review sidecar to apply."),
    paths: Path | None = typer.Option(None, "--paths", help="File of image paths, one a line."),
    index: Path | None = typer.Option(None, "--index", help="Search index (with --query)."),
    query: str | None = typer.Option(None, "--query", help="Export this search's results."),
    mode: str = typer.Option("semantic", "--mode", help="Search mode for --query."),
    k: int = typer.Option(50, "--k", min=1, help="Search results to export."),
    link: bool = typer.Option(False, "--link", help="Symbolic links instead of copies."),
    cache: Path | None = CACHE_OPTION,
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Copy (or link) a selection into class folders with a CSV of paths, labels, scores:
    a search's results (--index --query), a data folder (--images; --category, --paths and
    --apply-review narrow it or apply a review)."""
    from core.curate.export import ExportError, ExportItem, export_folder, of_labels, reviewed
    from core.data.review import ReviewError, load_review

    setup_logging(verbose)
    if (images is None) == (query is None):
        fail("give --images DIR (a data folder) or --index INDEX --query TEXT (search results)")
    if query is not None and index is None:
        fail("--query needs --index INDEX")
    refuse_inside_inputs(out, "--out", images, index)
    refuse_inside_inputs(cache, "--cache", images)
    try:  # checked before any work: a bad label must not fail after a whole export
        decisions = load_review(review) if review is not None else None
    except ReviewError as exc:
        fail(str(exc))
    listed = _read_paths(paths) if paths is not None else None
    items: list[ExportItem]
    roots: list[str]
    if index is not None and query is not None:
        items, roots = _search_items(index, query, mode, k)
        refuse_inside_inputs(out, "--out", *roots)
    else:
        assert images is not None
        roots = [str(images)]
        from core.curate.vectors import load_collection
        from core.data.dataset import DatasetError

        try:
            coll = load_collection(images, cache)
        except DatasetError as exc:
            fail(str(exc))
        pairs = list(zip(coll.paths, coll.labels, strict=True))
        if listed is not None:
            import os

            wanted = {os.path.realpath(p) for p in listed}
            pairs = [(p, y) for p, y in pairs if os.path.realpath(p) in wanted]
        items = [ExportItem(p, y) for p, y in pairs]
    if decisions is not None:
        try:
            items = reviewed(items, decisions)
        except ReviewError as exc:
            fail(str(exc))
    if category:
        items = of_labels(items, category)
    try:
        csv_path = export_folder(items, out, "link" if link else "copy", roots=roots)
    except (ExportError, OSError) as exc:
        fail(str(exc))
    result = {
        "out": str(out),
        "csv": str(csv_path),
        "n_images": len(items),
        "mode": "link" if link else "copy",
        "labels": sorted({it.label or "" for it in items}),
    }
    if as_json:
        emit_json(result)
        return
    typer.echo(f"exported {len(items)} images to {out} ({result['mode']}); list: {csv_path}")


def _search_items(index: Path, query: str, mode: str, k: int) -> tuple[list, list[str]]:
    """The search's results as export items, and the folders the index was built from: a
    row's path is followed only inside them (an index is data from elsewhere)."""
    from core.curate.export import ExportItem
    from core.search.engine import MODES, SearchEngine
    from core.search.store import SearchIndexError

    check_choice("--mode", mode, MODES)
    try:
        engine = SearchEngine.load(index)
    except SearchIndexError as exc:
        fail(str(exc))
    resp = engine.search(query, mode, k)
    items = [
        ExportItem(r.path, r.label or r.category or None, float(r.score)) for r in resp.results
    ]
    return items, [str(r) for r in (engine.meta.get("roots") or {})]
