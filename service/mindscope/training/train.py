"""The training loop: checkpoints every epoch, `resume`, history, and export to the model store."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mindscope.engine.images import scale_to_unit
from mindscope.engine.store import LEARNED_MODEL_FILE, StoreEntryFiles, write_store_entry
from mindscope.training.data import AugmentedBatches, LabelledImages, split_validation
from mindscope.training.network import (
    CONV_NAMES,
    INPUT_SHAPE,
    build_serving_model,
    build_training_model,
    fold_batch_norm,
    init_stddevs,
)

CHECKPOINT_FILE = "checkpoint.keras"
STATE_FILE = "state.json"
INITIAL_FILE = "initial.weights.h5"
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    widths: tuple[int, int, int] = (32, 64, 128)
    batch_size: int = 128
    val_size: int = 5000
    seed: int = 0
    peak_learning_rate: float = 0.08
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    jit_compile: bool = True  # XLA: twice the training speed on the CPU, where Keras leaves it off by default
    # False trains the seed's plain network (no BatchNormalization), so the stored kernels are the
    # ones the optimizer learned; BatchNorm trains faster but its kernels are folded at export.
    batch_norm: bool = True
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adam" (AdamW, steadier without BatchNorm)


class _EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: the full model with optimizer state, the epoch count and the history."""

    def __init__(self, work_dir: Path, history: list[dict[str, float]], started: float, cycles: list[dict[str, Any]]):
        super().__init__()
        self.work_dir = work_dir
        self.history = history
        self.started = started
        self.cycles = cycles

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        self.history.append(
            {
                "epoch": epoch + 1,
                "loss": float(logs["loss"]),
                "accuracy": float(logs["accuracy"]),
                "val_loss": float(logs["val_loss"]),
                "val_accuracy": float(logs["val_accuracy"]),
                "learning_rate": float(logs.get("learning_rate", float("nan"))),
                "elapsed_s": round(time.monotonic() - self.started, 1),
            }
        )
        self.model.save(self.work_dir / (CHECKPOINT_FILE + ".tmp.keras"))
        (self.work_dir / (CHECKPOINT_FILE + ".tmp.keras")).replace(self.work_dir / CHECKPOINT_FILE)
        _write_json(self.work_dir / HISTORY_FILE, self.history)
        _write_json(self.work_dir / STATE_FILE, {"epochs_done": epoch + 1, "cycles": self.cycles})


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def _compile(model: keras.Model, config: TrainConfig, steps: int, epochs: int) -> None:
    """SGD with a linear warm-up then cosine decay to 0 over the next `epochs` epochs."""
    total = epochs * steps
    warmup = max(1, int(config.warmup_epochs * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.peak_learning_rate / 10,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=config.peak_learning_rate,
        warmup_steps=warmup,
    )
    optimizer: keras.optimizers.Optimizer
    if config.optimizer == "adam":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    elif config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )


def _uncompiled(model: keras.Model, config: TrainConfig, classes: int) -> keras.Model:
    """The same network and weights, built afresh without its optimizer, whose state (Adam keeps
    two moments per weight) would triple the stored file. (Keras's clone_model and
    model_from_json both carry the compile, and with it the optimizer, over.)"""
    copy = _build(config, classes)
    copy.set_weights(model.get_weights())
    return copy


def evaluate_accuracy(model: keras.Model, data: LabelledImages, batch_size: int = 500) -> float:
    probabilities = model.predict(scale_to_unit(data.images), batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=1) == data.labels))


