"""What only a GPU can show (run by ``bench/gpu_check.sh`` on a lent GPU machine; skipped
without CUDA): bf16 and fp16 autocast, channels-last, ``torch.compile``, pinned-memory transfers,
NVML's readings and ``cuda:N`` names, each through the engine's own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import ConfigError, RunConfig
from engine.device import make_precision, resolve_device
from engine.loop import TrainState, build_optimizer, loss_function, train_one_epoch
from engine.models import build_model
from engine.pipeline import BatchTransform, batch_indices, iterate_batches

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def _steps(config: RunConfig, *, compiled: bool = False, steps: int = 4) -> tuple[dict, torch.nn.Module]:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(config.model, config.num_outputs).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * config.batch_size, config.image_size, config.image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, len(images)).astype(np.int64)
    generator = torch.Generator().manual_seed(0)
    batches = batch_indices(labels, config.batch_size, generator, shuffle=True)
    result = train_one_epoch(net, build_optimizer(model, config), loss_function(config), images, labels, batches,
                             BatchTransform.for_training(config), generator, device, make_precision(device, config.amp), TrainState())
    return result, model


def test_auto_precision_is_bf16_where_the_gpu_has_it_and_trains():
    precision = make_precision(torch.device("cuda"), "auto")
    assert precision.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    with precision.autocast():
        out = build_model("resnet18", 1).cuda()(torch.randn(2, 3, 64, 64, device="cuda"))
    assert out.dtype == (torch.bfloat16 if precision.name == "bf16" else torch.float16)
    result, _ = _steps(RunConfig.from_dict({"image_size": 64, "batch_size": 8}))
    assert np.isfinite(result["train_loss"]) and result["images"] == 32


def test_fp16_trains_with_a_grad_scaler():
    precision = make_precision(torch.device("cuda"), "fp16")
    assert precision.scaler is not None and precision.name == "fp16"
    result, _ = _steps(RunConfig.from_dict({"image_size": 64, "batch_size": 8, "amp": "fp16"}))
    assert np.isfinite(result["train_loss"])


def test_channels_last_batches_and_weights_through_training():
    config = RunConfig.from_dict({"image_size": 64, "batch_size": 8, "channels_last": True})
    batch = torch.zeros(8, 64, 64, 3, dtype=torch.uint8, device="cuda")
    assert BatchTransform.for_training(config)(batch, torch.Generator().manual_seed(0)).is_contiguous(memory_format=torch.channels_last)
    _, model = _steps(config)  # converted as the trainer converts it; the fused optimizer's steps keep the layout
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_compiled_model_trains_like_the_eager_one():
    config = RunConfig.from_dict({"image_size": 64, "batch_size": 8, "amp": "off"})
    eager, _ = _steps(config)
    compiled, _ = _steps(config, compiled=True)
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-2)


def test_batches_reach_the_gpu_through_pinned_memory(monkeypatch):
    pinned = []
    original = torch.Tensor.pin_memory

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        pinned.append(out.is_pinned())
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    images = np.zeros((16, 8, 8, 3), dtype=np.uint8)
    labels = np.zeros(16, dtype=np.int64)
    for x, y in iterate_batches(images, labels, [np.arange(8), np.arange(8, 16)], torch.device("cuda")):
        assert x.is_cuda and y.is_cuda and x.shape == (8, 8, 8, 3)
    assert pinned == [True, True], "each batch went through page-locked memory"


def test_nvml_sees_the_gpus_torch_sees():
    from runner.gpus import detect_gpus

    assert len(detect_gpus()) == torch.cuda.device_count()
    import pynvml

    pynvml.nvmlInit()
    try:
        memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
        assert memory.total > 0 and 0 <= memory.used <= memory.total
    finally:
        pynvml.nvmlShutdown()


def test_cuda_n_names_a_device_that_exists_and_refuses_one_that_does_not():
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
