"""`python -m core keywords`: --json keys for a file and for one text; clear errors."""

from __future__ import annotations

from pathlib import Path

from core.data.captions import read_captions
from core.text import Mapping, analyze_text, fit_keyword_model
from tests.helpers import cli_json, require_shared, run_cli


def _subset(tmp_path: Path, n: int = 1500) -> Path:
    src = require_shared("flickr8k", "captions.txt")
    with open(src, encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(n + 1)]
    f = tmp_path / "captions.txt"
    f.write_text("".join(lines) + "not,a,caption row\n", encoding="utf-8")
    return f


def test_keywords_json_for_a_file(tmp_path: Path) -> None:
    f = _subset(tmp_path)
    d = cli_json("keywords", "--captions", f, "--top", "40", "--eval-sample", "200")
    for key in (
        "format",
        "n_captions",
        "n_malformed",
        "top_tfidf",
        "top_chi2",
        "top_pmi",
        "category_counts",
        "hmm",
        "seconds",
        "comparison",
        "classifier",
    ):
        assert key in d
    assert d["format"] == "flickr8k-csv" and d["n_captions"] == 1500
    assert d["n_malformed"] == 1 and d["malformed"][0]["line"] == 1502
    assert len(d["top_tfidf"]) == 40 and set(d["top_chi2"]) >= {"sea", "street"}
    assert {"precision", "recall"} <= set(d["hmm"])
    assert {"w1", "w2", "pmi", "npmi", "count"} <= set(d["top_pmi"][0])
    assert all(v >= 0 for v in d["seconds"].values())


def test_keywords_text_json() -> None:
    d = cli_json("keywords", "--text", "A serene lake surrounded by forest.")
    assert d["categories"] == ["forest"] and d["keywords"][0] == "forest"
    assert d["model"] == "mapping table only"


def test_keywords_text_with_a_fitted_model(tmp_path: Path) -> None:
    """--text with --captions: the text analysed with fit_keyword_model's model of the file."""
    f = _subset(tmp_path, 800)
    text = "Two dogs play in the snow by the mountains"
    d = cli_json("keywords", "--captions", f, "--text", text)
    assert d["model"] == f"fitted on {f}"
    model = fit_keyword_model(read_captions(f), Mapping.load())
    a = analyze_text(text, model.mapping, model)
    assert (d["keywords"], d["categories"], d["scores"]) == (a.keywords, a.categories, a.scores)
    assert set(d["keywords"][:2]) == {"snow", "mountains"}


def test_keywords_text_plain_output() -> None:
    r = run_cli("keywords", "--text", "Waves on the beach")
    assert r.exit_code == 0 and "categories: sea" in r.stdout


def test_keywords_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = run_cli("keywords", "--captions", empty, "--json")
    assert r.exit_code == 2 and "empty" in r.stderr
    r = run_cli("keywords")
    assert r.exit_code == 2 and "--captions" in r.stderr
    bad = tmp_path / "m.json"
    bad.write_text('{"categories": {"a": ["x y"]}}')
    r = run_cli("keywords", "--text", "x", "--mapping", bad)
    assert r.exit_code == 2 and "mapping table" in r.stderr


def test_keywords_human_output(tmp_path: Path) -> None:
    f = _subset(tmp_path, 600)
    r = run_cli("keywords", "--captions", f, "--no-yake", "--eval-sample", "100")
    assert r.exit_code == 0, r.output
    assert "flickr8k-csv" in r.stdout and "line 602" in r.stdout and "seconds:" in r.stdout
