"""Fuzz-style: every CLI command (as `python -m core --help` lists them) on a folder of hostile
files. Whatever happens: no traceback, a non-zero exit only with one line on stderr, and
`--json` output that a strict parser reads (issue 14).

Most runs go through the Typer app in this process (imports paid once); a few are real
subprocesses. Commands added later are fuzzed too: every option of every command gets a hostile
value chosen by what the option names (a folder, a file, a number).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from core.cli import app
from tests.helpers import REPO, run_cli, strict_loads
from tests.hostile import make_hostile_tree

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")

FOLDER_OPTS = {"--data", "--train", "--test", "--val", "--images", "--index", "--run", "--out"}
FILE_OPTS = {"--captions", "--queries", "--mapping", "--weights", "--paths", "--apply-review"}
NUMBER_OPTS_SKIP = {"--seed"}


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_fuzz_folder(tmp_path_factory.mktemp("fuzz"))


def make_fuzz_folder(root: Path) -> dict[str, Path]:
    """The hostile tree plus a garbage run folder and a garbage index folder."""
    p = make_hostile_tree(root)
    run = root / "garbage_run"
    run.mkdir()
    (run / "config.json").write_bytes(b'{"backbone": "efficientnet_lite0", "class_na')
    (run / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    (run / "checkpoint_best.pt").write_bytes(b"\x80\x04garbage")
    p["run"] = run
    bad_index = root / "bad_index"
    bad_index.mkdir()
    (bad_index / "index.json").write_bytes(b'{"version": 1, "roots": {"/x": {"captio')
    p["bad_index"] = bad_index
    p["cache"] = root / "cache"
    return p


def _commands() -> dict[str, typer.core.TyperCommand]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _value_for(opt: str, h: dict[str, Path], variant: int) -> str | None:
    """A hostile value for an option, by what its name says it takes."""
    if opt == "--apply-review":  # review files that are JSON but wrong, and garbage
        reviews = sorted(k for k in h if k.startswith("review_"))
        return str(h[([*reviews, "garbage_json", "devzero"])[variant % (len(reviews) + 2)]])
    if opt in FOLDER_OPTS:
        return str([h["a_file"], h["loop_top"], h["empty_dir"], h["data"]][variant % 4])
    if opt in FILE_OPTS:
        return str(
            [h["garbage_json"], h["wrong_header"], h["loop_top"], h["latin1"], h["empty"]][
                variant % 5
            ]
        )
    return None


def _kind(param) -> str:
    """int, float, bool or str: what an option takes (typer or plain click parameters)."""
    desc = getattr(param, "type_descriptor", None)
    text = str(getattr(desc, "annotation", "")) + " " + str(getattr(param, "type", ""))
    for kind in ("bool", "float", "int"):
        if kind in text.lower():
            return kind
    return "str"


# Base values that fail fast if everything else passes (a run folder that is a file, an index
# that is garbage): no fuzz case trains a model or builds an index.
BASE_VALUES = {"--out": "a_file", "--index": "bad_index", "--run": "run"}


def _base_args(cmd, h: dict[str, Path]) -> list[str]:
    """The command's required options and arguments, filled with hostile-but-plausible values
    (the hostile data folder, a wrong-header CSV, a 150000x8 PNG), so that each fuzzed option
    reaches the command's own code rather than a usage error."""
    args: list[str] = []
    for param in cmd.params:
        if not param.required:
            continue
        opt = param.opts[0]
        if not opt.startswith("-"):  # an argument: a query text or image files
            args.append(str(h["strip"]) if "image" in param.name else "森の中の湖 near a lake")
            continue
        value = BASE_VALUES.get(opt) or _value_for(opt, h, 3)
        value = value or {"int": "1", "float": "0.5"}.get(_kind(param), "x")
        args += [opt, str(h[value]) if value in h else value]
    return args


