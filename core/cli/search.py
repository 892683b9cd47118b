"""`python -m core index | search | evaluate-retrieval`: the image index and text search."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer

from core.cli._app import app, emit_json, fail, progress_bar, setup_logging


@app.command("index")
def index_cmd(
    images: str = typer.Option(
        ..., "--images", help="Folder of images (any layout), or a URI: s3://, gs://, file://."
    ),
    index: Path = typer.Option(..., "--index", help="Index folder (created when missing)."),
    run: Path | None = typer.Option(None, "--run", help="Trained run: category probabilities."),
    captions: Path | None = typer.Option(None, "--captions", help="Captions file for the images."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone when no --run."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size (pixels)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    workers: int | None = typer.Option(
        None, "--workers", help="local: decoding processes; ray: encoder actors (default 1)."
    ),
    chunk: int = typer.Option(512, "--chunk", help="Images per committed chunk (resume unit)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda if any)."),
    no_mapping: bool = typer.Option(False, "--no-mapping", help="Skip fitting the text mapping."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray."),
    address: str | None = typer.Option(
        None, "--address", help="ray: auto or HEAD_IP:PORT (default: start a local Ray)."
    ),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="ray: GPUs per actor."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="ray: CPUs per actor."),
    ray_resources: str | None = typer.Option(
        None, "--ray-resources", help='ray: custom resources per actor/task, JSON: {"name": 1}.'
    ),
    ann_min_rows: int | None = typer.Option(
        None, "--ann-min-rows", help="Build an ANN index from this many rows (default 100000)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Index a folder of images; re-running only processes new or changed files."""
    from core.search.store import ANN_MIN_ROWS, ENGINES, IndexError_, build_index
    from core.search.uri import is_uri

    setup_logging(verbose)
    if engine not in ENGINES:
        fail(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not is_uri(images) and not Path(images).expanduser().is_dir():
        fail(f"{images}: no such folder")
    ray_options = None
    if engine == "ray":
        try:
            resources = json.loads(ray_resources) if ray_resources else {}
        except json.JSONDecodeError as exc:
            fail(f"--ray-resources: not JSON ({exc})")
        from core.search.ray_engine import RayOptions  # imports no Ray until it runs

        try:
            ray_options = RayOptions(address, workers or 1, gpus_per_worker, cpus_per_worker,
                                     resources)  # fmt: skip
        except ValueError as exc:
            fail(str(exc))
    if captions is not None and not captions.is_file():
        fail(f"{captions}: no such captions file")
    # Ray's driver prints cluster messages (retries, dead workers) on stdout; keep stdout for
    # the report, so --json stays one JSON object.
    quiet = contextlib.redirect_stdout(sys.stderr) if engine == "ray" else contextlib.nullcontext()
    try:
        with quiet, progress_bar("indexing", as_json) as progress:
            stats = build_index(images, index, run, captions, backbone, image_size, batch_size,
                                workers, chunk, device, progress, engine=engine,
                                ray_options=ray_options, ann_min_rows=ann_min_rows
                                if ann_min_rows is not None else ANN_MIN_ROWS)  # fmt: skip
    except (IndexError_, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    out = stats.to_dict()
    if not no_mapping:
        from core.search.rank import SearchEngine

        engine = SearchEngine.load(index)  # fits and saves the mapping when it is missing
        sm = engine.semantic
        out["mapping"] = None if sm is None else {
            "path": str(sm.path), "train_captioned_images": sm.config["train_captioned_images"],
            "train_labelled_images": sm.config["train_labelled_images"],
            "heldout_images": len(sm.config["heldout_images"]),
        }  # fmt: skip
        out["category_source"] = engine.category_source
    if as_json:
        emit_json(out)
        return
    typer.echo(f"{stats.root}: {stats.found} images, {stats.encoded} encoded, "
               f"{stats.unchanged} unchanged, {stats.deleted} removed, {len(stats.skipped)} "
               f"skipped; {stats.rows} rows in {index} ({stats.images_per_second} img/s)")  # fmt: skip
    for s in stats.skipped:
        typer.echo(f"  skipped {s['path']}: {s['reason']}")
    if out.get("mapping"):
        typer.echo(f"  text mapping: {out['mapping']['path']}")


def _engine(index: Path):
    from core.search.rank import SearchEngine
    from core.search.store import IndexError_

    try:
        return SearchEngine.load(index)
    except IndexError_ as exc:
        fail(str(exc))


@app.command("search")
def search_cmd(
    query: str = typer.Argument(..., help="What to look for, in words."),
    index: Path = typer.Option(..., "--index", help="Index folder."),
    k: int = typer.Option(10, "--k", min=1, help="Number of results."),
    mode: str = typer.Option("semantic", "--mode", help="keyword, category, semantic or hybrid."),
    category: str | None = typer.Option(None, "--category", help="Only this predicted category."),
    split: str | None = typer.Option(None, "--split", help="Only this split (train, test...)."),
    like: Path | None = typer.Option(None, "--like", help="Rank by similarity to this image."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Search the index by text (or by image with --like)."""
    from core.search.rank import MODES

    setup_logging(verbose)
    if mode not in MODES:
        fail(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    engine = _engine(index)
    if category and category not in engine.classes:
        fail(f"unknown category {category!r}; the index has {', '.join(engine.classes)}")
    if like is not None:
        resp = _like(engine, like, k, category)
    else:
        resp = engine.search(query, mode, k, category, split)
    if as_json:
        emit_json(resp.to_dict())
        return
    typer.echo(f"query: {resp.query!r}  mode: {resp.mode}  keywords: {resp.keywords}  "
               f"categories: {resp.categories}  pool: {resp.pool}")  # fmt: skip
    for note in resp.notes:
        typer.echo(f"  note: {note}")
    for r in resp.results:
        labels = ", ".join(f"{n} {p:.2f}" for n, p in r.top_labels[:3])
        typer.echo(f"{r.rank:3d}. {r.score:.4f}  {r.path}  [{r.category}]  {labels}")
        for w in r.why:
            typer.echo(f"       why: {w}")


def _like(engine, image: Path, k: int, category: str | None):
    from core.data.images import BadImageError, load_rgb

    if str(image.resolve()) in engine._row_of:
        return engine.similar(path=str(image.resolve()), k=k, category=category)
    try:
        im = load_rgb(image)
    except BadImageError as exc:
        fail(str(exc))
    info = engine.classify_image(im)
    return engine.similar(feature=info["feature"], k=k, category=category)


@app.command("evaluate-retrieval")
def evaluate_retrieval_cmd(
    index: Path = typer.Option(..., "--index", help="Index folder."),
    captions: Path | None = typer.Option(None, "--captions", help="Captions: each is a query."),
    queries: Path | None = typer.Option(None, "--queries", help="CSV query,category."),
    split: str | None = typer.Option(None, "--split", help="Pool for --queries (default test)."),
    modes: str = typer.Option("keyword,category,semantic,hybrid", "--modes"),
    max_queries: int | None = typer.Option(None, "--max-queries", help="Cap (caption queries)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Retrieval quality per mode: caption queries (R@k, median rank, MRR) or category
    queries (P@10, AP)."""
    from core.search.evaluate import EvaluationError, evaluate_captions, evaluate_queries

    setup_logging(verbose)
    if (captions is None) == (queries is None):
        fail("give exactly one of --captions FILE or --queries FILE")
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    engine = _engine(index)
    try:
        if captions is not None:
            out = evaluate_captions(engine, captions, mode_list, max_queries)
        else:
            out = evaluate_queries(engine, queries, mode_list, split)
    except (EvaluationError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        emit_json(out)
        return
    typer.echo(f"{out['kind']}: {out['n_queries']} queries, pool {out['pool']} images")
    for mode, m in out["modes"].items():
        typer.echo(f"  {mode:9s} " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else
                                                f"{k}={v}" for k, v in m.items()))  # fmt: skip
