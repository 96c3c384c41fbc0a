import pytest

from engine.config import ConfigError, RunConfig, center_crop_size


def test_defaults_are_valid_and_loose_values_are_coerced():
    config = RunConfig.from_dict({"image_size": "64", "hist_eq": "true", "hflip": "no", "lr": "3e-4", "test_csv": "none"})
    assert config.image_size == 64 and config.hist_eq is True and config.hflip is False
    assert config.lr == pytest.approx(3e-4)
    assert config.test_csv is None
    assert RunConfig().num_outputs == 1 and RunConfig(loss="ce").num_outputs == 2


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("image_size", "abc", "not an integer"),
        ("image_size", 8, "outside"),
        ("optimizer", "rmsprop", "adam, adamw, sgd"),
        ("lr", 0, "outside"),
        ("eval_mode", "three", "single, five, ten"),
        ("model", "resnet34", "torchvision:resnetN"),
        ("model", "torchvision:resnet19", "resnet18|34|50|101|152"),
        ("device", "gpu", "auto, cpu, cuda"),
        ("hist_eq", "maybe", "not a boolean"),
        ("batch_size", 2.5, "not an integer"),
        ("lr", "nan", "not a finite number"),
        ("lr", float("inf"), "not a finite number"),
        ("rotation", "-inf", "not a finite number"),
        ("weight_decay", "nan", "not a finite number"),
        ("momentum", "inf", "not a finite number"),
    ],
)
def test_bad_values_name_the_field(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({field: value})
    assert info.value.field == field
    assert fragment in info.value.message


def test_every_float_field_refuses_non_finite_numbers():
    import dataclasses

    floats = [f.name for f in dataclasses.fields(RunConfig) if "float" in str(f.type)]
    assert {"lr", "weight_decay", "momentum", "rotation"} <= set(floats)
    for name in floats:
        for value in ("nan", "inf", "-inf", float("nan")):
            with pytest.raises(ConfigError, match="not a finite number"):
                RunConfig.from_dict({name: value})


def test_the_single_view_has_one_spelling():
    assert RunConfig.from_dict({"eval_mode": "none"}).eval_mode == "single"
    assert RunConfig.from_dict({"eval_mode": "none"}).config_hash() == RunConfig().config_hash()


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"learning_rate": 0.1})
    assert info.value.field == "learning_rate"


def test_user_and_torchvision_models_are_accepted():
    assert RunConfig.from_dict({"model": "torchvision:resnet34"}).model_depth == 34
    assert RunConfig.from_dict({"model": "my_pkg.nets:build"}).model_depth is None
    assert RunConfig.from_dict({"model": "resnet152"}).model_depth == 152


def test_hash_is_stable_and_follows_the_values():
    a = RunConfig.from_dict({"epochs": 5})
    assert a.config_hash() == RunConfig.from_dict({"epochs": "5"}).config_hash()
    assert a.config_hash() != a.replace(epochs=6).config_hash()
    assert RunConfig.from_dict(a.to_dict()) == a


def test_center_crop_scales_the_labs_384_of_450():
    assert center_crop_size(450) == 384
    assert center_crop_size(128) == 109
    assert RunConfig(image_size=450, center_crop=True).input_size == 384


def test_relative_paths_become_absolute(tmp_path):
    config = RunConfig.from_dict({"data_dir": "data/demo"}).with_absolute_paths(tmp_path)
    assert config.data_dir == str(tmp_path / "data" / "demo")


@pytest.mark.parametrize("name, nearest", [("lrr", "lr"), ("image-sise", "image_size"), ("colour", None)])
def test_a_name_that_is_no_field_says_the_nearest_and_lists_the_fields(name, nearest):
    from runner.control import parse_grid
    from runner.space import parse_space

    for parse, flag in ((parse_grid, "grid"), (lambda items: parse_space(items[0]), "space")):
        with pytest.raises(ConfigError) as caught:
            parse([f"{name}=1,2"])
        said = caught.value.message
        assert caught.value.field == flag and f"'{name.replace('-', '_')}' is not a config field" in said
        assert (f"(did you mean {nearest}?)" in said) == (nearest is not None)
        listed = said.split("; the fields: ")[1].split(", ")
        assert listed == sorted(listed) and {"lr", "hist_eq", "model"} <= set(listed)
        assert ("data_dir" in listed) == (flag == "grid")  # a study's trials share their data
