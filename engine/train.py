"""Training: ``train_one_epoch`` and ``evaluate`` as plain functions, and ``Trainer``, which runs
a recorded run end to end (database rows, log file, checkpoints, resume, cancel).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

import engine
from db import Database, Workspace, states
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import ConfigError, RunConfig
from engine.datasets import DatasetError, Split, load_split
from engine.errors import UserError
from engine.metrics import classification_metrics, clean_float
from engine.models import build_model, load_pretrained, strip_compile_prefix
from engine.pipeline import (
    BatchTransform,
    Preprocess,
    batch_indices,
    decode_images,
    iterate_batches,
    tta_views,
)

STEP_FLUSH_EVERY = 25   # steps per batch of step-metric rows (one commit each)
EVAL_BATCH_FACTOR = 2   # evaluation needs no gradients, so it takes bigger batches

Event = dict[str, Any]


class StopTraining(Exception):
    """Raised inside the loop when a stop was requested (SIGTERM or the app's cancel)."""


class TrainingDiverged(UserError):
    """The training loss stopped being a finite number; the run's config needs changing."""


# -- device and precision ----------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name!r} asked for, but CUDA is not available on this machine")
    return device


@dataclass
class Precision:
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler | None
    name: str


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AMX or AVX512-BF16), which oneDNN uses."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def make_precision(device: torch.device, amp: str) -> Precision:
    """Mixed precision: bf16 or fp16 autocast on CUDA (a GradScaler only for fp16); bf16 autocast
    on a CPU with native bf16 (about twice the fp32 speed there); fp32 otherwise.
    """
    if amp == "off":
        return Precision(contextlib.nullcontext, None, "fp32")
    if device.type == "cpu":
        if amp == "bf16" or (amp == "auto" and cpu_has_native_bf16()):
            return Precision(partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16), None, "bf16")
        return Precision(contextlib.nullcontext, None, "fp32")
    if device.type != "cuda":
        return Precision(contextlib.nullcontext, None, "fp32")
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return Precision(partial(torch.autocast, device_type="cuda", dtype=dtype), scaler, amp)


# -- model pieces --------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


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


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary cross-entropy of P(ALL); equals the training loss for a single view."""
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# -- one epoch, one evaluation ---------------------------------------------------------------------


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
) -> dict[str, float]:
    """Train over ``batches``; return mean loss, accuracy, images and seconds.

    Per-step losses stay on the device and are read back once per ``STEP_FLUSH_EVERY`` steps.
    """
    model.train()
    started = time.perf_counter()
    pending: list[tuple[int, torch.Tensor]] = []
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0

    def flush() -> None:
        if not pending:
            return
        rows = [(step, "train_loss", value) for (step, _), value in zip(pending, torch.stack([loss for _, loss in pending]).tolist(), strict=True)]
        pending.clear()
        bad = next((i for i, (_, _, value) in enumerate(rows) if not math.isfinite(value)), None)
        if log_steps:
            log_steps(rows if bad is None else rows[:bad])
        if bad is not None:
            raise TrainingDiverged(
                f"the training loss became {rows[bad][2]} at step {rows[bad][0]}; "
                "try a lower --lr, --amp off, or a larger --image-size"
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
        state.step += 1
        detached = loss.detach()
        pending.append((state.step, detached))
        total_loss += detached * len(y)
        with torch.no_grad():
            predicted = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
            correct += (predicted == y).sum()
        seen += len(y)
        if len(pending) >= STEP_FLUSH_EVERY:
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
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics on a labelled set (loss, accuracy, sensitivity, specificity, F1, AUC, confusion)."""
    probabilities = predict_probabilities(model, images, config, device, precision, mode=mode)
    metrics = classification_metrics(labels, probabilities)
    metrics["loss"] = log_loss(labels, probabilities)
    return metrics, probabilities


# -- a whole recorded run ------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine() or "cpu")
    return {
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "leuktui": engine.__version__,
        "cpu_threads": torch.get_num_threads(),
    }


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def is_better(metric: str, value: float | None, best: float | None) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


def epoch_metric(row: dict[str, Any], metric: str) -> float | None:
    return {"val_acc": row.get("val_acc"), "val_f1": row.get("f1"), "val_auc": row.get("auc"), "val_loss": row.get("val_loss")}[metric]


