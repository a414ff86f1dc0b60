"""The profiler on the zoo: the papers' figures, PyTorch's own counter, the closed forms."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import lightnets
from lightnets.analysis import formulas, profile
from lightnets.analysis.reference import MOBILENET_V1_TABLE2, paper_figure

MODELS = lightnets.list_models()
VARIANTS = ("imagenet", "cifar")


@pytest.fixture(scope="module")
def zoo_profiles():
    """Every zoo model (default hyperparameters) in both variants, profiled once."""
    out = {}
    for name in MODELS:
        for variant in VARIANTS:
            model = lightnets.create_model(name, variant=variant)
            out[name, variant] = (model, profile(model, model.default_input_size))
    return out


def test_mobilenet_v1_reproduces_table_2():
    """MobileNets, Table 2 (1.0 MobileNet-224). The paper prints 1.19% for the 3x3
    convolution's MACs; its four shares then sum to 99.29%. The network gives 1.91%."""
    shares = {s.type: s for s in profile(lightnets.create_model("mobilenet_v1")).by_type()}
    expected = {**MOBILENET_V1_TABLE2, "conv3x3": (1.91, 0.02)}
    for layer_type, (macs_percent, params_percent) in expected.items():
        assert shares[layer_type].macs_percent == pytest.approx(macs_percent, abs=0.1)
        assert shares[layer_type].params_percent == pytest.approx(params_percent, abs=0.1)
    assert shares["conv3x3"].macs_percent == pytest.approx(1.91, abs=0.005)
    assert shares["gconv1x1"].layers == shares["other"].layers == 0
    assert sum(s.macs_percent for s in shares.values()) == pytest.approx(100)


# (name, hparams, resolution, the paper's MACs in millions)
PAPER_MACS = [
    ("mobilenet_v1", {"width_mult": 1.0}, 224, 569),
    ("mobilenet_v1", {"width_mult": 0.75}, 224, 325),
    ("mobilenet_v1", {"width_mult": 0.5}, 224, 149),
    ("mobilenet_v1", {"width_mult": 0.25}, 224, 41),
    ("mobilenet_v1", {"width_mult": 1.0}, 192, 418),
    ("mobilenet_v1", {"width_mult": 1.0}, 160, 290),
    ("mobilenet_v1", {"width_mult": 1.0}, 128, 186),
    ("mobilenet_v2", {"width_mult": 1.0}, 224, 300),
    ("shufflenet_v2", {"width_mult": 0.5}, 224, 41),
    ("shufflenet_v2", {"width_mult": 1.0}, 224, 146),
    ("shufflenet_v2", {"width_mult": 1.5}, 224, 299),
    ("shufflenet_v2", {"width_mult": 2.0}, 224, 591),
    ("shufflenet_v1", {"groups": 1}, 224, 143),
    ("shufflenet_v1", {"groups": 2}, 224, 140),
    ("shufflenet_v1", {"groups": 3}, 224, 137),
    ("shufflenet_v1", {"groups": 4}, 224, 133),
    ("shufflenet_v1", {"groups": 8}, 224, 137),
    # SqueezeNet's paper prints no MACs; these are the reference implementations' count.
    ("squeezenet1_0", {}, 224, 819),
    ("squeezenet1_1", {}, 224, 349),
]


