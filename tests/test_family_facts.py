"""A family's facts live on its registry entry, beside its builder (docs/models.md, "Adding a
family"): a family registered here, in this file alone, is compared, profiled against its
paper's figures, loaded and converted through the weight layouts it declares, fine-tuned by its
own classifier and drawn in its own style, with no edit anywhere else. The zoo's own facts are
pinned to the values they had before they moved onto the entries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightnets.analysis.compare import ModelSpec, compare, default_specs
from lightnets.analysis.plots import plot_comparison
from lightnets.analysis.reference import paper_figure, paper_figures
from lightnets.errors import CheckpointError
from lightnets.models import (
    HParam,
    LightweightNet,
    PaperFigure,
    PlotStyle,
    create_model,
    get_model_entry,
    list_models,
    model_entries,
    register_model,
    unregister_model,
)
from lightnets.models.weights import create_pretrained, export_state_dict, save_weights
from lightnets.models.weights.layouts import check_supported, classifier_of, supported
from lightnets.train.finetune import head_parameters

TOY = "toynet"
#: The toy paper's "Table 1": MACs and parameters as it prints them (at width 1.0, 224 px).
TOY_FIGURE = PaperFigure.of(TOY, 5.4e6, 17_464, 42.0, "Toy et al., Table 1", width_mult=1.0)
TOY_STYLE = PlotStyle("toynet", "tab:olive", "P", "#5c5c0a")


class ToyNet(LightweightNet):
    """One 3x3/2 convolution (3 -> 16 x width channels), BatchNorm, ReLU, global average pool,
    and a linear classifier ``head``."""

    def __init__(self, num_classes: int, variant: str, width_mult: float) -> None:
        super().__init__(num_classes, variant)
        self.num_features = round(16 * width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(3, self.num_features, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(self.num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def _reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)


def toy_costs(width_mult: float, size: int = 224, classes: int = 1000) -> tuple[int, int]:
    """(params, MACs) in closed form (DESIGN.md): conv k*k*c_in*c_out*H*W, FC c_in*c_out;
    parameters: conv weights, BatchNorm's two per channel, FC weights and bias."""
    channels, out = round(16 * width_mult), (size + 1) // 2
    params = 9 * 3 * channels + 2 * channels + channels * classes + classes
    return params, 9 * 3 * channels * out * out + channels * classes


@pytest.fixture
def toy_family():
    """Registers the toy family for one test and removes it after (the registry as before)."""
    before = [entry.name for entry in model_entries()]
    register_model(
        TOY,
        paper="Toy et al., a network for tests",
        hparams={"width_mult": HParam(1.0, float, "width", minimum=0.0, exclusive_minimum=True)},
        classifier="head",
        layouts={"torchvision": {}},
        paper_figures=(TOY_FIGURE,),
        plot_style=TOY_STYLE,
        compare_configs=({}, {"width_mult": 0.5}),
    )(ToyNet)
    yield TOY
    unregister_model(TOY)
    assert [entry.name for entry in model_entries()] == before


def test_the_toy_family_is_compared_beside_its_paper(toy_family):
    assert default_specs()[-2:] == (ModelSpec(TOY), ModelSpec(TOY, (("width_mult", 0.5),)))
    rows = compare(default_specs()[-2:], latency=False).rows
    assert [row.label for row in rows] == ["toynet 1x", "toynet 0.5x"]
    assert [(row.params, row.macs) for row in rows] == [toy_costs(1.0), toy_costs(0.5)]
    assert rows[0].paper == TOY_FIGURE and rows[1].paper is None
    assert rows[0].to_dict()["paper"]["hparams"] == {"width_mult": 1.0}
    assert paper_figures(TOY) == (TOY_FIGURE,)
    assert paper_figure(TOY, {"width_mult": 1.0}, 160) is None


def test_the_toy_family_loads_and_converts_through_its_declared_layouts(toy_family, tmp_path):
    assert classifier_of(TOY) == "head"
    assert supported("torchvision")[TOY] == {} and TOY in supported("lightnets")
    model = create_model(TOY).eval()
    check_supported(model, "torchvision")
    with pytest.raises(CheckpointError, match="timm has no toynet"):
        check_supported(model, "timm")
    assert export_state_dict(model, "torchvision").keys() == model.state_dict().keys()
    save_weights(model, tmp_path / "toy.safetensors")
    tuned = create_pretrained(TOY, tmp_path / "toy.safetensors", num_classes=5)
    assert torch.equal(tuned.stem[0].weight, model.stem[0].weight)
    assert tuned.head.out_features == 5  # the declared classifier started afresh
    assert [p.shape for p in head_parameters(tuned)] == [(5, 16), (5,)]


