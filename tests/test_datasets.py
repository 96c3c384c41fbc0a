import shutil

import pytest
from PIL import Image

from engine.datasets import (
    DatasetError,
    check_dataset,
    default_test_csv,
    load_split,
    load_test,
)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _image(path, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (90, 60, 150)).save(path, format="BMP")


def test_reads_the_lab_csv_layout(tiny_data):
    train = load_split(tiny_data, "train")
    assert len(train) == 48
    assert train.samples[0].ident == "./new_dataset/train/0.bmp"
    assert train.samples[0].path == tiny_data / "new_dataset" / "train" / "0.bmp"
    assert set(train.labels) == {0, 1}
    test = load_test(tiny_data, "resnet_50_test.csv")
    assert len(test) == 16 and all(s.label is None for s in test.samples)
    # valid.csv stands in for a test CSV: its labels are ignored there.
    assert all(s.label is None for s in load_test(tiny_data, tiny_data / "valid.csv").samples)


def test_finds_the_kaggle_zips_doubled_folder(tmp_path):
    _image(tmp_path / "new_dataset" / "new_dataset" / "train" / "0.bmp")
    _image(tmp_path / "new_dataset" / "new_dataset" / "train" / "1.bmp")
    _write(tmp_path / "train.csv", "Path,label\n./new_dataset/train/0.bmp,1\n./new_dataset/train/1.bmp,0\n")
    split = load_split(tmp_path, "train")
    assert [s.path.exists() for s in split.samples] == [True, True]
    assert split.samples[0].ident == "./new_dataset/train/0.bmp"


def test_reads_the_original_fold_layout(tmp_path):
    for fold in ("fold_0", "fold_1", "fold_2"):
        _image(tmp_path / fold / "all" / f"{fold}_a.bmp")
        _image(tmp_path / fold / "hem" / f"{fold}_h.bmp")
    train, valid = load_split(tmp_path, "train"), load_split(tmp_path, "valid")
    assert len(train) == 4 and len(valid) == 2
    assert sorted(valid.labels) == [0, 1]
    assert valid.samples[0].ident == "fold_2/all/fold_2_a.bmp"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("Path,label\n./a.bmp,2\n", "line 2: label '2' is not 0 (HEM) or 1 (ALL)"),
        ("Path,label\n./a.bmp,1\n./b.bmp,x\n", "line 3: label 'x'"),
        ("File,label\n./a.bmp,1\n", "has no 'Path' column"),
        ("Path\n./a.bmp\n", "has no 'label' column"),
        ("", "empty file"),
    ],
)
def test_bad_csv_names_the_file_and_line(tmp_path, content, fragment):
    _write(tmp_path / "train.csv", content)
    with pytest.raises(DatasetError) as info:
        load_split(tmp_path, "train")
    assert "train.csv" in str(info.value) and fragment in str(info.value)


def test_default_test_csv_follows_the_model_depth(tiny_data, tmp_path):
    assert default_test_csv(tiny_data, 50).name == "resnet_50_test.csv"
    assert default_test_csv(tiny_data, 152).name == "resnet_152_test.csv"
    assert default_test_csv(tiny_data, 34).name == "resnet_18_test.csv"
    with pytest.raises(DatasetError, match="no test CSV"):
        default_test_csv(tmp_path, 18)
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'moved'}: no such dataset folder$"):  # moved since the run trained
        default_test_csv(tmp_path / "moved", 18)


def test_check_passes_a_good_dataset(tiny_data):
    report = check_dataset(tiny_data)
    assert report.ok, report.errors
    assert report.layout == "csv"
    assert report.splits["train"]["rows"] == 48
    assert report.splits["train"]["hem"] + report.splits["train"]["all"] == 48
    assert report.splits["valid"]["image_sizes"] == {"40x40": 24}


def test_check_names_every_broken_file(tiny_data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_data, root)
    (root / "new_dataset" / "train" / "3.bmp").unlink()
    (root / "new_dataset" / "valid" / "1.bmp").write_bytes(b"BM garbage")
    with (root / "train.csv").open("a") as handle:
        handle.write("./new_dataset/train/0.bmp,1\n")
    report = check_dataset(root)
    assert not report.ok
    joined = "\n".join(report.errors)
    assert "train/3.bmp: missing" in joined
    assert "valid/1.bmp: unreadable" in joined
    assert any("duplicated rows" in w for w in report.warnings)


def test_check_reports_a_folder_that_is_no_dataset(tmp_path):
    report = check_dataset(tmp_path)
    assert not report.ok and "not a dataset" in report.errors[0]
