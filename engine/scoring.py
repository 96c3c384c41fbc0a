"""Scoring a submission CSV against an answer key, without torch."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from db.files import NotAFile, open_regular
from engine.datasets import DatasetError
from engine.metrics import classification_metrics


def regular_file(path: Path) -> None:
    """Refuse what is not a regular file (a folder, a FIFO, a device) before it is read."""
    try:
        open_regular(path, "rb").close()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except NotAFile as exc:
        raise DatasetError(str(exc)) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None


def read_labelled_csv(path: Path, id_columns: tuple[str, ...] = ("ID", "Path")) -> dict[str, int | float]:
    """``ID -> label`` from a submission or an answer key (header ID,label or Path,label)."""
    regular_file(path)
    try:
        with open_regular(path, "r", newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty file, expected a header row")
            header = [h.strip() for h in header]
            # A column named twice, or both an ID and a Path: which one holds the answers is a guess.
            repeated = next((name for name in (*id_columns, "label", "prob_all") if header.count(name) > 1), None)
            if repeated is not None:
                raise DatasetError(f"{path}: header names the {repeated} column twice")
            named = [name for name in id_columns if name in header]
            if len(named) > 1:
                raise DatasetError(f"{path}: header has both {' and '.join(named)} columns; keep the one that names the images")
            id_col = next((header.index(c) for c in id_columns if c in header), None)
            if id_col is None or "label" not in header:
                raise DatasetError(f"{path}: header {','.join(header)!r} needs ID (or Path) and label columns")
            label_col = header.index("label")
            out: dict[str, int | float] = {}
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) <= max(id_col, label_col):
                    raise DatasetError(f"{path} line {line_no}: expected {len(header)} columns, found {len(row)}")
                ident = row[id_col].strip()
                if ident in out:
                    raise DatasetError(f"{path} line {line_no}: ID {ident!r} appears twice")
                try:
                    value = float(row[label_col])
                except ValueError:
                    raise DatasetError(f"{path} line {line_no}: label {row[label_col]!r} is not a number") from None
                if not math.isfinite(value):  # '1e400', 'nan': said as written, with its line
                    raise DatasetError(f"{path} line {line_no}: label {row[label_col].strip()[:40]!r} is not 0 or 1")
                out[ident] = value
            return out
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text CSV file") from None
    except csv.Error as exc:  # a field longer than the csv module takes, a NUL
        raise DatasetError(f"{path} line {reader.line_num}: {exc}") from None


def score_submission(submission: Path | str, key: Path | str) -> dict[str, Any]:
    """Metrics of a submission against an answer key; every key ID must be answered exactly once.

    A submission's label may be 0/1 or, with ``prob_all``, a probability used for the AUC.
    """
    submission, key = Path(submission), Path(key)
    regular_file(submission)
    regular_file(key)
    if os.path.samefile(submission, key):
        raise DatasetError(f"{key}: the answer key is the submission itself; score against the key of the test set")
    truth = read_labelled_csv(key)
    if _probabilities(key):
        raise DatasetError(f"{key}: has a prob_all column, so it is a submission, not an answer key")
    answers = read_labelled_csv(submission)
    for ident, label in truth.items():
        if label not in (0.0, 1.0):
            raise DatasetError(f"{key}: label {label!r} of {ident!r} is not 0 or 1")
    missing = [ident for ident in truth if ident not in answers]
    extra = [ident for ident in answers if ident not in truth]
    if missing:
        raise DatasetError(f"{submission}: {len(missing)} IDs of the key are missing, e.g. {missing[0]!r}")
    if extra:
        raise DatasetError(f"{submission}: {len(extra)} IDs are not in the key, e.g. {extra[0]!r}")
    for ident, value in answers.items():
        if value not in (0.0, 1.0):
            raise DatasetError(f"{submission}: label {value!r} of {ident!r} is not 0 or 1")
    probabilities = _probabilities(submission)
    idents = list(truth)
    labels = np.array([int(truth[i]) for i in idents])
    scores = np.array([probabilities.get(i, answers[i]) for i in idents], dtype=np.float64)
    predicted = np.array([answers[i] for i in idents], dtype=np.int64)
    metrics = classification_metrics(labels, scores, predicted=predicted)
    if not probabilities:  # 0/1 labels alone: no ranking to measure, no probabilities to score
        metrics["auc"] = metrics["loss"] = None
    return metrics


def _probabilities(path: Path) -> dict[str, float]:
    with open_regular(path, "r", newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "prob_all" not in reader.fieldnames:
            return {}
        try:
            return {row["ID"].strip(): float(row["prob_all"]) for row in reader}
        except (TypeError, ValueError, KeyError):
            raise DatasetError(f"{path}: prob_all column holds a value that is not a number") from None
        except csv.Error as exc:
            raise DatasetError(f"{path} line {reader.line_num}: {exc}") from None
