"""The backends runs can go to, found through the ``leuktui.backends`` entry-point group.

Ours (``local``, ``slurm``) are registered there by this project's own distribution; a third
party's package registers its own the same way and appears in ``--backend``, ``scheduler.json``
and the Queue screen without an edit here.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from db import Workspace
from db.errors import UserError
from runner.backends.base import Backend, BackendOption, Handle

GROUP = "leuktui.backends"
# Ours, for a source tree run without being installed (no distribution, so no entry points).
BUILT_IN = {"local": "runner.backends.local:LocalBackend", "slurm": "runner.backends.slurm:SlurmBackend"}

__all__ = ["GROUP", "Backend", "BackendOption", "Handle", "available", "backend_class", "make_backend", "all_options"]


@functools.cache
def _entry_points() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for point in entry_points(group=GROUP):
        found.setdefault(point.name, point)
    return found


def available() -> list[str]:
    """Every backend's name, ours first."""
    return [*BUILT_IN, *sorted(set(_entry_points()) - set(BUILT_IN))]


@functools.cache
def backend_class(name: str) -> type[Backend]:
    """The backend registered as ``name``; UserError listing those there are."""
    point = _entry_points().get(name)
    if point is not None:
        try:
            cls = point.load()
        except Exception as exc:  # a third party's package that is broken: say which
            raise UserError(f"backend {name!r} ({point.value}) could not be loaded: {exc}") from None
    elif name in BUILT_IN:
        import importlib

        module, _, attribute = BUILT_IN[name].partition(":")
        cls = getattr(importlib.import_module(module), attribute)
    else:
        raise UserError(f"no backend named {name!r} (installed: {', '.join(available())})")
    if not (isinstance(cls, type) and issubclass(cls, Backend)) or getattr(cls, "name", None) != name:
        raise UserError(f"backend {name!r} ({getattr(point, 'value', name)}) is not a leuktui Backend named {name!r}")
    return cls


def all_options() -> dict[str, BackendOption]:
    """Every option of every backend that loads, by key (one key, one meaning, across backends)."""
    options: dict[str, BackendOption] = {}
    for name in available():
        try:
            cls = backend_class(name)
        except UserError:
            continue  # a broken third-party backend is named when it is asked for
        for option in cls.options:
            options.setdefault(option.key, option)
    return options


def make_backend(workspace: Workspace, name: str, settings: dict[str, Any] | None = None, host: str | None = None) -> Backend:
    return backend_class(name)(workspace, settings or {}, host)
