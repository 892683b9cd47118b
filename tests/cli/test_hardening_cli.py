"""Hardening of the command line: one stderr line per failure (usage errors included), the
top-level safety net, option ranges, strict --json, and the data-layer faults the CLI reports
(issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli._app import describe_error
from tests.helpers import REPO, run_cli, strict_loads
from tests.hostile import make_hostile_tree


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_hostile_tree(tmp_path_factory.mktemp("hostile"))


def one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and "╭" not in res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["search", "--index", "IDX", "q", "--k", "0"], "--k"),
        (
            ["evaluate-retrieval", "--index", "IDX", "--captions", "c", "--max-queries", "-5"],
            "--max-queries",
        ),
        (["index", "--images", "D", "--index", "IDX", "--batch-size", "0"], "--batch-size"),
        (["index", "--images", "D", "--index", "IDX", "--image-size", "0"], "--image-size"),
        (["pca", "--train", "a", "--test", "b", "--components", "0"], "--components"),
        (["keywords", "--text", "x", "--top", "-1"], "--top"),
        (["search", "--index"], "--index"),
        (["nosuch-command"], "nosuch-command"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], says: str) -> None:
    line = one_error_line(run_cli(*args))  # not a multi-line usage box
    assert says in line


def test_safety_net_unexpected_errors_are_one_line_with_a_hint() -> None:
    msg, code = describe_error(KeyError("boom"))
    assert code == 1 and "unexpected KeyError" in msg and "--debug" in msg
    from core.data.dataset import DatasetError

    assert describe_error(DatasetError("bad folder\nsecond line")) == ("bad folder second line", 2)
    msg, _ = describe_error(FileNotFoundError(2, "No such file or directory", "/x/y"))
    assert msg == "/x/y: No such file or directory"
    msg, code = describe_error(RuntimeError("lance error: LanceError(IO): failed\n at x.rs:1"))
    assert code == 2 and "index table is damaged" in msg and "\n" not in msg


BOOM = """
import sys
from core.cli import app, main

@app.command("boom")
def boom() -> None:
    raise KeyError("surprise")

main()
"""


def test_debug_shows_the_traceback_in_a_real_process(hostile: dict[str, Path]) -> None:
    """Real subprocesses: a clear message, the safety net without and with --debug."""
    cmd = [sys.executable, "-m", "core", "keywords", "--captions", str(hostile["loop_top"])]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "symlink" in res.stderr
    boom = [sys.executable, "-c", BOOM, "boom"]
    res = subprocess.run(boom, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        "error: unexpected KeyError: 'surprise' (run again with --debug for the traceback)"
    )
    res = subprocess.run([*boom, "--debug"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode != 0 and "Traceback" in res.stderr and "KeyError" in res.stderr


def test_dataset_json_is_strict_and_lists_every_problem(hostile: dict[str, Path]) -> None:
    res = run_cli("dataset", "--data", hostile["data"], "--json")
    assert res.exit_code == 0, res.stderr
    out = strict_loads(res.stdout)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in out["skipped"]}
    assert reasons["zero.jpg"] == "zero-byte"
    assert reasons["truncated.jpg"] == "truncated"
    assert reasons["strip.png"] == "too-large"
    assert reasons["loop.jpg"] == "unreadable"  # a symlink loop is one skipped file
    assert out["problems"]["used: converted from I;16"] == 1
    ignored = {Path(i["path"]).name: i["reason"] for i in out["ignored"]}
    assert "extra" in ignored and "not read" in ignored["extra"]  # listed, never silent


def test_dataset_text_report_names_the_extra_folder(hostile: dict[str, Path]) -> None:
    res = run_cli("dataset", "--data", hostile["data"])
    assert res.exit_code == 0 and "extra: folder beside the split folders" in res.stdout


def test_mapping_that_is_not_utf8_json_is_one_line(hostile: dict[str, Path]) -> None:
    line = one_error_line(
        run_cli("keywords", "--text", "a lake", "--mapping", hostile["garbage_json"])
    )
    assert "not UTF-8" in line and str(hostile["garbage_json"]) in line
    env = {"SCENESEEK_MAPPING": str(hostile["garbage_json"])}
    line = one_error_line(run_cli("keywords", "--text", "a lake", env=env))
    assert "mapping table" in line and "not UTF-8" in line
    bad = hostile["garbage_json"].with_name("deep.json")
    bad.write_text("[" * 100_000, encoding="utf-8")
    line = one_error_line(run_cli("keywords", "--text", "a lake", "--mapping", bad))
    assert "not valid JSON" in line


def test_wrong_csv_header_is_refused_with_the_expected_formats(hostile: dict[str, Path]) -> None:
    line = one_error_line(run_cli("keywords", "--captions", hostile["wrong_header"], "--json"))
    assert "`filename,text` is not a header" in line and "image,caption" in line


def test_non_utf8_captions_are_read_and_said(hostile: dict[str, Path]) -> None:
    res = run_cli("keywords", "--captions", hostile["latin1"], "--json", "--no-yake")
    assert res.exit_code == 0, res.stderr
    out = strict_loads(res.stdout)
    assert any("not valid UTF-8" in n for n in out["notes"])
    assert "château" in json.dumps(out, ensure_ascii=False)


def test_index_refuses_a_file_and_an_empty_folder(hostile: dict[str, Path], tmp_path) -> None:
    line = one_error_line(
        run_cli("index", "--images", hostile["data"], "--index", hostile["a_file"])
    )
    assert "is a file" in line
    line = one_error_line(run_cli("index", "--images", hostile["empty_dir"], "--index", tmp_path))
    assert "no image files found" in line
    assert "--prune" in one_error_line(run_cli("index", "--index", tmp_path / "i"))


def test_search_on_a_missing_index_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(run_cli("search", "--index", tmp_path / "nothing", "a lake"))
    assert str(tmp_path / "nothing") in line and "index" in line


def test_stage_bars_open_one_bar_per_stage_and_close_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """StageBars (audit, train): a new stage closes the previous bar, close() and the end of
    the with-block close the open one, and each bar gets its own stage's counts."""
    import contextlib

    from core.cli import _app

    events: list[tuple] = []

    @contextlib.contextmanager
    def recorder(desc: str, quiet: bool = False, leave: bool = True):
        events.append(("open", desc, quiet, leave))
        yield lambda done, total: events.append((desc, done, total))
        events.append(("close", desc))

    monkeypatch.setattr(_app, "progress_bar", recorder)
    with _app.StageBars(quiet=True) as stage:
        stage("features", 1, 4)
        stage("features", 4, 4)
        stage("neighbours", 2, 9)
        stage.close()
        stage("features", 3, 3)  # a stage seen before opens a fresh bar
    assert events == [
        ("open", "features", True, False),
        ("features", 1, 4),
        ("features", 4, 4),
        ("close", "features"),
        ("open", "neighbours", True, False),
        ("neighbours", 2, 9),
        ("close", "neighbours"),
        ("open", "features", True, False),
        ("features", 3, 3),
        ("close", "features"),
    ]


