"""``Trainer`` runs one recorded run end to end: it builds what the config asks for, trains with
``engine.loop``, and records everything as it goes (database rows, the log file, checkpoints
through ``CheckpointSaver``, the run's phase), resumes from ``last``, and stops on request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from db import Database, Workspace, states
from db.vocabulary import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    METRICS,
    PRUNED,
    QUEUED,
    RUNNING,
)
from engine import distributed
from engine.checkpoint import CheckpointSaver
from engine.config import RunConfig
from engine.datasets import DatasetError, Split, load_split
from engine.device import environment, make_precision, resolve_device, seed_everything
from engine.distributed import Ranks
from engine.errors import UserError
from engine.loop import (
    StopTraining,
    TrainingDiverged,
    TrainState,
    build_optimizer,
    build_scheduler,
    check_outputs,
    check_weights,
    evaluate,
    loss_function,
    predict_probabilities,
    train_one_epoch,
    weight_average,
)
from engine.metrics import classification_metrics, clean_float
from engine.models import build_model, load_pretrained, strip_compile_prefix
from engine.pipeline import BatchTransform, Preprocess, batch_indices, decode_images
from engine.stats import metric_intervals

Event = dict[str, Any]


class ResumeError(UserError):
    """A run cannot continue from where it stopped (its checkpoint is gone); names the run."""


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Training steps in one epoch; ``batch_indices`` drops a trailing batch of one (BatchNorm
    cannot train on it)."""
    full, rest = divmod(samples, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)


def epoch_row(epoch: int, train: dict[str, float], metrics: dict[str, Any], lr: float, seconds: float) -> dict[str, Any]:
    """The ``epoch`` table's row: training figures, every registered metric, and timing."""
    return {
        "epoch": epoch,
        "train_loss": clean_float(train["train_loss"]),
        "train_acc": train["train_acc"],
        **{m.epoch_column: clean_float(metrics.get(m.key)) for m in METRICS},
        "confusion": metrics["confusion"],
        "lr": lr,
        "seconds": seconds,
        "images_per_s": train["images"] / train["seconds"] if train["seconds"] > 0 else None,
    }


