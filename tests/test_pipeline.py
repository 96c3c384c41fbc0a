import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from engine.datasets import DatasetError, Sample, load_split
from engine.pipeline import (
    BatchTransform,
    Preprocess,
    batch_indices,
    crop_to_cell,
    decode_images,
    equalize_gray,
    tta_views,
)


def test_histogram_equalization_uses_the_opencv_mapping():
    gray = np.array([[0, 0, 0, 0, 100, 100, 200, 255]], dtype=np.uint8)
    out = np.asarray(equalize_gray(Image.fromarray(gray).convert("RGB")))
    # cdf = 4, 6, 7, 8 at levels 0, 100, 200, 255; lut = round((cdf - 4) * 255 / (8 - 4))
    assert out[0, :, 0].tolist() == [0, 0, 0, 0, 128, 128, 191, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_crop_to_cell_frames_the_cell_in_a_square():
    pixels = np.zeros((100, 100, 3), dtype=np.uint8)
    pixels[10:40, 50:70] = 150  # a 30 x 20 cell off centre
    cropped = crop_to_cell(Image.fromarray(pixels))
    assert cropped.size[0] == cropped.size[1] == 33  # 30 plus a 4% margin each side, rounded up
    inside = np.asarray(cropped).max(axis=2) > 12
    assert inside.sum() == 30 * 20, "the whole cell is kept"


def test_preprocess_sizes_and_center_crop():
    image = Image.new("RGB", (450, 450), (10, 20, 30))
    assert Preprocess(450, center_crop=True)(image).shape == (384, 384, 3)
    assert Preprocess(128)(image).shape == (128, 128, 3)
    assert Preprocess(128, center_crop=True).output_size == 109


def test_decode_once_then_reuse_the_cache(tiny_data, tmp_path):
    samples = load_split(tiny_data, "valid").samples
    first = decode_images(samples, Preprocess(32), cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    second = decode_images(samples, Preprocess(32), cache_dir=tmp_path)
    assert isinstance(second, np.memmap)
    assert np.array_equal(first, second)
    assert first[3].tolist() == Preprocess(32)(Image.open(samples[3].path)).tolist()
    decode_images(samples, Preprocess(32, hist_eq=True), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2, "another preprocessing setting is another cache"


def test_a_corrupt_image_is_named(tmp_path):
    broken = tmp_path / "bad.bmp"
    broken.write_bytes(b"BM not really")
    with pytest.raises(DatasetError, match="bad.bmp: image cannot be read"):
        decode_images([Sample(broken, 1, "bad.bmp")], Preprocess(16))


def _batch(n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_normalization_without_augmentation():
    batch = _batch()
    out = BatchTransform()(batch)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (batch.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(out, expected, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("rotation", [0.0, 1e-4])
def test_flips_are_per_image_mirror_images(rotation):
    """With (almost) no rotation each image comes out as itself or its mirror: the affine path
    and the plain flip path must agree on orientation."""
    batch = _batch(n=32)
    transform = BatchTransform(hflip=True, vflip=True, rotation=rotation)
    plain = BatchTransform()(batch)
    generator = torch.Generator().manual_seed(1)
    out = transform(batch, generator)
    seen = set()
    for i in range(len(batch)):
        for name, candidate in (("id", plain[i]), ("h", plain[i].flip(2)), ("v", plain[i].flip(1)), ("hv", plain[i].flip(1).flip(2))):
            if torch.allclose(out[i], candidate, atol=1e-2):
                seen.add(name)
                break
        else:
            raise AssertionError(f"image {i} is neither itself nor a mirror image")
    assert seen == {"id", "h", "v", "hv"}


def test_augmentation_follows_the_seed():
    batch = _batch()
    transform = BatchTransform(hflip=True, vflip=True, rotation=20)
    a = transform(batch, torch.Generator().manual_seed(5))
    b = transform(batch, torch.Generator().manual_seed(5))
    c = transform(batch, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rotation_fills_corners_with_black():
    batch = torch.full((1, 32, 32, 3), 200, dtype=torch.uint8)
    out = BatchTransform(rotation=45, hflip=False, vflip=False, mean=(0, 0, 0), std=(1, 1, 1))
    generator = torch.Generator().manual_seed(3)
    rotated = out(batch, generator)
    assert rotated[0, :, 0, 0].abs().max() < 0.5, "corner comes from outside the image"
    assert rotated[0, :, 16, 16].min() > 0.7


def test_five_and_ten_crop_match_torchvision():
    x = torch.randn(2, 3, 45, 45)
    five = tta_views(x, "five")
    reference = TF.five_crop(x, [38, 38])
    assert len(five) == 5
    for ours, theirs in zip(five, reference, strict=True):
        assert torch.equal(ours, theirs)
    ten = tta_views(x, "ten")
    assert len(ten) == 10
    assert torch.equal(ten[5], five[0].flip(-1))
    assert tta_views(x, "single")[0] is x


def test_balanced_sampling_draws_both_classes_equally():
    labels = np.array([0] * 100 + [1] * 900)
    batches = batch_indices(labels, 50, torch.Generator().manual_seed(0), shuffle=True, balance=True)
    drawn = labels[np.concatenate(batches)]
    assert abs(drawn.mean() - 0.5) < 0.05
    plain = batch_indices(labels, 50, torch.Generator().manual_seed(0), shuffle=True)
    assert sorted(np.concatenate(plain).tolist()) == list(range(1000))
