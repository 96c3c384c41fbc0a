"""The validation images a checkpoint gets wrong, read from a recorded evaluation: false negatives
(ALL called HEM) and false positives (HEM called ALL), the most confident mistakes first.

Light (no torch): the CLI's ``mistakes`` and the run screen's Mistakes tab both read it; only
recording a missing evaluation (the CLI) and drawing Grad-CAM maps need the worker's environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from db import Database, Workspace
from db.models import Evaluation, Run
from engine.datasets import Sample, load_split
from leuktui.results import best_evaluation, view_of

FALSE_NEGATIVES = "false negatives"
FALSE_POSITIVES = "false positives"


def counted(count: int, kind: str) -> str:
    """``1 false negative``, ``2 false negatives``."""
    return f"{count} {kind.removesuffix('s') if count == 1 else kind}"


@dataclass(frozen=True)
class Mistake:
    id: str                 # the prediction's path string (the CSV's Path)
    image: Path | None      # the file, where the run's valid split still has it
    label: int
    predicted: int
    probability: float      # P(ALL)

    @property
    def kind(self) -> str:
        return FALSE_NEGATIVES if self.label == 1 else FALSE_POSITIVES

    def to_dict(self) -> dict:
        return {"id": self.id, "image": str(self.image) if self.image else None, "label": self.label,
                "predicted": self.predicted, "probability": self.probability}


@dataclass
class Mistakes:
    run_id: int
    evaluation: Evaluation
    false_negatives: list[Mistake]
    false_positives: list[Mistake]
    samples: dict[str, Sample] = field(default_factory=dict, repr=False)  # the valid split by ident

    def of(self, kind: str) -> list[Mistake]:
        return self.false_negatives if kind == FALSE_NEGATIVES else self.false_positives

    @property
    def all(self) -> list[Mistake]:
        return self.false_negatives + self.false_positives

    def cam_paths(self, workspace: Workspace) -> dict[str, Path]:
        """``{mistake id: the PNG its Grad-CAM map is (or will be) cached in}``: the map of the
        class predicted, for the evaluation's checkpoint as it is now on disk; empty when that
        checkpoint is gone."""
        try:
            folder = workspace.cam_folder(self.run_id, self.evaluation.checkpoint)
        except FileNotFoundError:
            return {}
        return {m.id: folder / workspace.cam_name(m.id, m.predicted) for m in self.all}


def chosen_evaluation(db: Database, run: Run, *, tta: str | None = None, checkpoint: str = "best") -> Evaluation | None:
    """The recorded validation evaluation the mistakes are read from: the best checkpoint's at its
    best epoch (``best_evaluation``), or the last checkpoint's at the newest epoch; None if there
    is none yet (``leuktui mistakes`` records it)."""
    mode = tta or view_of(run)
    evaluations = db.evaluations(run.id)
    if checkpoint == "best":
        return best_evaluation(run, evaluations, mode)
    pool = [e for e in evaluations if e.checkpoint == "last" and e.split == "valid" and e.tta == mode and e.epoch == run.epochs_done]
    return max(pool, key=lambda e: e.id) if pool else None


def mistakes_of(db: Database, run: Run, evaluation: Evaluation) -> Mistakes:
    """The wrong answers of ``evaluation``: false negatives by rising P(ALL), false positives by
    falling P(ALL), so the most confident mistakes come first."""
    rows = db.predictions_of([evaluation.id])[evaluation.id]
    samples = {sample.ident: sample for sample in load_split(run.config["data_dir"], "valid").samples}
    wrong = [Mistake(path, samples[path].path if path in samples else None, label, predicted, probability)
             for path, probability, predicted, label in rows if label is not None and predicted != label]
    return Mistakes(
        run.id, evaluation,
        false_negatives=sorted((m for m in wrong if m.label == 1), key=lambda m: m.probability),
        false_positives=sorted((m for m in wrong if m.label == 0), key=lambda m: -m.probability),
        samples=samples,
    )
