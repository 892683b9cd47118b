"""`python -m core cache list|clear`: every kind of cached artefact, listed or cleared
(core.curate.caches is the registry)."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli._app import CACHE_OPTION, JSON_OPTION, app, check_choice, emit_json, fail

ACTIONS = ("list", "clear")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command("cache")
def cache_cmd(
    action: str = typer.Argument("list", help="list (default) or clear"),
    kind: list[str] | None = typer.Option(
        None, "--kind", help="Only this kind (repeatable); clear without --kind clears all."
    ),
    cache: Path | None = CACHE_OPTION,
    index: Path | None = typer.Option(
        None, "--index", help="Index folder (default: $SCENESEEK_INDEX, then <cache>/index)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the caches (kind, entries, size; the encoding store per encoder) or clear them."""
    from core.config import INDEX_ENV, env_path, resolve_cache_dir
    from core.curate.caches import KIND_NAMES, clear_caches, list_caches

    check_choice("action", action, ACTIONS)
    for k in kind or []:
        check_choice("--kind", k, KIND_NAMES)
    cache_dir = resolve_cache_dir(cache)
    index_dir = Path(index) if index else env_path(INDEX_ENV) or cache_dir / "index"
    if action == "clear":
        try:
            removed = clear_caches(cache_dir, index_dir, list(kind) if kind else None)
        except ValueError as exc:
            fail(str(exc))
        if as_json:
            emit_json({"cache": str(cache_dir), "removed": removed})
            return
        for name, n in removed.items():
            typer.echo(f"{name:16s} {n} removed")
        return
    rows = [r for r in list_caches(cache_dir, index_dir) if not kind or r["kind"] in kind]
    if as_json:
        emit_json({"cache": str(cache_dir), "index": str(index_dir), "kinds": rows})
        return
    typer.echo(f"cache folder {cache_dir}")
    for r in rows:
        typer.echo(
            f"{r['kind']:16s} {r['entries']:7d} entries {_size(r['bytes']):>10s}  {r['what']}"
        )
        for ident in r.get("identities", []):
            typer.echo(
                f"  {ident['identity']}: {ident['entries']} photos, {ident['shards']} shards, "
                f"{_size(ident['bytes'])}"
            )
