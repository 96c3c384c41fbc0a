"""Reading the lab's dataset layouts and checking them, without torch.

Two layouts are understood:

* the lab's CSV layout: ``train.csv`` / ``valid.csv`` (``Path,label``) and the test CSVs
  ``resnet_18_test.csv``, ``resnet_50_test.csv``, ``resnet_152_test.csv`` (``Path``), with paths
  such as ``./new_dataset/train/0.bmp`` relative to the dataset root; the Kaggle zip's doubled
  ``new_dataset/new_dataset/`` folder is found too;
* the original C-NMC training layout ``fold_0..2/{all,hem}/*.bmp``: folds 0 and 1 train, fold 2
  validates, and there is no test split.

Labels: 1 = ALL (leukemia), 0 = HEM (normal).
"""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from db.files import NotAFile, open_regular, read_regular_text
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.config import RunConfig

TRAIN_CSV = "train.csv"
VALID_CSV = "valid.csv"
TEST_CSVS = {18: "resnet_18_test.csv", 50: "resnet_50_test.csv", 152: "resnet_152_test.csv"}
FOLDS_TRAIN = ("fold_0", "fold_1")
FOLDS_VALID = ("fold_2",)
CLASS_FOLDERS = {"all": 1, "hem": 0}
IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}


class DatasetError(UserError):
    """A dataset problem a user can fix; the message names the file and row."""


@dataclass(frozen=True)
class Sample:
    path: Path          # resolved image file
    label: int | None   # None for unlabelled test rows
    ident: str          # the CSV's Path string (the submission ID), or the file path


@dataclass
class Split:
    name: str
    source: Path  # the CSV or folder the samples came from
    samples: list[Sample] = field(default_factory=list)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples if s.label is not None]

    def __len__(self) -> int:
        return len(self.samples)


def dataset_holding(path: Path | str, data_dirs) -> Path | None:
    """The dataset folder among ``data_dirs`` that ``path`` is in (or is), else None: what leuktui
    writes (a submission, a report, the mistakes' copies) never goes among a dataset's files."""
    target = Path(path).expanduser().absolute().resolve()
    for root in dict.fromkeys(str(d) for d in data_dirs if d):
        folder = Path(root).expanduser().resolve()
        if target == folder or folder in target.parents:
            return folder
    return None


