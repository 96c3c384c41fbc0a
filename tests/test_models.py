import sys
import textwrap

import pytest
import torch
import torchvision

from engine.config import ConfigError
from engine.models import build_model, load_pretrained


def _assert_same_parameters(ours, theirs):
    own, ref = ours.state_dict(), theirs.state_dict()
    assert list(own) == list(ref)
    assert all(own[k].shape == ref[k].shape for k in own)


@pytest.mark.parametrize("depth", [18, 50])
def test_loads_torchvision_weights_strictly_and_gives_the_same_outputs(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    ours = build_model(f"resnet{depth}", 1000).eval()
    _assert_same_parameters(ours, reference)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_resnet152_matches_torchvision_parameter_for_parameter():
    _assert_same_parameters(build_model("resnet152", 1000), torchvision.models.resnet152(weights=None))


def test_pretrained_file_loads_with_a_fresh_head_for_other_class_counts(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", 1)
    head_before = model.fc.weight.clone()
    kept = load_pretrained(model, path)
    assert kept == ["fc.weight", "fc.bias"]
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert torch.equal(model.fc.weight, head_before)


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ConfigError) as info:
        load_pretrained(build_model("resnet18", 1), path)
    assert info.value.field == "pretrained" and "resnet50.pth" in info.value.message


def test_missing_or_corrupt_pretrained_file_is_a_user_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_pretrained(build_model("resnet18", 1), tmp_path / "absent.pth")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable state dict"):
        load_pretrained(build_model("resnet18", 1), broken)


def test_torchvision_models_are_selectable():
    model = build_model("torchvision:resnet34", 2)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.fc.out_features == 2


def test_a_users_network_is_built_from_package_module_callable(tmp_path, monkeypatch):
    (tmp_path / "student_nets.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def tiny(num_classes):
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

        def no_args():
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(1))

        def not_a_model(num_classes):
            return "oops"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LEUKTUI_MODELS", raising=False)
    try:
        with pytest.raises(ConfigError, match="which you have not allowed"):
            build_model("student_nets:tiny", 2)  # a name in a run config alone runs nothing
        assert "student_nets" not in sys.modules
        monkeypatch.setenv("LEUKTUI_MODELS", "student_nets")
        model = build_model("student_nets:tiny", 2)
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 2)
        assert build_model("student_nets:no_args", 1) is not None
        with pytest.raises(ConfigError, match="not a torch.nn.Module"):
            build_model("student_nets:not_a_model", 1)
        with pytest.raises(ConfigError, match="has no callable"):
            build_model("student_nets:absent", 1)
        monkeypatch.setenv("LEUKTUI_MODELS", "student_nets, no_such_package.nets")
        with pytest.raises(ConfigError, match="cannot import"):
            build_model("no_such_package.nets:model", 1)
        monkeypatch.delenv("LEUKTUI_MODELS")
        (tmp_path / "config" / "leuktui").mkdir(parents=True)
        (tmp_path / "config" / "leuktui" / "models.txt").write_text("# mine\nstudent_nets:tiny\n")
        assert build_model("student_nets:tiny", 2) is not None
        with pytest.raises(ConfigError, match="which you have not allowed"):
            build_model("student_nets:no_args", 1)
    finally:
        sys.modules.pop("student_nets", None)
