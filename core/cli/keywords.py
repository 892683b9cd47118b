"""`python -m core keywords`: caption keywords for a file, or keywords of one text."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli._app import JSON_OPTION, VERBOSE_OPTION, app, emit_json, fail, setup_logging


@app.command("keywords")
def keywords_cmd(
    captions: Path | None = typer.Option(
        None, "--captions", help="Captions file (captions.txt, results.csv, token.txt or plain)."
    ),
    text: str | None = typer.Option(None, "--text", help="Analyse one text instead of a file."),
    mapping_path: Path | None = typer.Option(
        None, "--mapping", help="Mapping table JSON (default: $SCENESEEK_MAPPING, saved, packaged)."
    ),
    top: int = typer.Option(500, "--top", min=1, help="Words kept in the overall rankings."),
    top_n: int = typer.Option(25, "--top-n", min=1, help="Chi-square words per category."),
    eval_sample: int = typer.Option(
        2000, "--eval-sample", min=1, help="Held-out captions compared."
    ),
    no_yake: bool = typer.Option(False, "--no-yake", help="Skip YAKE in the comparison."),
    as_json: bool = JSON_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """TF-IDF, chi-square, PMI, mapping-table categories and the keyword HMM, measured."""
    from core.data.captions import CaptionFileError
    from core.text import (
        Mapping,
        MappingError,
        PipelineConfig,
        analyze_text,
        fit_keyword_model,
        report_on_file,
    )
    from core.text.categories import mapping_source
    from core.text.model import find_split_file

    setup_logging(verbose)
    if captions is None and text is None:
        fail(
            "give --captions FILE, --text TEXT, or both (the text analysed with a model "
            "fitted on the file)"
        )
    try:
        mapping = Mapping.load(mapping_path)
    except MappingError as exc:
        fail(str(exc))

    model = None
    if text is not None and captions is not None:
        try:
            model = fit_keyword_model(_read(captions), mapping, find_split_file(captions))
        except ValueError as exc:
            fail(f"{captions}: {exc}")
    if text is not None:
        a = analyze_text(text, mapping, model)
        out = {
            "text": a.text,
            "tokens": a.tokens,
            "keywords": a.keywords,
            "categories": a.categories,
            "scores": a.scores,
            "why": a.why,
            "mapping": mapping.source,
            "model": f"fitted on {captions}" if model is not None else "mapping table only",
        }
        if as_json:
            emit_json(out)
        else:
            typer.echo(f"keywords:   {', '.join(a.keywords) or '(none)'}")
            typer.echo(f"categories: {', '.join(a.categories) or '(none)'}")
            for line in a.why:
                typer.echo(f"  {line}")
        return

    cfg = PipelineConfig(top=top, top_n=top_n, eval_sample=eval_sample, run_yake=not no_yake)
    try:
        _, report = report_on_file(captions, mapping, cfg)
    except CaptionFileError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"{captions}: {exc}")
    if report is None:
        fail(f"{captions}: no captions to analyse")
    out = report.to_json()
    out["mapping"] = {"source": mapping.source, "how": mapping_source(mapping_path)}
    if as_json:
        emit_json(out)
        return
    _print_report(out)


def _read(path: Path):
    from core.data.captions import CaptionFileError, read_captions

    try:
        return read_captions(path)
    except CaptionFileError as exc:
        fail(str(exc))


def _print_report(d: dict) -> None:
    typer.echo(f"{d['source']}: {d['format']} ({d['format_reason']}), {d['encoding']}")
    typer.echo(
        f"  {d['n_captions']} captions, {d['n_images']} images, {d['n_malformed']} malformed"
    )
    for m in d["malformed"][:10]:
        typer.echo(f"    line {m['line']}: {m['reason']}")
    for note in d["notes"]:
        typer.echo(f"  note: {note}")
    typer.echo(f"  {d['preprocessing']}")
    typer.echo("  categories: " + ", ".join(f"{c}={n}" for c, n in d["category_counts"].items()))
    typer.echo("  top TF-IDF: " + ", ".join(r["word"] for r in d["top_tfidf"][:15]))
    for cat, rows in d["top_chi2"].items():
        typer.echo(f"  chi2 {cat:9s}: " + ", ".join(r["word"] for r in rows[:10]))
    typer.echo(
        "  top PMI bigrams: "
        + ", ".join(f"{b['w1']} {b['w2']} ({b['pmi']:.1f})" for b in d["top_pmi"][:8])
    )
    if d["hmm"]:
        typer.echo(
            f"  HMM on {d['hmm']['n_heldout']} held-out captions: precision "
            f"{d['hmm']['precision']:.3f}, recall {d['hmm']['recall']:.3f}"
        )
    for name, m in d.get("comparison", {}).get("methods", {}).items():
        typer.echo(f"    {name:28s} P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.3f}")
    unseen = d.get("comparison", {}).get("unseen_words") or {}
    if unseen:
        typer.echo(
            f"  HMM seeded with half the table; hidden words: {', '.join(unseen['hidden_words'])}"
        )
        for name, m in unseen["methods"].items():
            typer.echo(
                f"    {name:28s} P={m['precision']:.3f} R={m['recall']:.3f} "
                f"R(hidden)={m['recall_hidden']:.3f}"
            )
    c = d.get("classifier") or {}
    if c.get("n"):
        typer.echo(
            f"  classifier on {c['n']} single-category held-out captions: with table "
            f"{c['with_table']:.3f}, context only {c['context_only']:.3f}, "
            f"majority {c['majority_baseline']:.3f}"
        )
    typer.echo("  seconds: " + ", ".join(f"{k}={v:.2f}" for k, v in d["seconds"].items()))
