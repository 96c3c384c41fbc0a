"""The scheduler's saved options (``scheduler.json`` in the workspace): how many runs at once,
the idle timeout, the backend and the backend's own settings. Checked when read, like a run's
config: a value of the wrong kind is one line naming the key, never a scheduler that dies later.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db import Workspace
from db.errors import UserError
from db.files import NotAFile, read_regular_text
from engine.files import atomic_write

OPTIONS_FILE = "scheduler.json"


@dataclass
class Options:
    max_parallel: int = 1        # concurrent runs on a host without GPUs (and CPU runs beside GPUs)
    per_gpu: int = 1             # concurrent runs per GPU (small models can share)
    idle_timeout: float = 300.0  # exit after this long with nothing queued or running
    backend: str = "local"       # where runs go: a name registered under leuktui.backends
    settings: dict[str, Any] = field(default_factory=dict)  # the backend's options (Slurm: partition, sbatch_args)

    def to_dict(self) -> dict[str, Any]:
        """As saved: the backend's settings beside ours, at the top level."""
        return {"max_parallel": self.max_parallel, "per_gpu": self.per_gpu, "idle_timeout": self.idle_timeout,
                "backend": self.backend, **self.settings}

    def save(self, workspace: Workspace) -> None:
        with atomic_write(workspace.home / OPTIONS_FILE, "w") as out:
            out.write(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = OPTIONS_FILE) -> Options:
        """Options from saved values; UserError naming the key whose value cannot be used."""
        from runner.backends import all_options, backend_class

        if not isinstance(values, dict):
            raise UserError(f"{where}: expected a JSON object of options, not {type(values).__name__}")
        options = cls()
        for key in ("max_parallel", "per_gpu"):
            if key in values:
                value = values[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise UserError(f"{where}: {key!r} must be a whole number of at least 1, not {value!r}")
                setattr(options, key, value)
        if "idle_timeout" in values:
            value = values["idle_timeout"]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise UserError(f"{where}: 'idle_timeout' must be a number of seconds above 0, not {value!r}")
            options.idle_timeout = float(value)
        if "backend" in values:
            if not isinstance(values["backend"], str):
                raise UserError(f"{where}: 'backend' must be a backend's name, not {values['backend']!r}")
            options.backend = values["backend"]
        try:
            backend_class(options.backend)
        except UserError as exc:
            raise UserError(f"{where}: 'backend': {exc}") from None
        known = all_options()
        for key, value in values.items():
            if key in ("max_parallel", "per_gpu", "idle_timeout", "backend"):
                continue
            if key not in known:
                raise UserError(f"{where}: {key!r} is not an option of the scheduler or of any backend "
                                f"(known: max_parallel, per_gpu, idle_timeout, backend{''.join(', ' + k for k in known)})")
            checked = known[key].validate(value, where)
            if checked is not None:
                options.settings[key] = checked
        return options

    @classmethod
    def load(cls, workspace: Workspace) -> Options:
        """The workspace's saved options (defaults where there are none)."""
        path: Path = workspace.home / OPTIONS_FILE
        try:
            text = read_regular_text(path)
        except (FileNotFoundError, NotADirectoryError):  # no options saved (or no workspace folder yet)
            return cls()
        except NotAFile as exc:
            raise UserError(f"{exc}; it should hold the scheduler's options") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not text; remove it to use the default options") from None
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{path}: not valid JSON ({exc}); remove it to use the default options") from None
        options = cls.from_dict(values, str(path))
        owner = path.stat().st_uid
        if options.settings and owner != os.getuid():
            # A group-shared workspace: anyone in the group may write this file, and a backend's
            # settings become arguments of the batch system (sbatch --export=... runs code).
            raise UserError(f"{path}: written by another user (uid {owner}); its backend settings "
                            f"({', '.join(options.settings)}) are taken only from a file of yours: "
                            f"`leuktui scheduler start --backend {options.backend} ...` writes one")
        return options