@pytest.mark.parametrize(("name", "hparams", "size", "paper_macs"), PAPER_MACS)
def test_macs_within_two_percent_of_the_papers(name, hparams, size, paper_macs):
    # Counting needs shapes only: on the meta device nothing is computed.
    with torch.device("meta"):
        model = lightnets.create_model(name, **hparams)
    macs = profile(model, (3, size, size)).macs
    assert macs == pytest.approx(paper_macs * 1e6, rel=0.02)
    # The reference table says the same thing as the papers (and is what the CLI prints).
    assert paper_figure(name, hparams, size).macs == paper_macs * 1e6


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_macs_equal_flop_counter_mode_exactly(zoo_profiles, name, variant):
    """PyTorch's own counter (FlopCounterMode) as an independent oracle, on the meta device."""
    _, prof = zoo_profiles[name, variant]
    with torch.device("meta"):
        model = lightnets.create_model(name, variant=variant).eval()
        x = torch.empty(1, *model.default_input_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert prof.macs == counter.get_total_flops() // 2
    assert counter.get_total_flops() % 2 == 0
    assert not prof.unknown_ops


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_formulas_agree_with_every_conv_and_linear_row(zoo_profiles, name, variant):
    model, prof = zoo_profiles[name, variant]
    modules = dict(model.named_modules())
    checked = 0
    for row in prof.rows:
        if row.kind == "linear":
            layer = modules[row.module]
            assert row.macs == formulas.linear_macs(layer.in_features, layer.out_features)
            assert row.params == formulas.linear_params(
                layer.in_features, layer.out_features, bias=layer.bias is not None
            )
            checked += 1
        elif row.kind in ("conv", "pointwise_conv", "depthwise_conv", "group_conv"):
            conv = modules[row.module]
            assert isinstance(conv, torch.nn.Conv2d)
            out_h = formulas.conv2d_output_size(
                row.input_shape[2], conv.kernel_size[0], conv.stride[0], conv.padding[0]
            )
            out_w = formulas.conv2d_output_size(
                row.input_shape[3], conv.kernel_size[1], conv.stride[1], conv.padding[1]
            )
            assert row.output_shape[2:] == (out_h, out_w)
            assert row.macs == formulas.conv2d_macs(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                (out_h, out_w),
                groups=conv.groups,
            )
            assert row.params == formulas.conv2d_params(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                groups=conv.groups,
                bias=conv.bias is not None,
            )
            assert row.groups == conv.groups and row.kernel == conv.kernel_size
            checked += 1
    n_layers = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in model.modules())
    assert checked == n_layers


def test_meta_device_profiles_count_the_same(zoo_profiles):
    for name in MODELS:
        with torch.device("meta"):
            meta_model = lightnets.create_model(name)
        meta = profile(meta_model)
        _, real = zoo_profiles[name, "imagenet"]
        assert meta.device == "meta" and real.device == "cpu"
        assert [(r.module, r.kind, r.macs, r.params, r.memory_access) for r in meta.rows] == [
            (r.module, r.kind, r.macs, r.params, r.memory_access) for r in real.rows
        ]
        assert meta.peak_activation_bytes == real.peak_activation_bytes


def test_every_parameter_of_every_zoo_model_is_attributed_once(zoo_profiles):
    for (name, variant), (model, prof) in zoo_profiles.items():
        assert prof.params == sum(p.numel() for p in model.parameters()), (name, variant)
        assert sum(r.params for r in prof.rows) == prof.params, (name, variant)


def test_channel_shuffle_is_found_in_both_shufflenets(zoo_profiles):
    for name in ("shufflenet_v1", "shufflenet_v2"):
        _, prof = zoo_profiles[name, "imagenet"]
        shuffles = [r for r in prof.rows if r.kind == "channel_shuffle"]
        assert shuffles, name
        assert all(r.memory_access == 2 * r.output_bytes for r in shuffles)


def test_paper_figures_only_for_the_papers_configuration():
    assert paper_figure("mobilenet_v1", {"width_mult": 0.5}).top1 == 63.7
    assert paper_figure("mobilenet_v1", {"width_mult": 0.5}, 160) is None
    assert paper_figure("mobilenet_v2", {}, variant="cifar") is None
    assert paper_figure("shufflenet_v2", {}, num_classes=10) is None
    assert paper_figure("shufflenet_v1", {}).top1 == 67.4  # default g=3, 1x
    assert paper_figure("squeezenet1_0", {"bypass": "simple"}) is None


def test_the_dispatch_table_covers_every_aten_op_the_zoo_emits(zoo_profiles):
    """Every operation of every zoo model has a registered handler (or is a view), and every
    row's kind is an :class:`OpKind` whose JSON form is the plain name."""
    import json

    from lightnets.analysis.counter import HANDLERS
    from lightnets.analysis.kinds import OpKind

    emitted = set()
    for (name, variant), (_, prof) in zoo_profiles.items():
        for row in prof.rows:
            assert isinstance(row.kind, OpKind), (name, variant, row.op)
            assert row.kind is not OpKind.UNKNOWN, (name, variant, row.op)
            if row.kind is not OpKind.VIEW:
                emitted.add(row.op.split(".")[1].removesuffix("_"))
    assert emitted <= set(HANDLERS), emitted - set(HANDLERS)
    assert {"convolution", "addmm", "relu", "cat", "clone"} <= emitted
    row = zoo_profiles["shufflenet_v2", "imagenet"][1].rows[0]
    assert json.loads(json.dumps(row.to_dict()))["kind"] == str(row.kind) == row.kind.value
