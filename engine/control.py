"""Creating and naming runs: the light operations the CLI and the app share (no torch)."""

from __future__ import annotations

from collections.abc import Sequence

from db import Database
from db.models import Run
from engine.config import RunConfig


def default_name(config: RunConfig) -> str:
    model = config.model.split(":")[-1]
    extras = [name for name, on in (("histeq", config.hist_eq), ("ccrop", config.center_crop), ("cell", config.crop_to_cell)) if on]
    if config.eval_mode != "single":
        extras.append(f"{config.eval_mode}crop")
    return "-".join([model, f"{config.image_size}px", *extras, config.config_hash()[:6]])


def create_run(
    db: Database,
    config: RunConfig,
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    notes: str = "",
    status: str = "queued",
    sweep_id: int | None = None,
    parent_id: int | None = None,
) -> Run:
    """Record a new run with its config resolved to absolute paths."""
    config = config.with_absolute_paths()
    return db.create_run(
        config=config.to_dict(),
        config_hash=config.config_hash(),
        model=config.model,
        name=name or default_name(config),
        status=status,
        tags=tags,
        notes=notes,
        sweep_id=sweep_id,
        parent_id=parent_id,
    )