def test_the_toy_family_is_drawn_in_its_style(toy_family):
    from matplotlib.colors import to_rgba

    comparison = compare([ModelSpec(TOY), ModelSpec("mobilenet_v1")], latency=False)
    accuracy = plot_comparison(comparison).axes[1]
    colours = {
        c.get_label(): tuple(c.get_facecolor()[0])
        for c in accuracy.collections
        if c.get_label() in (TOY, "mobilenet_v1")
    }
    assert colours == {"mobilenet_v1": to_rgba("tab:blue"), TOY: to_rgba(TOY_STYLE.colour)}
    assert [t.get_text() for t in accuracy.texts] == ["toynet 1x", "mobilenet_v1 1x"]


def test_a_fact_naming_an_unknown_hyperparameter_fails_at_registration():
    with pytest.raises(RuntimeError, match="unknown hyperparameters: depth"):
        register_model("badnet", paper="-", classifier="fc", compare_configs=({"depth": 2},))(
            ToyNet
        )
    width = {"width_mult": HParam(1.0, float, "width")}
    with pytest.raises(RuntimeError, match="declares a paper figure of toynet"):
        register_model(
            "badnet", paper="-", hparams=width, classifier="fc", paper_figures=(TOY_FIGURE,)
        )(ToyNet)
    assert "badnet" not in list_models()


# -- the zoo's facts, as they were before they moved onto the entries -------------------------


def test_the_zoo_compares_the_same_configurations_in_the_same_order():
    assert default_specs() == (
        ModelSpec("squeezenet1_0"),
        ModelSpec("squeezenet1_1"),
        ModelSpec("mobilenet_v1"),
        ModelSpec("mobilenet_v1", (("width_mult", 0.5),)),
        ModelSpec("mobilenet_v1", (("width_mult", 0.25),)),
        ModelSpec("mobilenet_v2"),
        ModelSpec("mobilenet_v2", (("width_mult", 1.4),)),
        ModelSpec("shufflenet_v1"),
        ModelSpec("shufflenet_v1", (("groups", 8),)),
        ModelSpec("shufflenet_v2", (("width_mult", 0.5),)),
        ModelSpec("shufflenet_v2"),
        ModelSpec("shufflenet_v2", (("width_mult", 2.0),)),
    )


def test_the_zoo_declares_its_classifiers_and_layouts():
    zoo = ["mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2"]
    zoo += ["squeezenet1_0", "squeezenet1_1"]
    assert {name: classifier_of(name) for name in zoo} == {
        "mobilenet_v1": "classifier.1",
        "mobilenet_v2": "classifier.1",
        "shufflenet_v1": "fc",
        "shufflenet_v2": "fc",
        "squeezenet1_0": "classifier.1",
        "squeezenet1_1": "classifier.1",
    }
    plain = {"bypass": "none", "batch_norm": False}
    assert supported("torchvision") == {
        "squeezenet1_0": plain,
        "squeezenet1_1": plain,
        "mobilenet_v2": {},
        "shufflenet_v2": {},
    }
    assert supported("timm") == {"mobilenet_v1": {}, "mobilenet_v2": {}}
    assert set(supported("lightnets")) == set(zoo)
    # Both SqueezeNets share one legend entry; every family its own colour and marker.
    styles = {get_model_entry(name).plot_style for name in zoo}
    assert len(styles) == 5 and len({(s.colour, s.marker) for s in styles}) == 5


def test_the_zoo_declares_every_paper_figure():
    counts = {name: len(paper_figures(name)) for name in list_models()}
    assert counts == {
        "mobilenet_v1": 7,
        "mobilenet_v2": 2,
        "shufflenet_v1": 8,
        "shufflenet_v2": 4,
        "squeezenet1_0": 1,
        "squeezenet1_1": 1,
    }
    assert paper_figure("squeezenet1_0", {"batch_norm": True}) is None
    assert paper_figure("shufflenet_v1", {"groups": 8}).macs == 137_000_000
