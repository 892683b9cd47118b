"""Train a CNN: choose backbone, mode, epochs and image size; watch progress; stop; resume.

Training runs inside the script run that the Start button triggers, with a progress bar and
live curves fed by the training hooks. Stop (or any other click, which makes Streamlit rerun
the page) interrupts it between batches; every finished epoch is already checkpointed, so the
run resumes from the runs list below. A rerun never retrains: only the Start button trains.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.config import resolve_runs_dir
from core.data.dataset import DatasetError
from core.data.split import manifest_split
from core.vision.backbones import BACKBONES, default_backbone, describe_backbones, measured_speed
from core.vision.runs import list_runs, new_run_dir
from core.vision.train import MODES, Hooks, TrainConfig, TrainingStopped, run_training
from core.vision.train.config import backbone_names, is_cross, partial_backbone
from dashboard.common import cache_dir, current_data_dir, load_manifest, progress, require_dataset

STOP_KEY = "cnn_stop_requested"
SIZES = [64, 96, 128, 150, 192, 224, 240, 260]  # 240/260: Lite1/Lite2's own resolutions
MODE_HELP = {
    "linear-probe": "frozen backbone; features extracted once and cached, head trained in "
    "seconds (no augmentation: it cannot apply to cached features)",
    "fine-tune": "every layer trained, with flip + rotation (slow on a CPU)",
    "partial": "the frozen part runs once per image and its mirror image (cached); the last "
    "block(s) + head train on the cache in about a minute an epoch (flip, no rotation); block, "
    "epochs and learning rate default to the choice made on validation",
}


@st.cache_data(show_spinner=False)
def _default_backbone() -> tuple[str, str]:
    return default_backbone()


@st.cache_data(show_spinner="Reading the backbone registry…")
def _backbones() -> pd.DataFrame:
    """The registry with sizes, input resolutions and the speed measured here."""
    return pd.DataFrame(describe_backbones())


def _request_stop() -> None:
    st.session_state[STOP_KEY] = True


st.title("🧠 Train a CNN")
require_dataset()
try:
    data = manifest_split(load_manifest(current_data_dir()))
except DatasetError as exc:  # no labelled train/test images, or test classes training lacks
    st.error(str(exc))
    st.stop()

runs_dir = resolve_runs_dir()
default_name, reason = _default_backbone()
st.info(f"Default backbone: **{default_name}** — {reason}.")
with st.expander("Backbones: size, input resolution, speed measured here"):
    st.dataframe(_backbones(), hide_index=True)
    speed = measured_speed()
    st.caption(
        f"img/s: the network alone, measured {speed['date']} on {speed['cpu']} "
        f"({speed['method']}; benchmarks/backbones.py)."
        if speed
        else "Speed not measured here yet: run `python benchmarks/backbones.py --write`."
    )

# partial mode's validation-chosen ensemble (e.g. Lite0 and Lite2 tails) beside the backbones
ENSEMBLE = partial_backbone()
choices = [*BACKBONES, *([ENSEMBLE] if ENSEMBLE and is_cross(ENSEMBLE) else [])]


def _backbone_label(name: str) -> str:
    if is_cross(name):
        short = [b.replace("efficientnet_", "") for b in backbone_names(name)]
        return " + ".join(short)
    return name


c1, c2, c3, c4 = st.columns(4)
backbone = c1.selectbox(
    "Backbone",
    choices,
    index=choices.index(default_name),
    format_func=_backbone_label,
    help="The last choice trains tails on each backbone's own cached activations and "
    "averages their probabilities: partial mode only, chosen on validation "
    "(core/resources/partial_search.json).",
)
mode = c2.selectbox("Mode", MODES, help="; ".join(f"{k}: {v}" for k, v in MODE_HELP.items()))
cross = is_cross(backbone)
if cross and mode != "partial":
    st.warning(f"{_backbone_label(backbone)} trains in partial mode only: choose that mode.")
    st.stop()
if mode == "partial" and ENSEMBLE and not cross:
    st.caption(
        f"`python -m core train --mode partial` trains {_backbone_label(ENSEMBLE)} when no "
        "backbone is named: chosen on validation over one backbone's tails "
        "(core/resources/partial_search.json). Choose it under Backbone."
    )
defaults = TrainConfig.for_mode(mode, backbone=backbone)
epochs = c3.number_input("Epochs", 1, 100, {"fine-tune": 3}.get(mode, defaults.epochs))
size_default = defaults.image_size if defaults.image_size in SIZES else 224
image_size = c4.selectbox(
    "Image size",
    SIZES,
    index=SIZES.index(size_default),
    disabled=cross,
    help="An ensemble's members each run at their own backbone's size." if cross else None,
)
with st.expander("More settings"):
    d1, d2, d3, d4, d5 = st.columns(5)
    batch_size = d1.number_input("Batch size", 1, 512, 32)
    lr = d2.number_input("Learning rate", 1e-6, 1.0, float(defaults.lr), format="%.5f")
    step_size = d3.number_input(
        "StepLR step (epochs)", 1, 100, 5, disabled=defaults.schedule != "step"
    )
    seed = d4.number_input("Seed", 0, 10**6, 0)
    val_fraction = d5.number_input(
        "Validation share",
        0.02,
        0.5,
        0.1,
        step=0.01,
        help="Share of training images held out (stratified, seeded) when the data set has no "
        "val/ folder. Validation alone chooses the best checkpoint; the test set only reports.",
    )
    members = st.number_input(
        "Tails (partial mode)",
        1,
        16,
        defaults.members,
        disabled=mode != "partial",
        help="Copies of the unfrozen tail trained side by side on the cached activations; "
        "predictions average their probabilities. The default was chosen on validation.",
    )
st.caption(
    f"{MODE_HELP[mode]}. {len(data.train_paths)} training and {len(data.test_paths)} "
    f"test images, {len(data.class_names)} classes. Runs are saved under `{runs_dir}`."
)

resumable = [r for r in list_runs(runs_dir) if r.resumable]
name = st.text_input(
    "Run name",
    value=f"{'+'.join(backbone_names(backbone))}-{mode}" + ("" if cross else f"-{image_size}px"),
)
resume_choice = st.selectbox(
    "…or resume an unfinished run",
    ["(new run)"] + [r.name for r in resumable],
    help="Continues from the run's last checkpoint with its own settings.",
)
b1, b2 = st.columns([1, 5])
start = b1.button("Start training", type="primary")
b2.button("Stop", on_click=_request_stop, help="Stops between batches; the run stays resumable.")
if st.session_state.get(STOP_KEY) and not start:
    st.warning("Training was stopped. Every finished epoch is saved; resume the run below.")
    st.session_state[STOP_KEY] = False

if start:
    st.session_state[STOP_KEY] = False
    if resume_choice != "(new run)":
        run = next(r for r in resumable if r.name == resume_choice)
        cfg, out, resume = TrainConfig.from_dict(run.config), run.path, True
    else:
        out = new_run_dir(runs_dir, name)
        cfg = TrainConfig.for_mode(
            mode,
            backbone=backbone,
            epochs=int(epochs),
            image_size=None if cross else int(image_size),
            batch_size=int(batch_size),
            lr=float(lr),
            step_size=int(step_size),
            seed=int(seed),
            val_fraction=float(val_fraction),
            members=int(members) if mode == "partial" else None,
            workers=0,
        )
        resume = False
    # workers=0: forking DataLoader workers out of Streamlit's threaded server is unsafe.
    cfg.workers = 0
    bar = progress("Preparing")
    chart = st.empty()
    rows: list[dict] = []

    def on_epoch(record: dict) -> None:
        # an ensemble trains its backbones one after another: their epochs follow each other
        rows.append({**record, "epochs trained": len(rows) + 1})
        df = pd.DataFrame(rows).set_index("epochs trained" if cross else "epoch")
        chart.line_chart(
            # Validation only: the test set is scored once, after training.
            df[["train_loss", "val_accuracy"]].rename(
                columns={"train_loss": "train loss", "val_accuracy": "validation accuracy"}
            )
        )

    hooks = Hooks(
        on_stage=bar.stage,
        on_epoch=on_epoch,
        should_stop=lambda: bool(st.session_state.get(STOP_KEY)),
    )
    try:
        with st.spinner(f"Training {cfg.backbone} ({cfg.mode}) in `{out}`…", show_time=True):
            result = run_training(cfg, data, out, resume=resume, cache_dir=cache_dir(), hooks=hooks)
    except TrainingStopped:
        st.warning(f"Stopped. Run `{out}` resumes from its last checkpoint.")
    except Exception as exc:  # shown, not a traceback: bad weights, a run that exists...
        st.error(f"Training failed: {exc}")
    else:
        bar.note("Done")
        st.success(
            f"Test accuracy {result['accuracy']:.4f} (macro F1 {result['macro_f1']:.4f}) "
            f"of epoch {result['best_epoch']}, chosen on validation (accuracy "
            f"{result['val_accuracy']:.4f}), after {result['epochs_done']} epochs in "
            f"{result['train_seconds']:.1f} s. See **Runs & evaluation** for the "
            "details."
        )
        st.session_state["cnn_last_run"] = str(out)

st.subheader("Saved runs")
runs = list_runs(runs_dir)
if not runs:
    st.caption("No runs yet.")
else:
    st.dataframe(pd.DataFrame([r.row() for r in runs]), hide_index=True)
