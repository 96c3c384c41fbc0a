"""A study's search space, as a user writes it: the grid's factors with ranges.

``lr=log:1e-4:1e-1; batch_size=16,32,64; rotation=0:45; model=resnet18,resnet50``

- ``FIELD=V1,V2,...``: one of these values (categorical);
- ``FIELD=LOW:HIGH``: any number between (a whole number for a whole-number field);
- ``FIELD=LOW:HIGH:STEP``: from LOW in steps of STEP;
- ``FIELD=log:LOW:HIGH``: between, evenly on a log scale (learning rates, weight decay).

Every value and both ends of every range are checked as the config field would check them, so a
space that parses is one every trial's config accepts. Light: Optuna is imported only to make
its distributions (``distributions``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.config import ConfigError, RunConfig

# Fields a study cannot search: where the data is, where it runs, what decides the best epoch
# (the study's metric does), and the final fit (no validation to score a trial by).
NOT_SEARCHABLE = ("data_dir", "test_csv", "device", "workers", "best_metric", "fit_on", "pretrained")


@dataclass(frozen=True)
class Param:
    """One searched field: ``choices``, or a range ``low``..``high`` (``log``, ``step``)."""

    name: str
    kind: str                      # "categorical", "float" or "int"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """As stored in the study's settings (JSON)."""
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log, "step": self.step}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Param:
        values = dict(values)
        values["choices"] = tuple(values.get("choices", ()))
        return cls(**values)

    def text(self) -> str:
        """As a user writes it."""
        if self.kind == "categorical":
            return f"{self.name}=" + ",".join(_value_text(c) for c in self.choices)
        ends = f"{_value_text(self.low)}:{_value_text(self.high)}"
        if self.log:
            return f"{self.name}=log:{ends}"
        return f"{self.name}={ends}" + (f":{_value_text(self.step)}" if self.step is not None else "")

    @property
    def size(self) -> int | None:
        """How many values it can take, if finitely many (a grid sampler needs that)."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.kind == "int" and not self.log:
            return int((self.high - self.low) // (self.step or 1)) + 1
        if self.step is not None and not self.log:
            return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return None

    def grid_values(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices)
        step = self.step or 1
        values = [self.low + i * step for i in range(self.size or 0)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1 or value == 0 else repr(value)
    return str(value)


def _field_kinds() -> dict[str, str]:
    kinds = {}
    for f in dataclasses.fields(RunConfig):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kinds[f.name] = "bool" if kind.startswith("bool") else "int" if kind.startswith("int") else \
            "float" if kind.startswith("float") else "str"
    return kinds


def _checked(name: str, raw: Any, base: RunConfig) -> Any:
    """``raw`` as field ``name`` takes it (coerced and validated over ``base``)."""
    try:
        return getattr(RunConfig.from_dict({name: raw}, base=base), name)
    except ConfigError as exc:
        raise ConfigError("space", f"{name}: {exc.message}") from None


def parse_space(items: Sequence[str] | str, base: RunConfig | None = None) -> list[Param]:
    """The space a user wrote (``;``-separated factors, in one string or several); ConfigError
    (field ``space``) naming the factor that cannot be searched as written."""
    base = base or RunConfig()
    texts = [items] if isinstance(items, str) else list(items)
    parts = [part.strip() for text in texts for part in text.split(";") if part.strip()]
    if not parts:
        raise ConfigError("space", "empty: give FIELD=LOW:HIGH, FIELD=log:LOW:HIGH or FIELD=V1,V2,... (separated by ;)")
    kinds = _field_kinds()
    names = [part.partition("=")[0].strip().replace("-", "_") for part in parts]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice:
        raise ConfigError("space", f"{twice!r} is given twice")
    params: list[Param] = []
    for part in parts:
        name, sep, spec = part.partition("=")
        name = name.strip().replace("-", "_")
        spec = spec.strip()
        if not sep or not spec:
            raise ConfigError("space", f"{part!r} is not FIELD=LOW:HIGH, FIELD=log:LOW:HIGH or FIELD=V1,V2,...")
        if name not in kinds:
            raise ConfigError("space", RunConfig.not_a_field(name, [k for k in kinds if k not in NOT_SEARCHABLE]))
        if name in NOT_SEARCHABLE:
            raise ConfigError("space", f"{name!r} cannot be searched (a study's trials share it; set it with its flag)")
        params.append(_parse_one(name, spec, kinds[name], base))
    return params


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError("space", f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError("space", f"{name}: {text!r} is not a finite number")
    return value


def _parse_one(name: str, spec: str, kind: str, base: RunConfig) -> Param:
    if "," in spec or ":" not in spec:
        choices = [v.strip() for v in spec.split(",")]
        if "" in choices:
            raise ConfigError("space", f"{name}: {spec!r} has an empty value (two commas, or one at an end)")
        values = list(dict.fromkeys(_checked(name, v, base) for v in choices))
        if len(values) < 2:
            raise ConfigError("space", f"{name}: one value is not a search; set it with its flag, or give two or more")
        return Param(name, "categorical", choices=tuple(values))
    pieces = [p.strip() for p in spec.split(":")]
    log = pieces[0].lower() == "log"
    if log:
        pieces = pieces[1:]
    if kind not in ("int", "float"):
        raise ConfigError("space", f"{name}: a {'true/false' if kind == 'bool' else 'text'} field takes a list of values (V1,V2), not a range")
    if len(pieces) not in (2, 3) or (log and len(pieces) != 2):
        form = "log:LOW:HIGH" if log else "LOW:HIGH or LOW:HIGH:STEP"
        raise ConfigError("space", f"{name}: {spec!r} is not {form}")
    low, high = (_number(name, p) for p in pieces[:2])
    step = _number(name, pieces[2]) if len(pieces) == 3 else None
    if low >= high:
        raise ConfigError("space", f"{name}: the range {spec!r} is empty (LOW must be below HIGH)")
    if log and low <= 0:
        raise ConfigError("space", f"{name}: a log range starts above 0, not at {pieces[0]}")
    if step is not None and step <= 0:
        raise ConfigError("space", f"{name}: the step must be above 0, not {pieces[2]}")
    if kind == "int":
        if not (low.is_integer() and high.is_integer() and (step is None or step.is_integer())):
            raise ConfigError("space", f"{name}: a whole-number field takes whole-number ends and step, not {spec!r}")
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    _checked(name, low, base)
    _checked(name, high, base)
    param = Param(name, kind, low=low, high=high, log=log, step=step)
    if param.size is not None and param.size < 2:
        raise ConfigError("space", f"{name}: the step {pieces[2]} leaves one value of {spec!r}; a search needs two or more")
    return param


def space_text(params: Sequence[Param]) -> str:
    return "; ".join(p.text() for p in params)


def grid_size(params: Sequence[Param]) -> int | None:
    """The number of combinations, if every factor has finitely many values."""
    total = 1
    for param in params:
        if param.size is None:
            return None
        total *= param.size
    return total
