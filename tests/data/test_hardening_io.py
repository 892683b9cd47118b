"""Hardening: strict JSON everywhere, unreadable metadata named, pickles that are data or
verified before they are loaded (issue 14, classes "Security" and "--json must parse")."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.io import (
    MetadataError,
    atomic_write_json,
    dumps_json,
    load_signed_pickle,
    read_json,
    save_signed_pickle,
)
from tests.helpers import REPO, strict_loads


def test_json_output_is_strict_nan_and_infinity_become_null() -> None:
    df = pd.DataFrame({"note": [None, "x"], "w": [np.nan, 1.5]})
    obj = {
        "nan": float("nan"),
        "inf": -math.inf,
        "np": np.float32("nan"),
        "arr": np.array([1.0, np.nan, np.inf]),
        "records": df.to_dict("records"),
        "na": pd.NA,
        "path": Path("/x"),
        "ok": [1, 2.5, True, None, "é"],
    }
    out = strict_loads(dumps_json(obj))
    assert out["nan"] is None and out["inf"] is None and out["np"] is None
    assert out["arr"] == [1.0, None, None]
    assert out["records"][0] == {"note": None, "w": None}
    assert out["na"] is None and out["path"] == "/x" and out["ok"] == [1, 2.5, True, None, "é"]


def test_unreadable_metadata_file_is_named(tmp_path: Path) -> None:
    good = atomic_write_json(tmp_path / "good.json", {"a": float("nan")})
    assert read_json(good) == {"a": None}
    for name, data, why in [
        ("garbage.json", b"\x00\xff\xfe garbage", "not UTF-8"),
        ("truncated.json", b'{"roots": {"a": [1, 2', "not valid JSON"),
        ("empty.json", b"", "empty"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(MetadataError, match=why) as info:
            read_json(path, rebuild_hint="run index again")
        assert str(path) in str(info.value) and "run index again" in str(info.value)
        assert "\n" not in str(info.value)


class _Boom:
    """Unpickling this runs code: the classic pickle attack (it would create a file)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_signed_pickle_round_trip_and_refusals(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(tmp_path / "key" / "cache.key"))
    path = tmp_path / "model.pkl"
    assert save_signed_pickle(path, {"w": [1, 2, 3]})
    assert load_signed_pickle(path) == {"w": [1, 2, 3]}
    assert (tmp_path / "key" / "cache.key").stat().st_mode & 0o077 == 0  # private key file

    # A plain pickle dropped into a shared folder is never unpickled.
    pwned = tmp_path / "pwned"
    path.write_bytes(pickle.dumps(_Boom(pwned)))
    assert load_signed_pickle(path) is None and not pwned.exists()

    # Signed by someone else's key (their folder, copied here): refused too.
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(tmp_path / "theirs.key"))
    save_signed_pickle(path, _Boom(pwned))
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(tmp_path / "key" / "cache.key"))
    assert load_signed_pickle(path) is None and not pwned.exists()

    # A signed file altered afterwards: refused.
    save_signed_pickle(path, {"w": 1})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_signed_pickle(path) is None


def test_no_unverified_pickle_loads_in_the_project() -> None:
    """Every pickle/joblib/torch.load in core and dashboard is data-only or verified."""
    offenders = []
    for py in [*REPO.joinpath("core").rglob("*.py"), *REPO.joinpath("dashboard").rglob("*.py")]:
        for n, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            bad = (
                "pickle.load" in code
                or "joblib.load" in code
                or "allow_pickle=True" in code
                or "weights_only=False" in code
                or ("torch.load(" in code and "weights_only=True" not in code)
            )
            if bad and py.name != "io.py":  # core/io.py verifies the HMAC before unpickling
                offenders.append(f"{py.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_clip_weights_file_with_code_is_refused(tmp_path: Path) -> None:
    """`--clip-weights FILE` holding a pickled object: refused in one line, nothing run, and
    never torch's advice to load it unsafely."""
    import torch

    from core.search.clip import ClipWeightsError, load_clip

    pwned = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Boom(pwned)}, evil)
    with pytest.raises(ClipWeightsError) as info:
        load_clip(weights=str(evil), device="cpu")
    msg = str(info.value)
    assert "refused" in msg and str(evil) in msg and "\n" not in msg
    assert "weights_only" not in msg and "can still be loaded" not in msg
    assert not pwned.exists()