def train(
    data: LabelledImages,
    out_dir: Path,
    config: TrainConfig,
    work_dir: Path,
    resume: bool = False,
    verbose: int = 1,
) -> Path:
    """Train on `data` less a held-out split, then write a complete store entry to `out_dir`.

    `work_dir` keeps the per-epoch checkpoint, the initial weights and the history, so an
    interrupted run continues with `resume=True` from its last finished epoch. Resuming with more
    `epochs` than the checkpoint's learning-rate cycle covers starts a new warm-up + cosine cycle
    over the extra epochs (a warm restart); each cycle is recorded in the metadata.
    """
    keras.utils.set_random_seed(config.seed)
    train_idx, val_idx = split_validation(len(data), config.val_size, config.seed)
    train_data, val_data = data.subset(train_idx), data.subset(val_idx)
    validation = (scale_to_unit(val_data.images), val_data.labels)
    work_dir.mkdir(parents=True, exist_ok=True)

    steps = steps_per_epoch(len(train_data), config.batch_size)
    state_path = work_dir / STATE_FILE
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        epochs_done = state["epochs_done"]
        # A checkpoint from before cycles were recorded finished its one cycle when it was written.
        cycles = state.get("cycles") or [{"first_epoch": 1, "epochs": epochs_done, "peak_learning_rate": None}]
        model = keras.saving.load_model(work_dir / CHECKPOINT_FILE)
        model.jit_compile = config.jit_compile
        history = json.loads((work_dir / HISTORY_FILE).read_text())
        cycle_end = cycles[-1]["first_epoch"] + cycles[-1]["epochs"] - 1
        if epochs_done >= cycle_end and config.epochs > epochs_done:
            cycles.append(_cycle(epochs_done + 1, config.epochs - epochs_done, config))
            _compile(model, config, steps, cycles[-1]["epochs"])
    else:
        epochs_done = 0
        model = _build(config, len(data.class_names))
        cycles = [_cycle(1, config.epochs, config)]
        _compile(model, config, steps, config.epochs)
        model.save_weights(work_dir / INITIAL_FILE)
        history = []

    batches = AugmentedBatches(train_data, config.batch_size, config.seed, config.augment, epochs_done)
    started = time.monotonic() - (history[-1]["elapsed_s"] if history else 0.0)
    if epochs_done < config.epochs:
        model.fit(
            batches,
            epochs=config.epochs,
            initial_epoch=epochs_done,
            validation_data=validation,
            callbacks=[_EpochCheckpoint(work_dir, history, started, cycles)],
            verbose=verbose,
        )

    initial_training = _build(config, len(data.class_names))
    initial_training.load_weights(work_dir / INITIAL_FILE)
    serving, initial_serving = (
        (fold_batch_norm(model), fold_batch_norm(initial_training))
        if config.batch_norm
        else (_uncompiled(model, config, len(data.class_names)), initial_training)
    )
    val_accuracy = evaluate_accuracy(serving, val_data)
    metadata = {
        "class_names": list(data.class_names),
        "input_shape": list(INPUT_SHAPE),
        "preprocessing": {
            "color": "RGB (alpha composited on white)",
            "resize": "Pillow bilinear to 32x32",
            "scale": "uint8 / 255 -> float32 in [0, 1]",
        },
        "architecture": {
            "layers": list(CONV_NAMES),
            "widths": {"conv1-3": config.widths[0], "conv4-6": config.widths[1], "conv7-8": config.widths[2]},
            "activation": "elu",
            "pooling": "2x2 average after conv3 and conv6",
            "head": "1x1 conv9 to classes, global average pooling, softmax",
            "batch_norm": (
                "used in training, folded into conv kernels and biases at export; "
                f"{LEARNED_MODEL_FILE} keeps the unfolded weights the optimizer learned"
                if config.batch_norm
                else "none: the stored kernels are the ones the optimizer learned"
            ),
        },
        "init_stddev": init_stddevs(),
        "training": {
            **asdict(config),
            "optimizer": (
                "AdamW, decoupled weight decay"
                if config.optimizer == "adam"
                else "SGD, Nesterov momentum, decoupled weight decay"
            ),
            "schedule": "linear warm-up then cosine decay to 0, per cycle",
            "cycles": cycles,
            "augmentation": "4-pixel reflect-padded random crop, horizontal flip" if config.augment else "none",
            "train_size": len(train_data),
            "duration_s": history[-1]["elapsed_s"] if history else 0.0,
        },
        "dataset": {
            "description": data.description,
            "validation": f"{len(val_data)} held-out images, seed {config.seed}",
        },
        "validation_accuracy": val_accuracy,
        "validation_size": len(val_data),
    }
    # Folding changes the kernels, so the network as trained is kept for the histograms too.
    learned = _uncompiled(model, config, len(data.class_names)) if config.batch_norm else None
    files = StoreEntryFiles(
        serving_model=serving,
        initial_model=initial_serving,
        history=history,
        learned_model=learned,
        learned_initial_model=initial_training if config.batch_norm else None,
    )
    return write_store_entry(out_dir, files, metadata)


def _build(config: TrainConfig, num_classes: int) -> keras.Model:
    if config.batch_norm:
        return build_training_model(config.widths, num_classes, config.seed)
    return build_serving_model(config.widths, num_classes, config.seed)


def _cycle(first_epoch: int, epochs: int, config: TrainConfig) -> dict[str, Any]:
    return {"first_epoch": first_epoch, "epochs": epochs, "peak_learning_rate": config.peak_learning_rate}


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return math.ceil(train_size / batch_size)