def _evil_pickle(target: Path):
    """An object whose unpickling would create `target`: the classic pickle attack."""

    class Evil:
        def __reduce__(self):
            return (Path.touch, (target,))

    return Evil()


def test_garbage_weights_files_are_one_clear_line(hostile: dict[str, Path], tmp_path) -> None:
    """`--weights` naming anything but a state dict of tensors: one line that says what the
    file is, never torch's advice to load with weights_only=False, never code run."""
    import torch

    from core.vision.backbones import BackboneWeightsError, create_backbone

    pwned = tmp_path / "pwned"
    files = {
        "text.pth": (b"hello, this is text " * 10, "truncated or not a PyTorch file"),
        "random.pth": (bytes(range(256)) * 4, "truncated or not a PyTorch file"),
        "list.pth": ([torch.zeros(3)], "not a state dict of named tensors (found list)"),
        "nested.pth": ({"a": {"b": torch.zeros(1)}}, "not a state dict of named tensors"),
        "evil.pth": ({"x": _evil_pickle(pwned)}, "holds Python objects"),
    }
    for name, (content, says) in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        with pytest.raises(BackboneWeightsError) as info:
            create_backbone("efficientnet_lite0", weights=path)
        msg = str(info.value)
        assert says in msg and str(path) in msg and "\n" not in msg, msg
        assert "weights_only" not in msg  # never the advice to load unsafely
    assert not pwned.exists()
    res = run_cli(
        "train",
        "--train",
        hostile["train"],
        "--test",
        hostile["test"],
        "--out",
        tmp_path / "run",
        "--weights",
        tmp_path / "text.pth",
        "--workers",
        "0",
    )
    line = one_error_line(res)
    text = tmp_path / "text.pth"
    assert line.startswith(f"error: cannot read weights file {text}: truncated or not a PyTorch")
    assert not (tmp_path / "run").exists()


def test_index_lists_what_a_split_layout_does_not_read(hostile: dict[str, Path]) -> None:
    """`index` on a train/test folder: an extra/ folder beside them and an image outside a
    class folder are listed as not indexed (IndexStats.ignored), never dropped silently."""
    from core.search.store import list_images

    loose = hostile["train"] / "loose.jpg"
    loose.write_bytes(hostile["good"].read_bytes())
    try:
        ignored: list[dict] = []
        files = list_images(hostile["data"], ignored)
    finally:
        loose.unlink()
    reasons = {Path(i["path"]).name: i["reason"] for i in ignored}
    assert set(reasons) == {"extra", "loose.jpg"}  # not the loop's .b link: not an image name
    assert "folder beside the split folders" in reasons["extra"]
    assert reasons["loose.jpg"] == "file outside a class folder"
    assert not any("/extra/" in f.path or f.path.endswith("loose.jpg") for f in files)
    assert {f.split for f in files} == {"train", "test"}
