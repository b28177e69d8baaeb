"""Image data sets on synthetic files of the right shapes, the batched Table 9 augmentation, and configs."""

import gzip
from pathlib import Path

import pytest
import torch
from vision_fakes import skip_md5, write_cifar, write_mnist_like, write_svhn

from gedi_core.cli import build_parser, resolve_train_config
from gedi_core.config import DataConfig
from gedi_core.data import load_dataset
from gedi_core.data.augment import ImageAugment
from gedi_core.data.idx import find_idx_files, read_idx_files
from gedi_core.errors import GediError

ROOT = Path(__file__).resolve().parents[1]


def cfg_from(argv):
    return resolve_train_config(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize(
    "name, write, shape, classes, n_train, n_test",
    [
        ("fashion-mnist", lambda r: write_mnist_like(r, "FashionMNIST"), (1, 28, 28), 10, 64, 40),
        ("mnist", lambda r: write_mnist_like(r, "MNIST"), (1, 28, 28), 10, 64, 40),
        ("mnist-t10k", lambda r: write_mnist_like(r, "MNIST", n_test=8100), (1, 28, 28), 10, 8000, 100),
        ("cifar10", lambda r: write_cifar(r, 10), (3, 32, 32), 10, 100, 30),
        ("cifar100", lambda r: write_cifar(r, 100), (3, 32, 32), 100, 100, 30),
        ("svhn", write_svhn, (3, 32, 32), 10, 50, 30),
    ],
)
def test_every_dataset_loads_from_torchvision_layout(tmp_path, monkeypatch, name, write, shape, classes,
                                                     n_train, n_test):
    skip_md5(monkeypatch)
    write(tmp_path)
    data = load_dataset(DataConfig(name=name, data_root=str(tmp_path)), seed=0)
    assert data.input_shape == shape and data.num_classes == classes
    assert data.train_x.shape[0] == n_train and data.test_x.shape[0] == n_test
    assert data.train_x.dtype == torch.float32 and -1.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    assert data.train_y.dtype == torch.long and 0 <= int(data.train_y.min()) and int(data.train_y.max()) < classes
    sub = load_dataset(DataConfig(name=name, data_root=str(tmp_path), train_subset=16, test_subset=8), seed=0)
    assert sub.train_x.shape[0] == 16 and sub.test_x.shape[0] == 8
    assert torch.equal(sub.train_x, data.train_x[:16])
    x = data.augment(data.train_x[:8], torch.Generator().manual_seed(0))
    assert x.shape == (8, *shape)


def test_svhn_label_10_is_digit_0(tmp_path, monkeypatch):
    skip_md5(monkeypatch)
    write_svhn(tmp_path)
    data = load_dataset(DataConfig(name="svhn", data_root=str(tmp_path)), seed=0)
    assert set(data.train_y.tolist()) == set(range(10))


def test_missing_files_give_one_line_error_with_hint(tmp_path):
    with pytest.raises(GediError, match=r"dataset 'cifar10' .*not found.*--download") as err:
        load_dataset(DataConfig(name="cifar10", data_root=str(tmp_path)), seed=0)
    assert "\n" not in str(err.value)


def test_idx_reader_reads_plain_and_gz_and_rejects_damaged_files(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=12, n_test=5)
    raw = tmp_path / "MNIST" / "raw"
    images, labels = find_idx_files([tmp_path, raw], "t10k")
    x, y = read_idx_files(images, labels)
    assert x.shape == (5, 28, 28) and x.dtype == torch.uint8 and y.shape == (5,) and y.dtype == torch.long
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in raw.iterdir():  # the same files, not gzipped
        (plain / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    x2, y2 = read_idx_files(*find_idx_files([plain], "t10k"))
    assert torch.equal(x, x2) and torch.equal(y, y2)

    garbage = plain / "t10k-images-idx3-ubyte"
    garbage.write_bytes(b"\x01\x02\x03")
    with pytest.raises(GediError, match="t10k-images-idx3-ubyte: not an IDX file"):
        read_idx_files(garbage, plain / "t10k-labels-idx1-ubyte")
    truncated = raw / "t10k-images-idx3-ubyte.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(truncated.read_bytes())[:-100]))
    with pytest.raises(GediError, match="t10k-images-idx3-ubyte.gz: damaged or truncated IDX file"):
        read_idx_files(truncated, labels)
    corrupt = raw / "train-labels-idx1-ubyte.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:20])
    with pytest.raises(GediError, match="train-labels-idx1-ubyte.gz: damaged or truncated IDX file") as err:
        load_dataset(DataConfig(name="mnist", data_root=str(tmp_path)), seed=0)
    assert "\n" not in str(err.value)


def test_augment_is_batched_per_image_and_seeded():
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    aug = ImageAugment(crop_pad=4, hflip=True, jitter_p=1.0, gray_p=0.5, noise=0.03)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # independent parameters per image: the change differs across the batch
    delta = (a - x).flatten(1).abs().mean(1)
    assert delta.std() > 1e-3
    # grayscale picked for about half of the images: R == G == B up to the added noise
    gray = ((a[:, 0] - a[:, 1]).abs().flatten(1).max(1).values < 0.3).float().mean()
    assert 0.2 < gray < 0.8
    # noise only: the mean change is sigma-sized
    only_noise = ImageAugment(crop_pad=0, hflip=False, jitter_p=0.0, gray_p=0.0, noise=0.03)
    assert abs(float((only_noise(x, torch.Generator().manual_seed(0)) - x).std()) - 0.03) < 0.005
    # a crop of an image padded by reflection keeps the pixel multiset of an interior window
    crop = ImageAugment(crop_pad=2, hflip=False, jitter_p=0.0, gray_p=0.0, noise=0.0)
    y = crop(x, torch.Generator().manual_seed(0))
    assert torch.allclose(y[:, :, 2:-2, 2:-2].mean(), x[:, :, 2:-2, 2:-2].mean(), atol=0.05)


def test_random_resized_crop_zooms_into_a_window_of_each_image():
    # a horizontal ramp: a window of width share w spans w of the ramp's range (w >= sqrt(0.3 * 3/4))
    ramp = torch.linspace(-1, 1, 28).expand(28, 28)[None, None].repeat(256, 1, 1, 1)
    aug = ImageAugment(crop_pad=4, crop_scale=0.3, hflip=False, jitter_p=0.0, gray_p=0.0, noise=0.0)
    y = aug(ramp, torch.Generator().manual_seed(0))
    assert y.shape == ramp.shape and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    share = (y[:, 0, :, -1] - y[:, 0, :, 0]).mean(1) / (ramp[0, 0, 0, -1] - ramp[0, 0, 0, 0])
    assert share.max() <= 1 + 1e-4 and share.min() >= 0.4 and share.median() < 0.9
    assert share.std() > 0.05  # a window per image
    assert torch.equal(y, aug(ramp, torch.Generator().manual_seed(0)))  # seeded
    assert DataConfig(crop_scale=0.5).crop_scale == 0.5
    with pytest.raises(GediError, match="data.crop_scale"):
        cfg_from(["--dataset", "fashion-mnist", "--set", "data.crop_scale=1.5"])


def test_flip_only_for_cifar_by_default():
    from gedi_core.data.augment import augment_for

    assert augment_for("cifar10", 3, DataConfig()).hflip and augment_for("cifar100", 3, DataConfig()).hflip
    assert not augment_for("svhn", 3, DataConfig()).hflip
    assert augment_for("mnist", 1, DataConfig()).gray_p == 0.0


def test_dataset_defaults_layer_and_flags():
    cfg = cfg_from(["--dataset", "cifar10"])
    assert (cfg.model.backbone, cfg.epochs, cfg.batch_size, cfg.lr, cfg.sgld.steps) == ("resnet8", 200, 64, 1e-4, 20)
    assert (cfg.sgld.step_size, cfg.sgld.buffer_size, cfg.model.num_clusters) == (1.0, 10000, 10)
    cfg = cfg_from(["--dataset", "cifar100", "--width", "64", "--epochs", "3", "--train-subset", "100", "--download"])
    assert (cfg.model.width, cfg.model.proj_hidden, cfg.model.proj_dim, cfg.model.num_clusters) == (64, 128, 64, 100)
    assert cfg.epochs == 3 and cfg.data.train_subset == 100 and cfg.data.download
    assert cfg_from(["--dataset", "svhn", "--method", "jem"]).weights.inv == 0.0
    assert cfg_from(["--dataset", "moons"]).epochs == 0  # toy runs keep the iteration loop


def test_every_vision_config_resolves():
    files = sorted((ROOT / "experiments" / "configs" / "vision").glob("*.yaml"))
    assert len(files) >= 25
    for path in files:
        cfg = cfg_from(["--config", str(path)])
        assert cfg.model.backbone == "resnet8" and cfg.batch_size == 64 and cfg.lr == 1e-4, path
        assert cfg.method in path.stem, path