def detect_layout(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {'not a folder; give the dataset folder' if root.exists() else 'no such dataset folder'}")
    if (root / TRAIN_CSV).is_file():
        return "csv"
    if (root / FOLDS_TRAIN[0]).is_dir():
        return "folds"
    if (root / TRAIN_CSV).exists():  # a folder, a FIFO: there, but not a file to read
        raise DatasetError(f"{root / TRAIN_CSV}: not a regular file; the dataset's {TRAIN_CSV} is a CSV file")
    raise DatasetError(f"{root}: no {TRAIN_CSV} and no {FOLDS_TRAIN[0]}/ folder; not a dataset")


def resolve_image(root: Path, path_text: str) -> Path:
    """Where a CSV path points, accepting the Kaggle zip's doubled ``new_dataset`` folder."""
    relative = Path(path_text.replace("\\", "/"))
    if relative.is_absolute():
        return relative
    direct = root / relative
    if direct.exists():
        return direct
    parts = [p for p in relative.parts if p != "."]
    if parts:
        doubled = root.joinpath(parts[0], *parts)
        if doubled.exists():
            return doubled
        # The user may point at the new_dataset folder itself rather than its parent.
        if parts[0] == root.name:
            inside = root.joinpath(*parts[1:])
            if inside.exists():
                return inside
    return direct


def _read_csv(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = read_regular_text(csv_path, encoding="utf-8-sig")
    except NotAFile as exc:
        raise DatasetError(str(exc)) from None
    except FileNotFoundError:
        raise DatasetError(f"{csv_path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: cannot be read ({exc.__class__.__name__})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as exc:  # a field longer than the csv module takes, a NUL
        raise DatasetError(f"{csv_path} line {reader.line_num}: {exc}") from None
    if not rows:
        raise DatasetError(f"{csv_path}: empty file, expected a header row")
    header = [h.strip() for h in rows[0]]
    return header, rows[1:]


def read_csv_split(root: Path, csv_path: Path, *, labelled: bool, name: str, unique: bool = False) -> Split:
    """Read a lab CSV. Labelled CSVs need ``Path,label``; test CSVs need ``Path``.

    A test CSV's label column, if any, is ignored, so ``valid.csv`` can stand in for a test CSV.
    ``unique``: an ID given twice is refused, naming both lines (a submission has each ID once).
    """
    header, rows = _read_csv(csv_path)
    if "Path" not in header:
        raise DatasetError(f"{csv_path}: header {','.join(header)!r} has no 'Path' column")
    path_col = header.index("Path")
    label_col = header.index("label") if "label" in header else None
    if labelled and label_col is None:
        raise DatasetError(f"{csv_path}: header {','.join(header)!r} has no 'label' column")
    split = Split(name=name, source=csv_path)
    first_line: dict[str, int] = {}
    for line_no, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= path_col or (labelled and len(row) <= label_col):
            raise DatasetError(f"{csv_path} line {line_no}: expected {len(header)} columns, found {len(row)}")
        ident = row[path_col].strip()
        if not ident:
            raise DatasetError(f"{csv_path} line {line_no}: empty Path")
        if unique and first_line.setdefault(ident, line_no) != line_no:
            raise DatasetError(f"{csv_path} line {line_no}: ID {ident!r} repeats line {first_line[ident]}; "
                               "a submission names each ID once")
        label = None
        if labelled:
            label = parse_label(row[label_col], f"{csv_path} line {line_no}")
        if "\0" in ident:
            raise DatasetError(f"{csv_path} line {line_no}: the Path holds a NUL character; no file is named so")
        try:
            image = resolve_image(root, ident)
        except OSError as exc:  # a name longer than the file system allows
            shown = repr(ident) if len(ident) <= 60 else f"{ident[:60]!r}… ({len(ident):,} characters)"
            raise DatasetError(f"{csv_path} line {line_no}: the Path {shown} cannot name a file ({exc.strerror or exc})") from None
        split.samples.append(Sample(image, label, ident))
    return split


def parse_label(text: str, where: str) -> int:
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(f"{where}: label {value!r} is not 0 (HEM) or 1 (ALL)") from None
    if number not in (0.0, 1.0):
        raise DatasetError(f"{where}: label {value!r} is not 0 (HEM) or 1 (ALL)")
    return int(number)


def _folder_split(root: Path, folds: tuple[str, ...], name: str) -> Split:
    split = Split(name=name, source=root)
    for fold in folds:
        for class_name, label in CLASS_FOLDERS.items():
            folder = root / fold / class_name
            if not folder.is_dir():
                raise DatasetError(f"{folder}: missing class folder (expected {fold}/all and {fold}/hem)")
            for image in sorted(folder.iterdir()):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    split.samples.append(Sample(image, label, str(image.relative_to(root))))
    return split


def load_split(root: Path | str, name: str) -> Split:
    """The ``train`` or ``valid`` split of a dataset, in file order."""
    root = Path(root)
    layout = detect_layout(root)
    if name not in ("train", "valid"):
        raise ValueError(f"unknown split {name!r}")
    if layout == "folds":
        return _folder_split(root, FOLDS_TRAIN if name == "train" else FOLDS_VALID, name)
    csv_name = TRAIN_CSV if name == "train" else VALID_CSV
    return read_csv_split(root, root / csv_name, labelled=True, name=name)


def default_test_csv(root: Path | str, model_depth: int | None) -> Path:
    """The lab's test CSV matching the model depth, else the first one present."""
    root = Path(root)
    if not root.is_dir():  # the dataset moved (or is not mounted here) since the run trained
        raise DatasetError(f"{root}: no such dataset folder")
    preferred = TEST_CSVS.get(model_depth or 0)
    if preferred and (root / preferred).is_file():
        return root / preferred
    for candidate in TEST_CSVS.values():
        if (root / candidate).is_file():
            return root / candidate
    raise DatasetError(f"{root}: no test CSV ({', '.join(TEST_CSVS.values())}); pass --test-csv")


def resolve_test_csv(config: RunConfig, test_csv: Path | str | None = None) -> Path:
    """The test CSV a run predicts: the one asked for, else the run's own (its config's), else
    its model's default. A relative path is the dataset root's, unless it names a file from here."""
    root = Path(config.data_dir)
    chosen = test_csv or config.test_csv
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_absolute() and not path.exists():
            path = root / path
    else:
        path = default_test_csv(root, config.model_depth)
    return path.absolute()  # a link keeps its own name (an evaluation's split is named by it)


def load_test(root: Path | str, csv_path: Path | str) -> Split:
    root = Path(root)
    csv_path = Path(csv_path)
    if not csv_path.is_absolute() and not csv_path.exists():
        csv_path = root / csv_path
    return read_csv_split(root, csv_path, labelled=False, name="test", unique=True)


# -- checking -----------------------------------------------------------------------------


@dataclass
class CheckReport:
    root: Path
    layout: str = "?"
    errors: list[str] = field(default_factory=list)    # would break training
    warnings: list[str] = field(default_factory=list)  # worth knowing
    splits: dict[str, dict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": self.splits,
        }


def _inspect_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        return None, "missing"
    try:
        with open_image(path) as image:
            image.load()
            return image.size, None
    except NotAFile as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, f"more than {Image.MAX_IMAGE_PIXELS} pixels, refused (a decompression bomb?)"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


@contextlib.contextmanager
def open_image(path: Path):
    """A PIL image of a regular file (a FIFO or a folder is refused, not waited on). An image far
    larger than any cell's is refused: PIL's decompression-bomb warning is made its error for the
    process (``warnings.catch_warnings`` per call is not safe in the decoding threads)."""
    from PIL import Image

    if not any(action == "error" and category is Image.DecompressionBombWarning
               for action, _message, category, _module, _line in warnings.filters):
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    with open_regular(path, "rb") as handle, Image.open(handle) as image:
        yield image


def class_problem(split: Split) -> str | None:
    """Why a labelled split cannot train or validate a classifier: one class only. The one check
    of ``data check`` and of ``queue``'s preflight."""
    if split.samples and len(set(split.labels)) < 2:
        return f"{split.source}: only one class present; training needs ALL and HEM"
    return None


def check_dataset(root: Path | str, *, workers: int = 4, max_listed: int = 20) -> CheckReport:
    """Validate a dataset the way training would use it, collecting every problem."""
    root = Path(root)
    report = CheckReport(root=root)
    try:
        report.layout = detect_layout(root)
    except DatasetError as exc:
        report.errors.append(str(exc))
        return report

    splits: list[Split] = []
    for name in ("train", "valid"):
        try:
            splits.append(load_split(root, name))
        except DatasetError as exc:
            report.errors.append(str(exc))
    if report.layout == "csv":
        for csv_name in TEST_CSVS.values():
            if (root / csv_name).is_file():
                try:
                    test = load_test(root, root / csv_name)
                    test.name = csv_name
                    splits.append(test)
                except DatasetError as exc:
                    report.errors.append(str(exc))
        if not any((root / n).is_file() for n in TEST_CSVS.values()):
            report.warnings.append(f"no test CSV ({', '.join(TEST_CSVS.values())}): export needs --test-csv")

    seen_images: dict[Path, str] = {}
    for split in splits:
        stats: dict = {"source": str(split.source), "rows": len(split)}
        report.splits[split.name] = stats
        if not split.samples:
            report.errors.append(f"{split.source}: the {split.name} split is empty")
            continue
        duplicates = [ident for ident, count in Counter(s.ident for s in split.samples).items() if count > 1]
        if duplicates:
            report.warnings.append(f"{split.source}: {len(duplicates)} duplicated rows, e.g. {duplicates[0]}")
        if split.name in ("train", "valid"):
            counts = Counter(split.labels)
            stats["all"] = counts.get(1, 0)
            stats["hem"] = counts.get(0, 0)
            stats["hem_fraction"] = round(counts.get(0, 0) / len(split), 4)
            problem = class_problem(split)
            if problem:
                report.errors.append(problem)
            for sample in split.samples:
                other = seen_images.get(sample.path)
                if other and other != split.name:
                    report.warnings.append(f"{sample.path} is in both {other} and {split.name}")
                seen_images.setdefault(sample.path, split.name)

        unique_paths = list(dict.fromkeys(s.path for s in split.samples))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(_inspect_image, unique_paths))
        sizes = Counter(size for size, problem in results if size)
        stats["image_sizes"] = {f"{w}x{h}": n for (w, h), n in sizes.most_common(5)}
        problems = [(path, problem) for path, (_, problem) in zip(unique_paths, results, strict=True) if problem]
        for path, problem in problems[:max_listed]:
            report.errors.append(f"{path}: {problem} (in {split.source.name})")
        if len(problems) > max_listed:
            report.errors.append(f"... and {len(problems) - max_listed} more unusable images in {split.source.name}")
        stats["unusable"] = len(problems)
    return report
