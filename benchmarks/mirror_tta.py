"""Mirror test-time augmentation on a trained run: accuracy of the plain softmax, of the
mirror image's, and of their average, on the run's own validation split (the seeded,
stratified share of the training images it held out) and on the test set. Whether to average
is for validation to say; the test figure only reports.

    .venv/bin/python benchmarks/mirror_tta.py --run RUN --train DIR/seg_train --test DIR/seg_test

Prints {"val": {...}, "test": {...}} with n, plain, mirror_only and mirror_averaged accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Mirror:
    """The run's own preprocessing of the mirrored image."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image):
        return self.transform(ImageOps.mirror(image))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main() -> None:
    from core.data.split import split_data, stratified_split
    from core.vision.features import make_loader
    from core.vision.runs import load_trained
    from core.vision.train import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    args = ap.parse_args()
    trained = load_trained(args.run, device="cpu")
    cfg = trained.config
    tf = trained.backbone.preprocess(False, cfg.image_size)
    sd = split_data(args.train, args.test, find_val=False)
    _, va = stratified_split(
        [str(p) for p in sd.train_paths], sd.train_labels, cfg.val_fraction, cfg.seed
    )
    sets = {
        "val": ([sd.train_paths[i] for i in va], [sd.train_labels[i] for i in va]),
        "test": (sd.test_paths, sd.test_labels),
    }
    out = {}
    for name, (paths, labels) in sets.items():
        y = np.asarray(labels)
        probs = []
        for transform in (tf, Mirror(tf)):  # workers=0: Mirror lives in this script
            loader = make_loader(paths, list(labels), transform, 64, workers=0)
            logits, _ = evaluate(trained.model, loader, trained.device, False, None)
            probs.append(softmax(np.asarray(logits, np.float64)))
        out[name] = {
            "n": len(y),
            "plain": round(float((probs[0].argmax(1) == y).mean()), 4),
            "mirror_only": round(float((probs[1].argmax(1) == y).mean()), 4),
            "mirror_averaged": round(float(((probs[0] + probs[1]).argmax(1) == y).mean()), 4),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
