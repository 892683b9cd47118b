"""`python -m core index | search | evaluate-retrieval`: the image index and text search."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
from pathlib import Path

import typer

from core.cli._app import (
    JSON_OPTION,
    VERBOSE_OPTION,
    app,
    check_choice,
    emit_json,
    fail,
    progress_bar,
    refuse_inside_inputs,
    setup_logging,
)

INDEX_WORKERS = typer.Option(
    None,
    "--workers",
    min=0,
    help="local: decoding processes (default: threads sized from the cores); "
    "ray: encoder actors (default 1).",
)


@app.command("index")
def index_cmd(
    images: str | None = typer.Option(
        None, "--images", help="Folder of images (any layout), or a URI: s3://, gs://, file://."
    ),
    index: Path = typer.Option(..., "--index", help="Index folder (created when missing)."),
    run: Path | None = typer.Option(None, "--run", help="Trained run: category probabilities."),
    captions: Path | None = typer.Option(None, "--captions", help="Captions file for the images."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone when no --run."),
    encoder: str | None = typer.Option(
        None, "--encoder", help="clip (CLIP image+text space, no mapping) or a backbone name."
    ),
    clip_model: str | None = typer.Option(None, "--clip-model", help="CLIP model (ViT-B-32)."),
    clip_weights: str | None = typer.Option(
        None, "--clip-weights", help="CLIP weights: a pretrained tag, a file, or random."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", min=32, max=1024, help="Input size (pixels)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int | None = INDEX_WORKERS,
    chunk: int = typer.Option(
        512, "--chunk", min=1, help="Images per committed chunk (resume unit)."
    ),
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
        None,
        "--ann-min-rows",
        min=0,
        help="Build an ANN index from this many rows (default 100000).",
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Remove the rows whose files are gone (with or without --images)."
    ),
    review: Path | None = typer.Option(
        None, "--apply-review", help="Review sidecar (Curate page): drop/relabel rows."
    ),
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Index a folder of images; re-running only processes new or changed files."""
    from core.search.store import ANN_MIN_ROWS, IndexConfig, SearchIndexError, build_index

    setup_logging(verbose)
    if index.exists() and not index.is_dir():
        fail(f"--index {index} is a file; give the index folder (created when missing)")
    if images is None:
        if not prune:
            fail("give --images DIR to index a folder, or --prune to drop rows of deleted files")
        _prune(index, as_json)
        return
    _check_images(images)
    refuse_inside_inputs(index, "--index", images)  # it would index itself next time
    _check_key(index)
    ray_options = _ray_options(
        engine, address, workers, gpus_per_worker, cpus_per_worker, ray_resources
    )
    if captions is not None and not captions.is_file():
        fail(f"{captions}: no such captions file")
    reviewed = _review(review)  # checked before any work
    clip_encoder = _clip_encoder(encoder, clip_model, clip_weights, index, device)
    if clip_encoder is None and encoder not in (None, "clip"):
        backbone = backbone or encoder  # --encoder NAME is --backbone NAME for backbones
    config = IndexConfig(
        run_dir=run,
        captions_file=captions,
        backbone=backbone,
        image_size=image_size,
        batch_size=batch_size,
        workers=workers,
        chunk=chunk,
        device=device,
        engine=engine,
        ray_options=ray_options,
        ann_min_rows=ann_min_rows if ann_min_rows is not None else ANN_MIN_ROWS,
        derive=not no_mapping,
        review=reviewed,  # applied before any row is written or anything derived
    )
    # Ray's driver prints cluster messages (retries, dead workers) on stdout; keep stdout for
    # the report, so --json stays one JSON object.
    quiet = contextlib.redirect_stdout(sys.stderr) if engine == "ray" else contextlib.nullcontext()
    try:
        with quiet, progress_bar("indexing", as_json) as progress:
            stats = build_index(images, index, config, encoder=clip_encoder, progress=progress)
    except (SearchIndexError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    _index_report(stats, index, review, prune, not no_mapping, as_json)


def _index_report(
    stats, index: Path, review: Path | None, prune: bool, derived: bool, as_json: bool
) -> None:
    """What `index` did (and --prune after it), as JSON or lines."""
    out = stats.to_dict()
    out.pop("review")
    if stats.review is not None:
        out["review"] = {"file": str(review), **stats.review}
    if prune:
        out["prune"] = _prune(index, as_json, quiet=True)
    if derived:
        out.update(_derived_summary(index))
    if as_json:
        emit_json(out)
        return
    _echo_index(stats, index, out)


def _check_images(images: str) -> None:
    """--images: a URI, or a local folder that holds image files."""
    from core.search.uri import is_uri

    if not is_uri(images) and not Path(images).expanduser().is_dir():
        fail(f"{images}: no such folder")
    if not is_uri(images) and not _has_images(Path(images).expanduser()):
        fail(f"{images}: no image files found (.jpg, .png, ...); nothing to index")


def _ray_options(
    engine: str,
    address: str | None,
    workers: int | None,
    gpus_per_worker: float,
    cpus_per_worker: float,
    ray_resources: str | None,
):
    """--engine and the ray options, checked; RayOptions for --engine ray, else None."""
    from core.search.store import ENGINES

    check_choice("--engine", engine, ENGINES)
    for name, value in (
        ("--gpus-per-worker", gpus_per_worker),
        ("--cpus-per-worker", cpus_per_worker),
    ):
        if not (math.isfinite(value) and value >= 0):  # click's range lets nan through
            fail(f"{name} must be 0 or more, not {value}")
    if engine != "ray":
        return None
    try:
        resources = json.loads(ray_resources) if ray_resources else {}
    except json.JSONDecodeError as exc:
        fail(f"--ray-resources: not JSON ({exc})")
    from core.search.ray_engine import RayOptions  # imports no Ray until it runs

    try:
        return RayOptions(address, workers or 1, gpus_per_worker, cpus_per_worker, resources)
    except ValueError as exc:
        fail(str(exc))


def _echo_index(stats, index: Path, out: dict) -> None:
    typer.echo(
        f"{stats.root}: {stats.found} images, {stats.encoded} encoded, "
        f"{stats.unchanged} unchanged, {stats.moved} moved, {stats.deleted} removed, "
        f"{len(stats.skipped)} skipped; {stats.rows} rows in {index} "
        f"({stats.images_per_second} img/s)"
    )
    if stats.review is not None:
        r = stats.review
        typer.echo(f"  review: {r['removed']} removed, {r['relabelled']} relabelled")
    for s in stats.skipped:
        typer.echo(f"  skipped {s['path']}: {s['reason']}")
    for s in stats.ignored:
        typer.echo(f"  not indexed {s['path']}: {s['reason']}")
    if out.get("mapping"):
        typer.echo(f"  text mapping: {out['mapping']['path']}")


def _check_key(index: Path) -> None:
    """A damaged signing key would drop the keyword model without a word: refused up front."""
    from core.io import SigningKeyError, check_signing_key

    try:
        check_signing_key([index])
    except SigningKeyError as exc:
        fail(str(exc))


def _review(review: Path | None):
    """The review sidecar to apply (core.data.review), checked before any work."""
    if review is None:
        return None
    from core.data.review import ReviewError, load_review

    try:
        return load_review(review)
    except ReviewError as exc:
        fail(str(exc))


def _derived_summary(index: Path) -> dict:
    """What indexing derived for queries (text mapping, categories, floors), from index.json."""
    from core.search.store import read_meta

    meta = read_meta(index)
    sem = meta.get("semantic") or {}
    out: dict = {
        "mapping": None,
        "category_source": meta.get("category_source"),
        "floor": {k: v.get("value") for k, v in (meta.get("floor") or {}).items()},
    }
    if sem.get("mapping"):
        from core.io import read_json

        cfg = read_json(index / sem["mapping"] / "config.json")
        out["mapping"] = {
            "path": str(index / sem["mapping"]),
            "train_captioned_images": cfg.get("train_captioned_images", 0),
            "train_labelled_images": cfg.get("train_labelled_images", 0),
            "heldout_images": len(cfg.get("heldout_images", [])),
        }
    return out


def _clip_encoder(
    encoder: str | None, model: str | None, weights: str | None, index: Path, device: str | None
):
    """The CLIP encoder for `--encoder clip` (or an index built with it), else None."""
    from core.search.index_format import meta_path

    has_meta = meta_path(index).exists()
    if encoder is None and model is None and weights is None and not has_meta:
        return None
    from core.search.clip import ClipWeightsError
    from core.search.encoders import create_image_encoder, spec_for_index
    from core.search.maintenance import read_meta_for_update

    if encoder is None and (model or weights):
        encoder = "clip"
    meta = read_meta_for_update(index, warn=False) if has_meta else {}  # build_index says it
    try:
        spec = spec_for_index(encoder, model, weights, meta)
        return None if spec is None else create_image_encoder(spec, device)
    except (ClipWeightsError, ValueError) as exc:
        fail(str(exc))


def _has_images(folder: Path) -> bool:
    from core.data.dataset import IMAGE_EXTENSIONS

    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))