class Trainer:
    """Trains one run recorded in the database, writing everything as it goes.

    ``on_event`` receives dicts (``start``, ``step``, ``epoch``, ``end``) for a progress display;
    setting ``stop`` ends the run after the current step, marked ``cancelled``.
    """

    def __init__(
        self,
        db: Database,
        workspace: Workspace,
        run_id: int,
        *,
        on_event: Callable[[Event], None] | None = None,
        stop: threading.Event | None = None,
        device: str | None = None,
    ):
        """``device`` overrides the config's (the scheduler's assignment)."""
        self.db, self.workspace, self.run_id = db, workspace, run_id
        self.device_name = device
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        record = db.get_run(run_id)
        self.config = RunConfig.from_dict(record.config)
        self.assigned_device = record.device if device else None
        self.log = self._open_log()

    def _open_log(self) -> logging.Logger:
        path = self.workspace.log_path(self.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        logger = logging.getLogger(f"leuktui.run.{self.run_id}.{id(self)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        return logger

    def _close_log(self) -> None:
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)

    def run(self, *, resume: bool = False) -> str:
        """Train to the end (or a stop) and return the run's final status."""
        try:
            status = self._train(resume)
        except StopTraining:
            status = "cancelled"
            self.log.info("stopped on request; run cancelled")
            states.finish(self.db, self.run_id, status)
        except KeyboardInterrupt:
            status = "interrupted"
            self.log.info("interrupted; resume with `leuktui resume %d`", self.run_id)
            states.finish(self.db, self.run_id, status)
            raise
        except UserError as exc:
            self.log.error("%s", exc)
            states.finish(self.db, self.run_id, "failed", error=str(exc))
            raise
        except Exception as exc:
            self.log.error("%s", traceback.format_exc())
            states.finish(self.db, self.run_id, "failed", error=f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            self.on_event({"type": "end", "run_id": self.run_id})
            self._close_log()
        return status

    def _load_split(self, name: str, preprocess: Preprocess) -> tuple[Split, np.ndarray, np.ndarray]:
        split = load_split(self.config.data_dir, name)
        if not split.samples:
            raise DatasetError(f"{split.source}: the {name} split is empty")
        self.log.info("decoding %d %s images (%s)", len(split), name, preprocess)
        images = decode_images(split.samples, preprocess, cache_dir=self.workspace.cache_dir, workers=self.config.workers)
        return split, images, np.asarray(split.labels, dtype=np.int64)

    def _train(self, resume: bool) -> str:
        config = self.config
        device = resolve_device(self.device_name or config.device)
        generator = seed_everything(config.seed)
        precision = make_precision(device, config.amp)

        model = build_model(config.model, config.num_outputs)
        if config.pretrained:
            kept = load_pretrained(model, config.pretrained)
            self.log.info("loaded %s%s", config.pretrained, f" (fresh {', '.join(kept)})" if kept else "")
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config)
        scheduler = build_scheduler(optimizer, config)
        loss_fn = loss_function(config)

        start_epoch, state, best, bad_epochs = 1, TrainState(), None, 0
        last_path = self.workspace.checkpoint_path(self.run_id, "last")
        if resume and last_path.is_file():
            checkpoint = load_checkpoint(last_path)
            model.load_state_dict(strip_compile_prefix(checkpoint["model"]))
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None and checkpoint.get("scheduler"):
                scheduler.load_state_dict(checkpoint["scheduler"])
            if precision.scaler is not None and checkpoint.get("scaler"):
                precision.scaler.load_state_dict(checkpoint["scaler"])
            generator.set_state(checkpoint["generator"])
            start_epoch = checkpoint["epoch"] + 1
            state.step = checkpoint["step"]
            best, bad_epochs = checkpoint.get("best"), checkpoint.get("bad_epochs", 0)
            self.log.info("resuming after epoch %d (step %d)", checkpoint["epoch"], state.step)
        self.db.truncate_after(self.run_id, epoch=start_epoch - 1, step=state.step)

        net = torch.compile(model) if config.compile else model
        preprocess = Preprocess.from_config(config)
        _, train_images, train_labels = self._load_split("train", preprocess)
        _, valid_images, valid_labels = self._load_split("valid", preprocess)
        transform = BatchTransform.for_training(config)

        if self.stop.is_set():
            raise StopTraining
        env = environment(device)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            env["cuda_visible_devices"] = visible
        states.move(self.db, self.run_id, "running", only_from=("queued",))  # a run trained without the scheduler
        self.db.update_run(
            self.run_id,
            started_at=time.time(),
            finished_at=None,
            heartbeat_at=time.time(),
            error=None,
            device=self.assigned_device or env["device"],
            host=env["host"],
            pid=os.getpid(),
            environment={**env, "precision": precision.name},
        )
        self.log.info("training %s on %s (%s), epochs %d-%d", config.model, env["device_name"], precision.name, start_epoch, config.epochs)
        # batch_indices drops a trailing batch of one (BatchNorm cannot train on it).
        full, rest = divmod(len(train_labels), config.batch_size)
        steps_per_epoch = full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)
        self.on_event({"type": "start", "run_id": self.run_id, "start_epoch": start_epoch, "epochs": config.epochs, "steps_per_epoch": steps_per_epoch})

        status = "completed"
        for epoch in range(start_epoch, config.epochs + 1):
            batches = batch_indices(train_labels, config.batch_size, generator, shuffle=True, balance=config.balance)
            lr = optimizer.param_groups[0]["lr"]
            steps = len(batches)
            train = train_one_epoch(
                net, optimizer, loss_fn, train_images, train_labels, batches, transform, generator, device, precision, state,
                log_steps=lambda rows: self.db.add_steps(self.run_id, rows),
                on_step=lambda i, epoch=epoch, steps=steps: self.on_event({"type": "step", "epoch": epoch, "step": i, "steps": steps}),
                stop=self.stop,
            )
            eval_started = time.perf_counter()
            metrics, _ = evaluate(net, valid_images, valid_labels, config, device, precision)
            row = {
                "epoch": epoch,
                "train_loss": clean_float(train["train_loss"]),
                "train_acc": train["train_acc"],
                "val_loss": clean_float(metrics["loss"]),
                "val_acc": metrics["acc"],
                "sensitivity": metrics["sensitivity"],
                "specificity": metrics["specificity"],
                "f1": metrics["f1"],
                "auc": clean_float(metrics["auc"]),
                "confusion": metrics["confusion"],
                "lr": lr,
                "seconds": train["seconds"] + (time.perf_counter() - eval_started),
                "images_per_s": train["images"] / train["seconds"] if train["seconds"] > 0 else None,
            }
            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(metrics["loss"])
                else:
                    scheduler.step()

            improved = is_better(config.best_metric, epoch_metric(row, config.best_metric), epoch_metric(best, config.best_metric) if best else None)
            bad_epochs = 0 if improved else bad_epochs + 1
            if improved:
                best = {key: row[key] for key in ("epoch", "val_loss", "val_acc", "sensitivity", "specificity", "f1", "auc", "confusion")}
            checkpoint = {
                "model": strip_compile_prefix(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                "generator": generator.get_state(),
                "epoch": epoch,
                "step": state.step,
                "config": config.to_dict(),
                "best": best,
                "bad_epochs": bad_epochs,
                "metrics": row,
            }
            save_checkpoint(last_path, checkpoint)
            if improved:
                save_checkpoint(self.workspace.checkpoint_path(self.run_id, "best"), checkpoint)
            self.db.add_epoch(self.run_id, epoch, state.step, row, best=best if improved else None)
            self.log.info(
                "epoch %d/%d loss %.4f acc %.4f | val loss %.4f acc %.4f f1 %.4f auc %s | %.1f img/s",
                epoch, config.epochs, row["train_loss"] or float("nan"), row["train_acc"], row["val_loss"] or float("nan"),
                row["val_acc"], row["f1"], f"{row['auc']:.4f}" if row["auc"] is not None else "n/a", row["images_per_s"] or 0,
            )
            self.on_event({"type": "epoch", **row, "epochs": config.epochs, "best_epoch": best["epoch"] if best else None})
            if config.early_stop and bad_epochs >= config.early_stop:
                self.log.info("early stop: %d epochs without a better %s", bad_epochs, config.best_metric)
                break
            if self.stop.is_set():
                raise StopTraining

        states.finish(self.db, self.run_id, status)
        self.log.info("run %d %s", self.run_id, status)
        return status
