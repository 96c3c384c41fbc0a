"""Grad-CAM heat maps of a checkpoint's predictions, by the ``grad-cam`` package
(``pytorch_grad_cam``), over the last convolutional block of our ResNets and torchvision's.

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


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional block: ``layer4[-1]`` of a ResNet, else the last ``Conv2d``."""
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, nn.Sequential) and len(layer4):
        return layer4[-1]
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise ValueError("the model has no convolution to take a Grad-CAM from")
    return convolutions[-1]


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
    with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
        for done, (index, image) in enumerate(zip(todo, images, strict=True), start=1):
            batch = transform(torch.from_numpy(np.ascontiguousarray(image[None])).to(loaded.device))
            heat = cam(input_tensor=batch, targets=[ClassScore(int(labels[index]), single)])[0]
            heat = np.nan_to_num(heat, nan=0.0)  # a map with no spread normalises to 0/0: nothing to show
            overlay = show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True)
            with atomic_write(paths[index]) as out:
                Image.fromarray(overlay).save(out, format="PNG")
            if on_progress is not None:
                on_progress(done, len(todo))
    return paths