def _prune(index: Path, as_json: bool, quiet: bool = False) -> dict:
    """`index --prune`: drop the rows whose files are gone (core.search.maintenance)."""
    from core.search.maintenance import prune

    out = prune(index).to_dict()
    if quiet:
        return out
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"{index}: {out['removed']} of {out['checked']} rows removed (file gone)")
        for path in out["paths"][:20]:
            typer.echo(f"  removed {path}")
    return out


def _engine(index: Path):
    from core.search.engine import SearchEngine
    from core.search.store import SearchIndexError

    try:
        return SearchEngine.load(index)
    except (SearchIndexError, OSError, ValueError) as exc:  # missing, half-written, older format
        fail(str(exc))


# A query may start with `-word` (an excluded word): an unknown option is the query's text.
@app.command("search", context_settings={"ignore_unknown_options": True})
def search_cmd(
    query: str = typer.Argument(
        "",
        help="What to look for, in words; `-word` excludes a word (beach -people). "
        "Optional with --like.",
        show_default=False,
    ),
    index: str = typer.Option(..., "--index", help="Index folder or URI (s3://, gs://)."),
    k: int = typer.Option(10, "--k", help="Number of results (1 to 1000)."),
    mode: str = typer.Option("semantic", "--mode", help="keyword, category, semantic or hybrid."),
    category: str | None = typer.Option(None, "--category", help="Only this predicted category."),
    split: str | None = typer.Option(None, "--split", help="Only this split (train, test...)."),
    like: Path | None = typer.Option(
        None,
        "--like",
        help="Rank by similarity to this image; with words: the photo steered by them.",
    ),
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Search the index by text (or by image with --like, optionally steered by words)."""
    from core.search.engine import MODES
    from core.search.query import MAX_K, MAX_QUERY_CHARS, QueryError

    setup_logging(verbose)
    check_choice("--mode", mode, MODES)
    if not 1 <= k <= MAX_K:
        fail(f"--k must be from 1 to {MAX_K}, not {k}")
    if query.startswith("--"):  # a mistyped option, not a query's excluded word
        fail(f"no such option: {query.split()[0]} (an excluded word takes one dash: -word)")
    if len(query) > MAX_QUERY_CHARS:
        fail(
            f"the query is {len(query):,} characters long; at most {MAX_QUERY_CHARS} are used "
            "for a search: describe the scene in a sentence"
        )
    if like is None and not query.strip():
        fail("empty query: give a few words describing a scene (or --like IMAGE)")
    engine = _engine(index)
    if category and category not in engine.classes:
        fail(
            f"unknown category {category!r}; the index has "
            f"{', '.join(engine.classes) or 'no categories'}"
        )
    _check_split(engine, split)
    try:
        if like is not None:
            resp = _like(engine, like, k, category, query)
        else:
            resp = engine.search(query, mode, k, category, split)
    except (QueryError, ValueError) as exc:
        fail(str(exc))
    if like is None and any(n.startswith(("Empty query", "No content words")) for n in resp.notes):
        fail(next(n for n in resp.notes if n.startswith(("Empty query", "No content words"))))
    if as_json:
        emit_json(resp.to_dict())
        return
    typer.echo(
        f"query: {resp.query!r}  mode: {resp.mode}  keywords: {resp.keywords}  "
        f"categories: {resp.categories}  pool: {resp.pool}  search: {resp.search}"
        + (f"  floor: {resp.floor:.2f}" if resp.floor is not None else "")
    )
    for note in resp.notes:
        typer.echo(f"  note: {note}")
    for r in resp.results:
        labels = ", ".join(f"{n} {p:.2f}" for n, p in r.top_labels[:3])
        mark = "  (below the relevance floor)" if r.below_floor else ""
        shown = r.score if r.floor_score is None else r.floor_score  # on the floor's scale
        typer.echo(f"{r.rank:3d}. {shown:.4f}  {r.path}  [{r.category}]  {labels}{mark}")
        for w in r.why:
            typer.echo(f"       why: {w}")


def _check_split(engine, split: str | None) -> None:
    """An unknown --split is an error, not an empty result."""
    if split is None:
        return
    from core.search.evaluate import whole_table

    known = engine.meta.get("splits") or sorted({str(s) for s in whole_table(engine).splits} - {""})
    if split not in known:
        fail(f"unknown split {split!r}; the index has " + (", ".join(known) or "no splits"))


def _like(engine, image: Path, k: int, category: str | None, words: str = ""):
    from core.data.dataset import safe_resolve
    from core.data.images import BadImageError, load_rgb

    resolved = safe_resolve(image)
    if resolved is None:
        fail(f"{image}: a symlink loop, not an image")
    if not words.strip() and engine.table.rows_by_path([str(resolved)], ("path",)):
        return engine.similar(path=str(resolved), k=k, category=category)
    try:
        im = load_rgb(image)
    except BadImageError as exc:
        fail(str(exc))
    info = engine.classify_image(im)
    if words.strip():  # the photo steered by the words
        return engine.search_image_text(info, words, k=k, category=category)
    return engine.similar(feature=info["feature"], k=k, category=category)


@app.command("evaluate-retrieval")
def evaluate_retrieval_cmd(
    index: str = typer.Option(..., "--index", help="Index folder or URI (s3://, gs://)."),
    captions: Path | None = typer.Option(None, "--captions", help="Captions: each is a query."),
    queries: Path | None = typer.Option(None, "--queries", help="CSV query,category."),
    split: str | None = typer.Option(None, "--split", help="Pool for --queries (default test)."),
    modes: str = typer.Option("keyword,category,semantic,hybrid", "--modes"),
    max_queries: int | None = typer.Option(
        None, "--max-queries", min=1, help="Cap (caption queries)."
    ),
    pool: str = typer.Option(
        "all", "--pool", help="Caption queries: rank all images (all) or held-out photos."
    ),
    fitted_apart: bool = typer.Option(
        False, "--fitted-apart", help="Also score, apart, captions that fitted the mapping."
    ),
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Retrieval quality per mode: caption queries (R@k, median rank, MRR) or category
    queries (P@10, AP)."""
    from core.search.evaluate import EvaluationError, evaluate_captions, evaluate_queries

    setup_logging(verbose)
    if (captions is None) == (queries is None):
        fail("give exactly one of --captions FILE or --queries FILE")
    from core.search.engine import MODES

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in mode_list if m not in MODES]
    if unknown or not mode_list:
        fail(
            f"--modes: unknown {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(MODES)}"
        )
    engine = _engine(index)
    _check_split(engine, split)
    try:
        # the bar counts (query, mode) pairs; it goes to stderr, so --json stays clean
        with progress_bar("evaluating", leave=False, unit="query") as progress:
            if captions is not None:
                out = evaluate_captions(
                    engine, captions, mode_list, max_queries, pool, fitted_apart, progress
                )
            else:
                out = evaluate_queries(engine, queries, mode_list, split, progress=progress)
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KB limit
        fail(f"{queries or captions}: not a readable CSV file ({exc})")
    except (EvaluationError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        emit_json(out)
        return
    typer.echo(
        f"{out['kind']}: {out['n_queries']} queries, pool {out['pool']} images"
        + (f" ({out['pool_kind']})" if out.get("pool_kind") else "")
        + (
            f", {out['no_content_queries']} with no content word (scored, ranking nothing)"
            if out.get("no_content_queries")
            else ""
        )
    )
    if out.get("refused"):
        typer.echo(
            f"  refused: {out['refused']['fitted_captions']} captions of "
            f"{out['refused']['fitted_photos']} photos that fitted the mapping"
        )
    for mode, m in out["modes"].items():
        typer.echo(
            f"  {mode:9s} "
            + "  ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()
            )
        )
    for mode, c in (out.get("hybrid_vs") or {}).items():
        lo, hi = c["ci95"]
        typer.echo(
            f"  hybrid - {mode}: {c['metric']} {c['difference']:+.3f} (95% interval {lo:+.3f} "
            f"to {hi:+.3f}, {c['resampled']} resampled; ahead on {c['better']} queries, "
            f"behind on {c['worse']})"
        )
