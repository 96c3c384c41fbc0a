"""Grad-CAM heat maps of a checkpoint's predictions, by the ``grad-cam`` package
(``pytorch_grad_cam``), over the last convolutional block of our ResNets and torchvision's (an
earlier stage for an image so small that the last one's map is under 4x4: ``target_layer``).

A map is drawn over the image as the network saw it (after the run's preprocessing) and saved
as a PNG in the run folder, under a name made of the checkpoint file's identity
(``Workspace.cam_folder``): a new best checkpoint gets new maps, an unchanged one reuses the files.
Runs in the worker's environment (torch); the app only ever shows the PNGs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from db import Database, Workspace
from engine.datasets import Sample
from engine.files import atomic_write
from engine.pipeline import BatchTransform, Preprocess, decode_images
from engine.predict import PredictError, load_run_model

MIN_SIDE = 4  # a map fewer cells a side says little of where the network looked; 1x1 says nothing


def target_layer(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """The block whose Grad-CAM explains ``batch``'s predictions: the last of a ResNet's stages
    (``layer4[-1]``, else the last ``Conv2d``) whose map of this input is at least ``MIN_SIDE``
    cells a side. At the lab's 224 to 450 px that is ``layer4``; a 32 px image leaves ``layer4``
    one cell, a map the same whatever the cell, so an earlier stage (``layer2``: 4x4) explains it."""
    stages = [getattr(model, f"layer{i}", None) for i in (4, 3, 2, 1)]
    candidates = [stage[-1] for stage in stages if isinstance(stage, nn.Sequential) and len(stage)]
    if not candidates:
        candidates = [module for module in model.modules() if isinstance(module, nn.Conv2d)][::-1]
    if not candidates:
        raise ValueError("the model has no convolution to take a Grad-CAM from")
    sides: dict[nn.Module, int] = {}
    hooks = [module.register_forward_hook(lambda module, _input, output: sides.__setitem__(module, min(output.shape[-2:])))
             for module in candidates]
    try:
        with torch.no_grad():
            model(batch[:1])
    finally:
        for hook in hooks:
            hook.remove()
    for module in candidates:  # the deepest first
        if sides.get(module, 0) >= MIN_SIDE:
            return module
    return max(candidates, key=lambda module: sides.get(module, 0))


@dataclass(frozen=True)
class ClassScore:
    """The score Grad-CAM explains for one image: the logit of the class named (BCE: +logit for
    ALL, -logit for HEM; two logits: that class's)."""

    label: int
    single_logit: bool

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.single_logit:
            return output[0] if self.label == 1 else -output[0]
        return output[self.label]


def grad_cams(
    db: Database,
    workspace: Workspace,
    run_id: int,
    samples: Sequence[Sample],
    labels: Sequence[int],
    *,
    checkpoint: str = "best",
    epoch: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """A PNG per sample: the Grad-CAM of class ``labels[i]`` (the class the model predicted, for a
    mistake) over the image, cached under the checkpoint's stamp. ``epoch``: the epoch the labels
    were predicted at; a checkpoint of another epoch is refused (its maps would explain other
    predictions)."""
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    path = workspace.checkpoint_path(run_id, checkpoint)
    if not path.is_file():
        raise PredictError(f"run {run_id}: no {checkpoint} checkpoint at {path}, so no Grad-CAM maps")
    folder = workspace.cam_folder(run_id, checkpoint)
    paths = [folder / workspace.cam_name(s.ident, label) for s, label in zip(samples, labels, strict=True)]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    if not todo:
        return paths
    loaded = load_run_model(db, workspace, run_id, checkpoint)
    if epoch is not None and loaded.epoch != epoch:
        raise PredictError(f"run {run_id}: its {checkpoint} checkpoint is of epoch {loaded.epoch}, the predictions of epoch {epoch}; "
                           f"`leuktui eval {run_id} --checkpoint {checkpoint}` records them again")
    images = decode_images([samples[i] for i in todo], Preprocess.from_config(loaded.config), cache_dir=None, workers=loaded.config.workers)
    transform = BatchTransform.for_eval(loaded.config)
    model = loaded.model.float()
    single = loaded.config.num_outputs == 1
    folder.mkdir(parents=True, exist_ok=True)
    def batch_of(image: np.ndarray) -> torch.Tensor:
        return transform(torch.from_numpy(np.ascontiguousarray(image[None])).to(loaded.device))

    with GradCAM(model=model, target_layers=[target_layer(model, batch_of(images[0]))]) as cam:
        for done, (index, image) in enumerate(zip(todo, images, strict=True), start=1):
            batch = batch_of(image)
            heat = cam(input_tensor=batch, targets=[ClassScore(int(labels[index]), single)])[0]
            heat = np.nan_to_num(heat, nan=0.0)  # a map with no spread normalises to 0/0: nothing to show
            overlay = show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True)
            with atomic_write(paths[index]) as out:
                Image.fromarray(overlay).save(out, format="PNG")
            if on_progress is not None:
                on_progress(done, len(todo))
    return paths
