"""The training loop as plain functions: optimizer, schedule and loss from a config, one epoch
of training, prediction with test-time views, and evaluation. No database and no files:
``engine.train`` records what these return, and ``eval``/``export`` call the same ``evaluate``
and ``predict_probabilities`` as training does.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.config import RunConfig
from engine.device import Precision
from engine.errors import UserError
from engine.metrics import classification_metrics
from engine.pipeline import BatchTransform, iterate_batches, tta_views

STEP_FLUSH_EVERY = 25   # steps per batch of step-metric rows (one commit each)
STEP_FLUSH_SECONDS = 2.0  # ... or sooner, where 25 steps take longer (the live chart's first points on a CPU)
EVAL_BATCH_FACTOR = 2   # evaluation needs no gradients, so it takes bigger batches


class StopTraining(Exception):
    """Raised inside the loop when a stop was requested (SIGTERM or the app's cancel)."""


class TrainingDiverged(UserError):
    """The training loss stopped being a finite number; the run's config needs changing."""


# Devices with fused Adam/AdamW kernels: one pass over every parameter instead of a loop over them.
FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """The run's optimizer over the model's parameters (already on their device).

    Adam and AdamW use their fused kernels where the parameters' device has them: ResNet18's
    update took 49 ms with torch's default and 8 ms fused on a 2-core CPU
    (bench/optimizer_step.py). SGD stays as it is; its fused kernel was no quicker there."""
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    fused = all(p.device.type in FUSED_DEVICES and p.dtype.is_floating_point for p in params) or None
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


ADVICE = "try a lower --lr, --amp off, or a larger --image-size"


def check_weights(model: nn.Module, *, epoch: int, step: int) -> None:
    """Raise ``TrainingDiverged`` where a weight or a BatchNorm statistic is no longer a finite
    number. An update can overflow although every loss was finite; the run then fails with the
    same advice, not later on predictions that are NaN. One host sync an epoch."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return
    name, bad = next((name, t) for name, t in (*model.named_parameters(), *model.named_buffers())
                     if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    value = bad[~torch.isfinite(bad)].flatten()[0].item()
    raise TrainingDiverged(f"the weights became {value} by step {step}, the end of epoch {epoch} ({name}); {ADVICE}")


def check_outputs(probabilities: np.ndarray, where: str, advice: str = ADVICE) -> np.ndarray:
    """``probabilities``, or ``TrainingDiverged`` where one is not a finite number: weights grown
    too large give NaN outputs although each of them is finite. ``where`` names the images (and
    the epoch, or the run and checkpoint)."""
    bad = ~np.isfinite(probabilities)
    if bad.any():
        raise TrainingDiverged(
            f"the model's outputs became {probabilities[bad][0]} for {int(bad.sum())} of {probabilities.size} {where}; {advice}"
        )
    return probabilities


def build_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig):
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)
    return None


def loss_function(config: RunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if config.loss == "bce":
        bce = nn.BCEWithLogitsLoss()
        return lambda logits, labels: bce(logits[:, 0].float(), labels.float())
    ce = nn.CrossEntropyLoss()
    return lambda logits, labels: ce(logits.float(), labels.long())


def probability_of_all(logits: torch.Tensor, loss: str) -> torch.Tensor:
    logits = logits.float()
    return torch.sigmoid(logits[:, 0]) if loss == "bce" else torch.softmax(logits, dim=1)[:, 1]




def weight_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (torch's
    ``AveragedModel`` with ``get_ema_multi_avg_fn``); its ``module`` is the averaged network."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@dataclass
class TrainState:
    step: int = 0


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable,
    images: np.ndarray,
    labels: np.ndarray,
    batches: list[np.ndarray],
    transform: BatchTransform,
    generator: torch.Generator,
    device: torch.device,
    precision: Precision,
    state: TrainState,
    *,
    log_steps: Callable[[list[tuple[int, str, float]]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train over ``batches``; return mean loss, accuracy, images and seconds. ``after_step``
    runs after each optimizer step (the weight average's update).

    Per-step losses stay on the device and are read back once per ``STEP_FLUSH_EVERY`` steps, or
    ``STEP_FLUSH_SECONDS`` when those steps are slower (one read a few seconds costs nothing).
    """
    model.train()
    started = time.perf_counter()
    pending: list[tuple[int, torch.Tensor]] = []
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0

    flushed_at = time.perf_counter()

    def flush() -> None:
        nonlocal flushed_at
        flushed_at = time.perf_counter()
        if not pending:
            return
        rows = [(step, "train_loss", value) for (step, _), value in zip(pending, torch.stack([loss for _, loss in pending]).tolist(), strict=True)]
        pending.clear()
        bad = next((i for i, (_, _, value) in enumerate(rows) if not math.isfinite(value)), None)
        if log_steps:
            log_steps(rows if bad is None else rows[:bad])
        if bad is not None:
            raise TrainingDiverged(
                f"the training loss became {rows[bad][2]} at step {rows[bad][0]}; {ADVICE}"
            )

    for index, (x, y) in enumerate(iterate_batches(images, labels, batches, device), start=1):
        if stop is not None and stop.is_set():
            flush()
            raise StopTraining
        inputs = transform(x, generator)
        with precision.autocast():
            logits = model(inputs)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if precision.scaler is not None:
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        state.step += 1
        detached = loss.detach()
        pending.append((state.step, detached))
        total_loss += detached * len(y)
        with torch.no_grad():
            predicted = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
            correct += (predicted == y).sum()
        seen += len(y)
        if len(pending) >= STEP_FLUSH_EVERY or time.perf_counter() - flushed_at >= STEP_FLUSH_SECONDS:
            flush()
        if on_step:
            on_step(index)
    flush()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "train_loss": total_loss.item() / max(seen, 1),
        "train_acc": correct.item() / max(seen, 1),
        "images": seen,
        "seconds": seconds,
    }


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module,
    images: np.ndarray,
    config: RunConfig,
    device: torch.device,
    precision: Precision,
    *,
    mode: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """P(ALL) per image, averaged over the test-time views of ``mode`` (default: the config's).

    ``on_batch(done, total)`` reports progress in batches.
    """
    model.eval()
    mode = mode or config.eval_mode
    transform = BatchTransform.for_eval(config)
    batch_size = max(1, config.batch_size * EVAL_BATCH_FACTOR)
    batches = [np.arange(i, min(i + batch_size, len(images))) for i in range(0, len(images), batch_size)]
    out: list[torch.Tensor] = []
    for index, (x, _) in enumerate(iterate_batches(images, None, batches, device), start=1):
        views = tta_views(transform(x), mode)
        total = torch.zeros(x.shape[0], device=device)
        for view in views:
            if config.channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                total += probability_of_all(model(view), config.loss)
        out.append(total / len(views))
        if on_batch:
            on_batch(index, len(batches))
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).double().cpu().numpy()


def evaluate(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: RunConfig,
    device: torch.device,
    precision: Precision,
    *,
    mode: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    where: str | None = None,
    advice: str = ADVICE,
) -> tuple[dict[str, Any], np.ndarray]:
    """Every registered metric and the confusion matrix on a labelled set, and P(ALL) per image.
    Outputs that are not numbers raise ``TrainingDiverged`` (see ``check_outputs``)."""
    probabilities = check_outputs(predict_probabilities(model, images, config, device, precision, mode=mode, on_batch=on_batch),
                                  where or "images", advice)
    return classification_metrics(labels, probabilities), probabilities
