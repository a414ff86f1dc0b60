"""Contract of every registered model: shapes, rebuild, head, scripting, export, errors.

Parametrized over ``list_models()``, so a newly registered family is covered automatically.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import lightnets
from lightnets.errors import InvalidArgumentError
from lightnets.models.registry import VARIANTS

FAMILIES = {
    "squeezenet1_0",
    "squeezenet1_1",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v1",
    "shufflenet_v2",
}
MODELS = lightnets.list_models()
JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def non_default_hparams(name: str) -> dict[str, Any]:
    """One value other than the default for every hyperparameter the family declares."""
    values: dict[str, Any] = {}
    for key, spec in lightnets.get_model_entry(name).hparams.items():
        if spec.choices is not None:
            values[key] = [c for c in spec.choices if c != spec.default][-1]
        elif spec.kind is bool:
            values[key] = not spec.default
        elif spec.kind is float:
            values[key] = 0.5 if spec.positive else 0.1
    return values


def state_shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_every_family_is_registered():
    assert set(MODELS) >= FAMILIES


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_head_split(name, variant):
    torch.manual_seed(0)
    model = lightnets.create_model(name, num_classes=7, variant=variant).eval()
    assert model.default_input_size == ((3, 32, 32) if variant == "cifar" else (3, 224, 224))
    x = torch.randn(2, *model.default_input_size)
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
        assert features.shape[:2] == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), out)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert isinstance(model, lightnets.models.LightweightNet)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", MODELS)
def test_rebuild_from_hparams(name, variant):
    hparams = non_default_hparams(name)
    model = lightnets.create_model(name, num_classes=7, variant=variant, **hparams)
    assert model.hparams == {"name": name, "num_classes": 7, "variant": variant, **hparams}
    plain = json.loads(json.dumps(model.hparams))  # plain data: survives JSON
    rebuilt = lightnets.create_model(**plain)
    assert state_shapes(rebuilt) == state_shapes(model)
    assert rebuilt.hparams == model.hparams
    default = lightnets.create_model(name, num_classes=7, variant=variant)
    assert default.hparams == {
        "name": name, "num_classes": 7, "variant": variant,
        **lightnets.get_model_entry(name).defaults,
    }  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier(name):
    model = lightnets.create_model(name, variant="cifar", num_classes=10).eval()
    trunk = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("features")}
    model.reset_classifier(3)
    assert model.num_classes == 3 and model.hparams["num_classes"] == 3
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trunk.items())  # the trunk is untouched
    assert state_shapes(lightnets.create_model(**model.hparams)) == state_shapes(model)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)


def _family_classes() -> set[type]:
    """Every LightweightNet subclass of the package but the shared head's (the families'
    classes; a family a test registers is not one of them)."""
    found, todo = set(), [lightnets.models.LightweightNet]
    while todo:
        subclasses = todo.pop().__subclasses__()
        todo += subclasses
        found.update(c for c in subclasses if c.__module__.startswith("lightnets."))
    return found - {lightnets.models.base.PooledLinearHeadNet}


def test_a_family_class_built_directly_reports_its_classes():
    """``MobileNetV2(num_classes=10)`` without the registry: the base class records 10."""
    classes = _family_classes()
    registered = {type(lightnets.create_model(n, variant="cifar", num_classes=2)) for n in MODELS}
    assert registered <= classes and len(classes) == 5
    for cls in classes:
        model = cls(num_classes=10, variant="cifar").eval()
        assert model.num_classes == 10, cls.__name__
        with torch.no_grad():
            assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        with pytest.raises(InvalidArgumentError, match="num_classes"):
            cls(num_classes=0, variant="cifar")


@JIT_DEPRECATED
@pytest.mark.parametrize("name", MODELS)
def test_torchscript_matches_eager(name):
    torch.manual_seed(0)
    model = lightnets.create_model(name, variant="cifar", num_classes=10).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(scripted.forward_features(x), model.forward_features(x))


@pytest.mark.parametrize("name", MODELS)
def test_export_with_dynamic_batch(name):
    torch.manual_seed(0)
    model = lightnets.create_model(name, variant="cifar", num_classes=10).eval()
    batch = torch.export.Dim("batch", max=64)
    program = torch.export.export(
        model, (torch.randn(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}}
    )
    exported = program.module()
    for n in (1, 3):
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x))


def test_no_data_attribute_in_model_code():
    # `x.data` bypasses autograd's checks; no model may use it.
    model_dir = Path(lightnets.models.__file__).parent
    offenders = []
    for path in sorted(model_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "data":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("mobilenetv2", "mobilenet_v2"), ("squeezenet", "squeezenet1_0"),
     ("shufflenet_v3", "shufflenet_v2")],
)  # fmt: skip
def test_unknown_model_suggests_close_names(name, suggestion):
    with pytest.raises(InvalidArgumentError) as info:
        lightnets.create_model(name)
    message = str(info.value)
    assert f"unknown model {name!r}" in message
    assert "did you mean" in message and suggestion in message.split("did you mean")[1]
    assert isinstance(info.value, ValueError) and "\n" not in message


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("shufflenet_v1", {"groups": 5}, r"groups=5 is not supported; allowed: 1, 2, 3, 4, 8"),
        ("shufflenet_v2", {"width_mult": 0.7}, r"width_mult=0.7 .*allowed: 0.5, 1.0, 1.5, 2.0"),
        ("mobilenet_v1", {"width_mult": 0.0}, r"width_mult=0.0 is not allowed; use a number > 0"),
        ("mobilenet_v2", {"width_mult": -1}, r"width_mult=-1 is not allowed; use a number > 0"),
        ("shufflenet_v1", {"width_mult": 0}, r"width_mult=0.0 .*allowed: 0.25"),
        (
            "mobilenet_v2",
            {"width_mult": "1.0"},
            r"width_mult='1.0' is not allowed; use a finite number",
        ),
        ("squeezenet1_0", {"batch_norm": 1}, r"batch_norm=1 is not allowed; use a bool"),
        ("mobilenet_v1", {"num_classes": 0}, r"num_classes=0 is not allowed; use an integer >= 1"),
        ("squeezenet1_1", {"num_classes": 2.5}, r"num_classes=2.5 is not allowed; use an integer"),
        ("mobilenet_v2", {"variant": "imagenet64"}, r"'imagenet64'; allowed: imagenet, cifar"),
        ("mobilenet_v2", {"depth_mult": 1.0}, r"unknown hyperparameter depth_mult; allowed: "),
        ("squeezenet1_0", {"groups": 2}, r"unknown hyperparameter groups; allowed: bypass"),
    ],
)
def test_bad_arguments_say_what_is_allowed(name, kwargs, pattern):
    with pytest.raises(InvalidArgumentError, match=pattern):
        lightnets.create_model(name, **kwargs)


@pytest.mark.parametrize(
    "name", [n for n in MODELS if "width_mult" in lightnets.get_model_entry(n).hparams]
)
def test_non_positive_width_is_refused_everywhere(name):
    for width in (0, -0.5):
        with pytest.raises(ValueError, match="width_mult"):
            lightnets.create_model(name, width_mult=width)


@pytest.mark.parametrize("name", MODELS)
def test_every_constructor_takes_num_classes_variant_and_hparams(name):
    entry = lightnets.get_model_entry(name)
    with torch.device("meta"):
        model = entry.builder(7, "cifar", **entry.defaults)
        logits = model(torch.empty(2, *model.default_input_size))
    assert model.default_input_size == (3, 32, 32) and logits.shape == (2, 7)
    with pytest.raises(InvalidArgumentError, match="unknown variant 'cifar10'"):
        entry.builder(7, "cifar10", **entry.defaults)


def test_registry_imports_no_family():
    # Families register themselves when lightnets.models imports them; the registry stays
    # below them (torchvision's and timm's one-way imports).
    source = Path(lightnets.models.registry.__file__).read_text()
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {m for m in imported if m and m.split(".")[-1] in FAMILIES | {"squeezenet"}}
    assert "lightnets.models.base" in imported