class Trainer:
    """Trains one run recorded in the database, writing everything as it goes.

    ``on_event`` receives dicts (``start``, ``step``, ``epoch``, ``end``) for a progress display;
    ``on_phase`` a line saying what the run is doing (``decoding images 340/600``, ``epoch 1
    step 12/40``), many times a second, so it must be cheap. Setting ``stop`` ends the run after
    the current step, marked ``cancelled``.
    """

    def __init__(
        self,
        db: Database,
        workspace: Workspace,
        run_id: int,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_phase: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        device: str | None = None,
    ):
        """``device`` overrides the config's (the scheduler's assignment)."""
        self.db, self.workspace, self.run_id = db, workspace, run_id
        self.device_name = device
        self.on_event = on_event or (lambda event: None)
        self.on_phase = on_phase or (lambda phase: None)
        self.stop = stop or threading.Event()
        record = db.get_run(run_id)
        self.config = RunConfig.from_dict(record.config)
        self.epochs_recorded = record.epochs_done
        self.assigned_device = record.device if device else None
        self.trial_number = record.trial if record.sweep_id is not None else None
        self.saver = CheckpointSaver(workspace.checkpoint_path(run_id, "last").parent, self.config.best_metric)
        # One of several processes of a DDP run (torchrun's); rank 0 alone writes the database, the log, checkpoints.
        self.ranks = Ranks.from_env()
        self.main = self.ranks is None or self.ranks.main
        self.log = self._open_log()

    def _open_log(self) -> logging.Logger:
        logger = logging.getLogger(f"leuktui.run.{self.run_id}.{id(self)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if not self.main:
            logger.addHandler(logging.NullHandler())
            return logger
        path = self.workspace.log_path(self.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        return logger

    def _close_log(self) -> None:
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)

    def _finish(self, status: str, **values: Any) -> None:
        if self.main:
            states.finish(self.db, self.run_id, status, **values)

    def run(self, *, resume: bool = False) -> str:
        """Train to the end (or a stop) and return the run's final status."""
        if self.main:
            states.move(self.db, self.run_id, RUNNING, only_from=(QUEUED,))  # a run trained without the scheduler
        try:
            status = self._train(resume)
        except StopTraining:
            status = CANCELLED
            self.log.info("stopped on request; run cancelled")
            self._finish(status)
        except KeyboardInterrupt:
            status = INTERRUPTED
            self.log.info("interrupted; resume with `leuktui resume %d`", self.run_id)
            self._finish(status)
            raise
        except UserError as exc:
            self.log.error("%s", exc)
            self._finish(FAILED, error=str(exc))
            raise
        except Exception as exc:
            self.log.error("%s", traceback.format_exc())
            self._finish(FAILED, error=f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            self.on_event({"type": "end", "run_id": self.run_id})
            self._close_log()
        if self.ranks is not None:  # after a clean end only: a peer that died leaves nothing to tear down together
            distributed.finish()
        return status

    def _load_split(self, name: str, preprocess: Preprocess) -> tuple[Split, np.ndarray, np.ndarray]:
        split = load_split(self.config.data_dir, name)
        if not split.samples:
            raise DatasetError(f"{split.source}: the {name} split is empty")
        self.log.info("decoding %d %s images (%s)", len(split), name, preprocess)
        self.on_phase(f"reading {name} images")
        images = decode_images(
            split.samples, preprocess, cache_dir=self.workspace.cache_dir, workers=self.config.workers,
            on_progress=lambda done, total: self.on_phase(f"decoding {name} images {done}/{total}"),
        )
        return split, images, np.asarray(split.labels, dtype=np.int64)

    def _record_validation(self, epoch: int, split: Split, probabilities: np.ndarray, metrics: dict[str, Any]) -> None:
        """The best epoch's validation predictions and their bootstrap intervals, recorded as the
        run's ``training`` evaluation of its best checkpoint (replacing the previous best's), so
        every number at the best epoch has its interval and paired tests have their images."""
        labels = np.asarray(split.labels, dtype=np.int64)
        predicted = (probabilities >= 0.5).astype(np.int64)
        predictions = [(s.ident, float(p), int(c), int(y)) for s, p, c, y in zip(split.samples, probabilities, predicted, labels, strict=True)]
        self.db.add_evaluation(
            self.run_id, checkpoint="best", epoch=epoch, split="valid", tta=self.config.eval_mode, metrics=metrics,
            n=len(labels), predictions=predictions, intervals=metric_intervals(labels, probabilities, predicted),
            origin="training", replaces=True,
        )

    def _recover_validation(self, split: Split) -> None:
        """A kill after the best checkpoint was saved but before its predictions were recorded
        leaves the best epoch without them: record them from the checkpoint, which carries them."""
        best = self.saver.best
        if best is None or not self.saver.exists("best"):
            return
        recorded = [e for e in self.db.evaluations(self.run_id) if e.origin == "training" and e.epoch == best["epoch"]]
        if recorded:
            return
        checkpoint = self.saver.load("best")
        probabilities = checkpoint.get("valid_probabilities")
        if probabilities is None or int(checkpoint["epoch"]) != best["epoch"] or len(probabilities) != len(split):
            return
        probabilities = probabilities.numpy()
        labels = np.asarray(split.labels, dtype=np.int64)
        self._record_validation(best["epoch"], split, probabilities, classification_metrics(labels, probabilities))
        self.log.info("recorded the validation predictions of best epoch %d from its checkpoint", best["epoch"])

    def _restore(self, model, optimizer, scheduler, precision, generator, state: TrainState, average=None) -> int:
        """Continue from ``last``: load it, and write its epoch's row if a kill lost it. Returns
        the first epoch still to train."""
        checkpoint = self.saver.load("last")
        model.load_state_dict(strip_compile_prefix(checkpoint.get("trained_model", checkpoint["model"])))
        if average is not None:
            average.module.load_state_dict(checkpoint["model"])
            average.n_averaged.fill_(int(checkpoint.get("ema_updates", 1)))
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None and checkpoint.get("scheduler"):
            scheduler.load_state_dict(checkpoint["scheduler"])
        if precision.scaler is not None and checkpoint.get("scaler"):
            precision.scaler.load_state_dict(checkpoint["scaler"])
        generator.set_state(checkpoint["generator"])
        epoch, state.step = int(checkpoint["epoch"]), int(checkpoint["step"])
        if self.main and self.saver.best and self.saver.best.get("epoch") == epoch:
            self.saver.relink_best()  # `last` is the best epoch: `best` is it, whenever a kill came
        # The checkpoint is written before its epoch's row: a kill between the two leaves the row
        # to be written from the metrics the checkpoint carries.
        recorded = {e.epoch for e in self.db.epochs(self.run_id, after=epoch - 1)}
        if self.main and epoch not in recorded and checkpoint.get("metrics"):
            row = checkpoint["metrics"]
            best = self.saver.best if self.saver.best and self.saver.best.get("epoch") == epoch else None
            self.db.add_epoch(self.run_id, epoch, state.step, row, best=best)
            self.log.info("epoch %d's row was lost; written from its checkpoint", epoch)
        self.log.info("resuming after epoch %d (step %d)", epoch, state.step)
        return epoch + 1

    def _trial_reporter(self):
        """The Optuna trial this run is, if it is a study's (None: not one, or its storage fails;
        in a DDP run, rank 0 reports and the others follow its decision)."""
        if self.trial_number is None or not self.main:
            return None
        from engine.studies import TrialReporter

        sweep = self.db.get_sweep(self.db.get_run(self.run_id).sweep_id)
        try:
            reporter = TrialReporter(self.workspace, sweep.study, self.trial_number, self.log)
        except Exception as exc:  # the study's storage is Optuna's business; the run trains on
            self.log.warning("study %s, trial %d: %s: %s (training goes on unpruned)", sweep.name, self.trial_number,
                             type(exc).__name__, exc)
            return None
        reporter.catch_up((e.epoch, {m.epoch_column: getattr(e, m.epoch_column) for m in METRICS}) for e in self.db.epochs(self.run_id))
        self.log.info("trial %d of study %s: each epoch's %s goes to its pruner (%s)", self.trial_number, sweep.name,
                      sweep.study["metric"], sweep.study["pruner"])
        return reporter

    def _log_steps(self, rows: list[tuple[int, str, float]], *, epoch_ends_at: int) -> None:
        """Steps inside an epoch need not wait for the disk; the epoch's last batch does, before
        the epoch's checkpoint is saved (see ``Database.add_steps``). Rank 0's losses, in a DDP run."""
        if self.main:
            self.db.add_steps(self.run_id, rows, durable=not rows or rows[-1][0] >= epoch_ends_at)

    def _train(self, resume: bool) -> str:
        config = self.config
        if not resume and self.epochs_recorded > 0:
            raise ResumeError(
                f"run {self.run_id} has {self.epochs_recorded} epoch(s) recorded but no checkpoint at "
                f"{self.saver.path('last')}; `leuktui retry {self.run_id}` trains it again as a new run"
            )
        self.on_phase("building the model")
        device = resolve_device(self.device_name or config.device)
        ranks = self.ranks
        if ranks is not None:
            device = distributed.device_of(ranks, device)
            distributed.start(ranks, device)
            self.stop = distributed.SharedStop(self.stop, device)
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

        state = TrainState()
        average = weight_average(model, config.ema) if config.ema else None
        start_epoch = self._restore(model, optimizer, scheduler, precision, generator, state, average) if resume else 1
        if self.main:
            self.db.truncate_after(self.run_id, epoch=start_epoch - 1, step=state.step)

        net = model
        if ranks is not None:
            if config.sync_bn and device.type == "cuda":
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            elif config.sync_bn:
                self.log.warning("sync_bn: SyncBatchNorm runs on CUDA only; on %s each process keeps its own statistics", device.type)
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        net = torch.compile(net) if config.compile else net
        preprocess = Preprocess.from_config(config)
        _, train_images, train_labels = self._load_split("train", preprocess)
        valid_split, valid_images, valid_labels = self._load_split("valid", preprocess)
        if resume and not config.final_fit and self.main:
            self._recover_validation(valid_split)
        if config.final_fit:  # the final fit learns from both splits and validates on none
            train_images = np.concatenate([train_images, valid_images])
            train_labels = np.concatenate([train_labels, valid_labels])
        transform = BatchTransform.for_training(config)
        reporter = self._trial_reporter()

        if self.stop.is_set():
            raise StopTraining
        env = environment(device)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            env["cuda_visible_devices"] = visible
        if ranks is not None:
            env["processes"] = ranks.world
        if self.main:
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
        self.log.info("training %s on %s (%s)%s, epochs %d-%d", config.model, env["device_name"], precision.name,
                      f", {ranks.world} processes" if ranks is not None else "", start_epoch, config.epochs)
        steps = steps_per_epoch(len(train_labels), config.batch_size)
        if ranks is not None:
            steps //= ranks.world
        self.on_event({"type": "start", "run_id": self.run_id, "start_epoch": start_epoch, "epochs": config.epochs, "steps_per_epoch": steps})

        for epoch in range(start_epoch, config.epochs + 1):
            batches = batch_indices(train_labels, config.batch_size, generator, shuffle=True, balance=config.balance)
            if ranks is not None:  # the same order on every rank (one seed); each its own share
                batches = distributed.shard_batches(batches, ranks)
            lr = optimizer.param_groups[0]["lr"]
            in_epoch = len(batches)
            self.on_phase(f"epoch {epoch}/{config.epochs} step 0/{in_epoch}")

            def on_step(i: int, epoch=epoch, steps=in_epoch) -> None:
                self.on_phase(f"epoch {epoch}/{config.epochs} step {i}/{steps}")
                self.on_event({"type": "step", "epoch": epoch, "step": i, "steps": steps})

            # Every rank draws the batch order from the one shared generator; the augmentation from
            # one of its own (seeded by run seed, epoch and rank), or all ranks would flip and rotate
            # their different images alike.
            augment = generator if ranks is None else distributed.augmentation_generator(config.seed, epoch, ranks)
            train = train_one_epoch(
                net, optimizer, loss_fn, train_images, train_labels, batches, transform, augment, device, precision, state,
                log_steps=partial(self._log_steps, epoch_ends_at=state.step + in_epoch), on_step=on_step, stop=self.stop,
                after_step=(lambda: average.update_parameters(model)) if average is not None else None,
            )
            if ranks is not None:
                train = distributed.reduce_training(train, device)
            self._check_divergence(partial(check_weights, model, epoch=epoch, step=state.step))
            eval_started = time.perf_counter()
            if config.final_fit:  # no validation: a batch of training images shows outputs that are not numbers
                metrics, probabilities = {"confusion": None}, None
                scored = average.module if average is not None else model
                where = f"training images after epoch {epoch} (step {state.step})"
                self._check_divergence(lambda scored=scored, where=where: check_outputs(
                    predict_probabilities(scored, train_images[:config.batch_size], config, device, precision), where))
            else:
                self.on_phase(f"epoch {epoch}/{config.epochs} validating")
                scored = average.module if average is not None else (model if ranks is not None else net)
                on_batch = lambda done, total, epoch=epoch: self.on_phase(f"epoch {epoch}/{config.epochs} validating {done}/{total}")  # noqa: E731
                where = f"validation images after epoch {epoch} (step {state.step})"
                if ranks is None:
                    metrics, probabilities = evaluate(scored, valid_images, valid_labels, config, device, precision, on_batch=on_batch,
                                                      where=where)
                else:
                    metrics, probabilities = self._evaluate_shared(scored, valid_images, valid_labels, device, precision, on_batch, where)
            row = epoch_row(epoch, train, metrics, lr, train["seconds"] + (time.perf_counter() - eval_started))
            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(metrics.get("loss", train["train_loss"]))
                else:
                    scheduler.step()

            weights = {"model": strip_compile_prefix(model.state_dict())}
            if average is not None:  # what validation scored is what predictions load; training resumes from its own
                weights = {"model": average.module.state_dict(), "trained_model": weights["model"],
                           "ema_updates": int(average.n_averaged.item())}
            if probabilities is not None:  # the epoch's validation predictions travel with its checkpoint (see _recover_validation)
                weights["valid_probabilities"] = torch.from_numpy(np.asarray(probabilities, dtype=np.float64))
            save = self.saver.save if self.main else (lambda _state, row: self.saver.follow(row))
            improved = save({
                **weights,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                "generator": generator.get_state(),
                "epoch": epoch,
                "step": state.step,
                "config": config.to_dict(),
            }, row)
            if improved and probabilities is not None and self.main:
                self._record_validation(epoch, valid_split, probabilities, metrics)
            if self.main:
                self.db.add_epoch(self.run_id, epoch, state.step, row, best=self.saver.best if improved else None)
            self.log.info(
                "epoch %d/%d loss %.4f acc %.4f | val %s | %.1f img/s", epoch, config.epochs, row["train_loss"] or float("nan"),
                row["train_acc"], "  ".join(f"{m.title} {m.format(row[m.epoch_column])}" for m in METRICS), row["images_per_s"] or 0,
            )
            best_epoch = self.saver.best["epoch"] if self.saver.best else None
            self.on_event({"type": "epoch", **row, "epochs": config.epochs, "best_epoch": best_epoch})
            pruned = reporter is not None and reporter.report(epoch, row) and epoch < config.epochs
            if ranks is not None and self.trial_number is not None:
                pruned = distributed.from_main(pruned)  # rank 0 asked the pruner; every rank stops with it
            if pruned:
                self.log.info("pruned after epoch %d: the study's pruner stops this trial (its checkpoints are kept)", epoch)
                self._finish(PRUNED)
                return PRUNED
            if config.early_stop and self.saver.bad_epochs >= config.early_stop:
                self.log.info("early stop: %d epochs without a better %s", self.saver.bad_epochs, config.best_metric)
                break
            if epoch < config.epochs and self.stop.is_set():  # after the last epoch a stop has nothing left to stop
                raise StopTraining

        self._finish(COMPLETED)
        self.log.info("run %d completed", self.run_id)
        return COMPLETED

    def _check_divergence(self, check: Callable[[], object]) -> None:
        """Run ``check`` (it raises ``TrainingDiverged``) on the network rank 0 saves; with several
        processes every rank raises with rank 0's verdict, so none waits on the others."""
        if self.ranks is None:
            check()
            return
        said = None
        if self.main:
            try:
                check()
            except TrainingDiverged as exc:
                said = str(exc)
        said = distributed.from_main(said)
        if said is not None:
            raise TrainingDiverged(said)

    def _evaluate_shared(self, model, images, labels, device, precision, on_batch, where):
        """DDP validation: each rank scores its share of the images with rank 0's network, and
        every rank gets the whole set's probabilities, each image counted once (and checks them
        all, so that every rank stops alike)."""
        distributed.share_buffers(model)
        mine = distributed.shard_indices(len(images), self.ranks)
        probabilities = check_outputs(distributed.gather_in_order(
            predict_probabilities(model, images[mine], self.config, device, precision, on_batch=on_batch), len(images), self.ranks), where)
        return classification_metrics(labels, probabilities), probabilities