def _generic_cases(name: str, cmd, h: dict[str, Path]) -> list[list[str]]:
    """[cmd] alone, its required options, then each value option given something hostile
    (one at a time, on top of the required ones)."""
    base = _base_args(cmd, h)
    cases = [[name], [name, *base, "--json"]]
    if name in _specific_cases(h):
        cases = [[name]]  # its own cases run it on the hostile files
    for param in cmd.params:
        if not param.opts[0].startswith("--") or param.required:
            continue
        opt = param.opts[0]
        if opt in NUMBER_OPTS_SKIP or opt == "--cache":
            continue
        kind = _kind(param)
        if kind == "bool":
            continue
        value = _value_for(opt, h, len(cases))
        if value is None:
            value = {"int": "-5", "float": "nan"}.get(kind, "\x00bad")
        cases.append([name, *base, opt, value, "--json"])
    return cases


def _specific_cases(h: dict[str, Path]) -> dict[str, list[list[str]]]:
    d, tr, te = str(h["data"]), str(h["train"]), str(h["test"])
    idx = str(h["bad_index"])
    return {
        "dataset": [["--data", d, "--json"], ["--data", d], ["--data", str(h["loop_top"])]],
        "pca": [
            ["--train", tr, "--test", te, "--json", "-k", "3", "--image-size", "8"],
            ["--train", str(h["empty_dir"]), "--test", te],
            ["--train", tr, "--test", te, "--method", "nosuch"],
        ],
        "keywords": [
            ["--captions", str(h["latin1"]), "--json", "--no-yake", "--eval-sample", "5"],
            ["--captions", str(h["wrong_header"]), "--json"],
            ["--captions", str(h["garbage_json"])],
            ["--text", "森の中の湖 château", "--json"],
            ["--text", "a lake", "--mapping", str(h["garbage_json"])],
        ],
        "train": [
            ["--train", tr, "--test", te, "--out", str(h["a_file"]), "--json"],
            ["--train", tr, "--test", te, "--out", str(h["empty_dir"] / "r"), "--device", "tpu9"],
            ["--train", tr, "--test", te, "--out", str(h["empty_dir"] / "r2"), "--image-size", "0"],
            [
                "--train",
                tr,
                "--test",
                te,
                "--out",
                str(h["empty_dir"] / "r3"),
                "--weights",
                str(h["garbage_json"]),
            ],
            ["--train", tr, "--test", te, "--out", str(h["run"]), "--resume"],
        ],
        "evaluate": [["--run", str(h["run"]), "--test", te, "--json"]],
        "predict": [
            ["--run", str(h["run"]), str(h["strip"]), "--json"],
            ["--run", str(h["empty_dir"]), str(h["png16"])],
        ],
        "index": [
            ["--images", str(h["empty_dir"]), "--index", str(h["empty_dir"] / "i"), "--json"],
            ["--images", d, "--index", str(h["a_file"])],
            ["--images", d, "--index", idx, "--engine", "nosuch"],
            ["--index", idx, "--prune", "--json"],
        ],
        "search": [
            ["a lake", "--index", idx, "--json"],
            ["a lake", "--index", str(h["empty_dir"]), "--k", "0"],
            ["a lake", "--index", idx, "--like", str(h["loop_top"])],
            ["a lake", "--index", idx, "--split", "nosuch"],
        ],
        "export": _export_cases(h),
        "audit": [
            ["--images", str(h["a_file"]), "--json"],
            ["--images", d, "--threshold", "nan"],
            ["--images", d, "--cache", str(h["train"] / "cache")],
            ["--images", d, "--run", str(h["run"]), "--json"],
        ],
        "evaluate-retrieval": [
            ["--index", idx, "--captions", str(h["wrong_header"]), "--json"],
            ["--index", idx, "--queries", str(h["latin1"]), "--max-queries", "-5"],
            ["--index", idx, "--captions", str(h["empty"]), "--modes", "nosuch"],
        ],
    }


