"""The new-run form's preprocessing preview: the first training image as the fields would feed it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from db import Workspace
from engine.config import RunConfig
from engine.datasets import load_split
from engine.synth import make_dataset
from tui.conftest import make_app, wait_until


async def test_the_preview_follows_the_fields_and_steps_aside_at_80_columns(tmp_path, monkeypatch):
    from leuktui.widgets.preview import PreprocessPreview, augmentation

    monkeypatch.setenv("LEUKTUI_IMAGES", "blocks")
    monkeypatch.setenv("COLORTERM", "truecolor")
    data = make_dataset(tmp_path / "data", n_train=4, n_valid=4, n_test=2, size=60, seed=5)
    first = load_split(data, "train").samples[0].path
    app = make_app(Workspace(tmp_path / "home").ensure())
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_until(pilot, lambda: app.loaded)
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewRunScreen")
        preview = app.screen.query_one(PreprocessPreview)
        fed = preview.query_one("#preview-fed")
        assert preview.display
        app.screen.query_one("#field-data_dir").value = str(data)
        app.screen.query_one("#field-image_size").value = "48"
        await wait_until(pilot, lambda: fed.path is not None and preview.query_one("#preview-source").path == first,
                         message="the preview of the first training image")
        picture = np.asarray(Image.open(fed.path).convert("RGB"))
        assert picture.shape == (48, 48, 3) and not np.array_equal(picture[..., 0], picture[..., 2]), "colour, resized"
        colour = fed.path

        app.screen.query_one("#field-hist_eq").value = True
        app.screen.query_one("#field-center_crop").value = True
        await wait_until(pilot, lambda: fed.path not in (None, colour), message="the preview redrawn")
        picture = np.asarray(Image.open(fed.path).convert("RGB"))
        config = RunConfig.from_dict({"image_size": 48, "center_crop": True})
        assert picture.shape[:2] == (config.input_size, config.input_size) < (48, 48), "the centre crop"
        assert np.array_equal(picture[..., 0], picture[..., 1]) and np.array_equal(picture[..., 1], picture[..., 2]), "gray"
        steps = str(preview.query_one("#preview-steps").render())
        assert "gray + hist. eq." in steps and f"centre {config.input_size} px" in steps
        hflip, vflip, degrees = augmentation(RunConfig.from_dict({}))
        assert (f"{degrees:+.0f}°" in steps) == bool(degrees)

        app.screen.query_one("#field-data_dir").value = str(tmp_path / "nowhere")
        await wait_until(pilot, lambda: "no training image to show" in str(preview.query_one("#preview-steps").render()),
                         message="a missing dataset, said")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        assert not preview.display, "at 80 columns the fields take the width"
