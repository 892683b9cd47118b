"""What the benchmarks share: the shared Intel data and an even, deterministic pick of it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.config import shared_data_dir  # noqa: E402


def default_data() -> Path:
    """The shared Intel data ($SCENESEEK_SHARED_DATA/intel, else ../shared/data/intel)."""
    return shared_data_dir() / "intel"


def pick_from(folder: Path, n: int) -> list[Path]:
    """n images spread evenly over the class folders of `folder` (sorted, deterministic)."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    per = -(-n // len(classes))
    out: list[Path] = []
    for c in classes:
        files = sorted(c.glob("*.jpg"))
        out += files[:: max(1, len(files) // per)][:per]
    return out[:n]


def pick_images(root: Path, n: int) -> list[Path]:
    """n images spread evenly over the classes of seg_train (sorted, deterministic)."""
    return pick_from(root / "seg_train", n)


def cpu_name(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo, else `default`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def copy_images(paths: list[Path], dest: Path) -> int:
    """Copy each image to dest/<its class folder>/<name>; the number copied."""
    for p in paths:
        (dest / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / p.parent.name / p.name)
    return len(paths)
