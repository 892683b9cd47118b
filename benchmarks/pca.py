"""Benchmark: the study's eigen-image script against `EigenImageClassifier`, same pixels.

    python benchmarks/pca.py [DATA]      # DATA holds seg_train/ and seg_test/ (Intel layout)

DATA defaults to $SCENESEEK_SHARED_DATA/intel, else ../shared/data/intel beside the repo.
Goals (PASS/FAIL each): accuracy equal or better than the study's method at k=39, a fit at
least 10x faster, and a "slider move" (answer for another k from the cached max-k model)
under 300 ms. The max-k part runs `core.vision.eigen.fit_sweep`, the flow the CLI and the
dashboard use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.config import shared_data_dir  # noqa: E402
from core.data.split import labelled_split  # noqa: E402
from core.vision.eigen import EigenImageClassifier, fit_sweep  # noqa: E402
from core.vision.gray import load_gray_images  # noqa: E402

K = 39
K_MAX = 200  # the dashboard slider's range
K_SLIDER = 50
IMAGE_SIZE = 64


def default_data() -> Path:
    return shared_data_dir() / "intel"


def study_fit(x_train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The study's script, restated: float64 pixels, np.cov of the 4096-dim data, a full
    np.linalg.eigh, the eigenvectors of the k largest eigenvalues, project the training set."""
    x = x_train.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = np.cov(centred, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, np.argsort(values)[::-1][:k]]
    return mean, top, centred @ top


def study_predict(mean, top, z_train, y_train, x_test) -> np.ndarray:
    from scipy.spatial.distance import cdist

    z_test = (x_test.astype(np.float64) - mean) @ top
    return y_train[cdist(z_test, z_train).argmin(axis=1)]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=default_data())
    parser.add_argument("--repeats", type=int, default=3, help="timed fits of the estimator")
    args = parser.parse_args(argv)
    root: Path = args.data
    if not (root / "seg_train").is_dir() or not (root / "seg_test").is_dir():
        print(f"error: {root} has no seg_train/ and seg_test/ folders", file=sys.stderr)
        return 2

    train_paths, train_labels, _ = labelled_split(root / "seg_train", "train")
    test_paths, test_labels, _ = labelled_split(root / "seg_test", "test")
    x_train, t_decode = timed(lambda: load_gray_images(train_paths, IMAGE_SIZE).pixels)
    x_test = load_gray_images(test_paths, IMAGE_SIZE).pixels
    y_train, y_test = np.array(train_labels), np.array(test_labels)
    print(
        f"data: {root}  train {len(y_train)}  test {len(y_test)}  "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} gray (decode/cache {t_decode:.1f}s)"
    )
    _ = np.ones((256, 256)) @ np.ones((256, 256))  # start the BLAS threads before timing

    # The study's method.
    (mean, top, z_train), t_study_fit = timed(study_fit, x_train, K)
    pred_study, t_study_pred = timed(study_predict, mean, top, z_train, y_train, x_test)
    acc_study = float(np.mean(pred_study == y_test))

    # This estimator, same pixels: median of a few fits (one run is at the mercy of the load).
    fit_times = []
    for _ in range(max(1, args.repeats)):
        model, seconds = timed(EigenImageClassifier(n_components=K).fit, x_train, y_train)
        fit_times.append(seconds)
    t_fit = statistics.median(fit_times)
    pred, t_pred = timed(model.predict, x_test)
    acc = float(np.mean(pred == y_test))
    agree = float(np.mean(pred == pred_study))

    # The dashboard's flow: one max-k fit, every k scored, then a slider move answers for one
    # k (report and Fig. 8 distances) from prefixes.
    fitted = fit_sweep(x_train, y_train, x_test, y_test, K_MAX)
    sweep, t_big, t_sweep = fitted.accuracy, fitted.fit_seconds, fitted.sweep_seconds
    slide, back = fitted.at(K_SLIDER), fitted.at(K)
    result, t_slider, t_slider_back = slide.result, slide.seconds, back.seconds

    sub, t_sub = timed(
        EigenImageClassifier(n_components=K, method="class-subspace").fit, x_train, y_train
    )
    acc_sub = float(sub.score(x_test, y_test))

    ratio = t_study_fit / t_fit
    print(f"\nstudy's method  (np.cov + np.linalg.eigh, k={K}, cdist 1-NN)")
    print(f"  accuracy {acc_study:.4f}   fit {t_study_fit:.2f}s   predict {t_study_pred:.2f}s")
    print(f"EigenImageClassifier(n_components={K})  solver={model.svd_solver_}")
    print(
        f"  accuracy {acc:.4f}   fit {t_fit:.3f}s (median of "
        f"{', '.join(f'{t:.3f}' for t in fit_times)})   predict {t_pred:.3f}s"
    )
    print(f"  same prediction as the study's method on {agree:.2%} of test images")
    print(f"  fit speed-up: {ratio:.1f}x")
    best = max(sweep, key=lambda k: sweep[k])
    print(
        f"\nmax-k model: fit k={K_MAX} {t_big:.2f}s; accuracy for k=1..{K_MAX} in one call "
        f"{t_sweep:.2f}s (k={K}: {sweep[K]:.4f}; best k={best}: {sweep[best]:.4f})"
    )
    print(
        f"slider move to k={K_SLIDER}: {t_slider * 1000:.0f} ms (accuracy "
        f"{result.accuracy:.4f}); back to k={K}: {t_slider_back * 1000:.0f} ms"
    )
    print(f"class-subspace (k={K}): accuracy {acc_sub:.4f}, fit {t_sub:.2f}s")

    goals = [
        (f"accuracy >= study's ({acc:.4f} vs {acc_study:.4f})", acc >= acc_study),
        (f"fit >= 10x faster ({ratio:.1f}x)", ratio >= 10),
        (f"slider answer < 300 ms ({t_slider * 1000:.0f} ms)", t_slider < 0.3),
    ]
    print()
    for text, ok in goals:
        print(f"{verdict(ok)}  {text}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