def _export_cases(h: dict[str, Path]) -> list[list[str]]:
    """export on the hostile data folder: an output inside it, each hostile review file, a
    list of paths that is not UTF-8 or is /dev/zero, a garbage index."""
    d, new = str(h["data"]), str(h["empty_dir"] / "export_never_written")
    cases = [
        ["--images", d, "--out", str(h["train"] / "exported"), "--json"],
        ["--images", d, "--out", new, "--paths", str(h["latin1"])],
        ["--images", d, "--out", new, "--paths", str(h["devzero"])],
        ["--images", d, "--out", new, "--paths", str(h["fifo"])],
        ["--index", str(h["bad_index"]), "--query", "a lake", "--out", new, "--json"],
        ["--images", d, "--out", new, "--cache", str(h["train"] / "c")],
    ]
    for name in sorted(k for k in h if k.startswith("review_")):
        cases.append(["--images", d, "--out", new, "--apply-review", str(h[name]), "--json"])
    return cases


def _all_cases(h: dict[str, Path]) -> list[list[str]]:
    specific = _specific_cases(h)
    cases: list[list[str]] = []
    for name, cmd in _commands().items():
        cases += [[name, *args] for args in specific.get(name, [])]
        cases += _generic_cases(name, cmd, h)
    return cases


def check_outcome(args: list[str], code: int, stdout: str, stderr: str) -> None:
    where = " ".join(args)
    assert "Traceback" not in stderr + stdout, f"{where}: traceback\n{stderr[-2000:]}"
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
    lines = [ln for ln in lines if not re.search(r"\d+%\|", ln)]  # tqdm bars
    if code != 0:
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {stderr[-2000:]}"
        assert not stdout.strip() or "--json" not in args or _parses(stdout), where
    elif "--json" in args and stdout.strip():
        strict_loads(stdout)


def _parses(text: str) -> bool:
    strict_loads(text)
    return True


def test_every_command_is_fuzzed(h: dict[str, Path]) -> None:
    names = set(_commands())
    assert {"dataset", "pca", "keywords", "index", "search", "evaluate-retrieval"} <= names
    covered = {c[0] for c in _all_cases(h)}
    assert covered == names


@pytest.mark.slow
def test_fuzz_every_command_in_process(h: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setenv("SCENESEEK_CACHE", str(h["cache"]))
    monkeypatch.chdir(h["empty_dir"])  # nothing lands in the working tree
    failures = []
    for args in _all_cases(h):
        logging.root.handlers.clear()  # each run's log handler writes to its own stderr
        res = run_cli(*args)
        try:
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                raise AssertionError(f"{' '.join(args)}: raised {res.exception!r}")
            check_outcome(args, res.exit_code, res.stdout, res.stderr)
        except (AssertionError, ValueError) as exc:
            failures.append(str(exc)[:600])
    assert not failures, "\n\n".join(failures)
    # Every export case is refused before it writes anything.
    assert not (h["empty_dir"] / "export_never_written").exists()
    assert not (h["train"] / "exported").exists() and not (h["train"] / "cache").exists()


REAL_PROCESS_CASES = [
    ["dataset", "--data", "{data}", "--json"],
    ["keywords", "--captions", "{wrong_header}", "--json"],
    ["search", "a lake", "--index", "{bad_index}", "--k", "0"],
    ["predict", "--run", "{run}", "{strip}"],
]


@pytest.mark.parametrize("template", REAL_PROCESS_CASES, ids=lambda t: t[0])
def test_fuzz_in_real_processes(h: dict[str, Path], template: list[str]) -> None:
    args = [a.format(**{k: str(v) for k, v in h.items()}) for a in template]
    env = {**os.environ, "SCENESEEK_CACHE": str(h["cache"])}
    res = subprocess.run(
        [sys.executable, "-m", "core", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    check_outcome(args, res.returncode, res.stdout, res.stderr)
