"""The Runs screen's filter language: free text plus simple field queries.

``model=resnet50 status=completed acc>0.95 histeq`` keeps runs matching every term. Fields are
the run's columns (id, name, model, status, tag, eval, epoch), every metric of the registry at
the run's best epoch (acc, f1, auc, mcc, balanced_acc, ...), and any config field
(``hist_eq=true``, ``image_size>=128``); operators ``= != > >= < <=``; a bare word matches the
name, model, status or tags as a substring. ``status=cancelling`` keeps the running runs whose cancel
was asked for (``status=running`` includes them). No textual, no torch: the CLI could use it too.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.errors import UserError
from db.models import Run
from db.vocabulary import CANCELLING, METRICS
from engine.config import RunConfig
from leuktui.formatting import best_metrics

_TERM = re.compile(r"^([A-Za-z_][\w.-]*)\s*(!=|>=|<=|=|>|<)\s*(.+)$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
METRIC_FIELDS = {m.summary_key for m in METRICS}
ALIASES = {
    **{m.key: m.summary_key for m in METRICS}, "epoch": "epochs_done", "eval": "eval_mode", "tags": "tag", "histeq": "hist_eq",
}
RUN_FIELDS = {"id", "name", "model", "status", "epochs_done", "sweep_id", "parent_id", "device"}


class FilterError(UserError):
    """A filter term that cannot be understood; the message names it."""


NUMERIC_RUN_FIELDS = {"id", "epochs_done", "sweep_id", "parent_id"}


@dataclass(frozen=True)
class Term:
    field: str | None  # None: free text
    op: str
    value: Any  # converted to the field's type when the filter is parsed

    def matches(self, run: Run) -> bool:
        if self.field is None:
            needle = self.value.lower()
            haystack = " ".join([run.name, run.model, run.status, run.state, *run.tags]).lower()
            return needle in haystack
        if self.field == "tag":
            has = any(tag.lower() == self.value.lower() for tag in run.tags)
            return has if self.op == "=" else not has
        if self.field == "status" and self.value == CANCELLING:  # shown, never stored: a running run asked to stop
            actual = run.state
        elif self.field in METRIC_FIELDS:
            actual = best_metrics(run)[self.field]
        else:
            actual = getattr(run, self.field) if self.field in RUN_FIELDS else run.config.get(self.field)
        if actual is None:
            return self.op == "!="
        try:
            return _OPERATORS[self.op](_comparable(actual), self.value)
        except TypeError:  # a config value of another type than its default (an old run's)
            return False


def _comparable(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _convert(text: str, like: Any) -> Any:
    if isinstance(like, bool):
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise FilterError(f"{text!r} is not true or false")
    if isinstance(like, (int, float)):
        try:
            value = float(text.rstrip("%"))
        except ValueError:
            raise FilterError(f"{text!r} is not a number") from None
        return value / 100 if text.endswith("%") else value
    return text.lower()


def _example(name: str) -> Any:
    """A value of the field's type, to convert a filter's text to it."""
    if name in METRIC_FIELDS:
        return 0.0
    if name in NUMERIC_RUN_FIELDS:
        return 0
    if name in RUN_FIELDS:
        return ""
    default = getattr(RunConfig(), name)
    return "" if default is None else default


def parse(text: str) -> list[Term]:
    terms: list[Term] = []
    known = set(RunConfig.field_names()) | RUN_FIELDS | METRIC_FIELDS | {"tag"}
    for token in text.split():
        match = _TERM.match(token)
        if not match:
            terms.append(Term(None, "~", token))
            continue
        name, op, value = match.groups()
        name = ALIASES.get(name.lower(), name.lower())
        if name not in known:
            raise FilterError(f"unknown field {name!r} in {token!r}")
        if name == "tag" and op not in ("=", "!="):
            raise FilterError(f"tags compare with = or != only ({token!r})")
        if name != "tag":
            try:
                value = _convert(value, _example(name))
            except FilterError as exc:
                raise FilterError(f"{exc} in {token!r}") from None
            if isinstance(value, str) and op not in ("=", "!="):
                raise FilterError(f"{name} compares with = or != only ({token!r})")
        terms.append(Term(name, op, value))
    return terms


def matcher(text: str) -> Callable[[Run], bool]:
    terms = parse(text)
    return lambda run: all(term.matches(run) for term in terms)
