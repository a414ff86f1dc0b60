"""ShuffleNet V1 and V2 against the papers' tables and the reference implementations."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import meta_model, n_params
from lightnets import create_model
from lightnets.errors import InvalidArgumentError
from lightnets.models.layers import ChannelShuffle, make_divisible
from lightnets.models.shufflenet_v1 import ShuffleUnit
from lightnets.models.shufflenet_v2 import InvertedResidual

V1_GROUPS = (1, 2, 3, 4, 8)
V1_WIDTHS = (0.25, 0.5, 1.0, 1.5, 2.0)
# ShuffleNet V1, Table 1: stage 2, 3, 4 widths at 1x.
V1_TABLE1 = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}


def macs_at_224(model: nn.Module) -> float:
    """Multiply-accumulates of one 224x224 image: FlopCounterMode counts 2 FLOPs per MAC.

    Counted on the meta device: the counter reads shapes only, and skipping the arithmetic
    keeps the test fast (same totals as on the CPU).
    """
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return counter.get_total_flops() / 2


def units(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


# ---------------------------------------------------------------------------------------------
# ShuffleNet V1


@pytest.mark.parametrize(
    ("groups", "width_mult", "paper_params"),
    [(3, 0.5, 0.7e6), (3, 1.0, 1.9e6), (3, 1.5, 3.4e6), (3, 2.0, 5.4e6), (8, 1.0, 2.4e6)],
)
def test_v1_params_within_5_percent_of_paper(groups, width_mult, paper_params) -> None:
    model = meta_model("shufflenet_v1", groups=groups, width_mult=width_mult)
    assert abs(n_params(model) / paper_params - 1) < 0.05


@pytest.mark.parametrize("groups", V1_GROUPS)
def test_v1_table1_widths(groups) -> None:
    model = create_model("shufflenet_v1", groups=groups)
    stem = model.conv1[0]
    assert (stem.out_channels, stem.kernel_size, stem.stride) == (24, (3, 3), (2, 2))
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert (model.maxpool.kernel_size, model.maxpool.stride) == (3, 2)
    stages = (model.stage2, model.stage3, model.stage4)
    assert [len(s) for s in stages] == [4, 8, 4]
    for stage, width in zip(stages, V1_TABLE1[groups], strict=True):
        for unit in stage:
            # Section 3.2: bottleneck = output / 4; every stage-1x width is a multiple of g.
            assert unit.conv1[0].out_channels == width // 4
        out = stage(torch.zeros(1, stage[0].conv1[0].in_channels, 8, 8))
        assert out.shape[1] == width
    assert model.num_features == V1_TABLE1[groups][-1]
    assert model.fc.in_features == V1_TABLE1[groups][-1]


def test_v1_g1_stage4_is_576_wide() -> None:
    # A commonly copied implementation prints 567.
    model = create_model("shufflenet_v1", groups=1)
    assert model.stage4[-1].conv2[0].out_channels == 576
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 576, 2, 2)


@pytest.mark.parametrize("groups", V1_GROUPS)
def test_v1_first_pointwise_of_stage2_is_ungrouped(groups) -> None:
    model = create_model("shufflenet_v1", groups=groups, width_mult=0.5)
    first = model.stage2[0].conv1[0]
    assert first.groups == 1
    # Really dense: each output channel sees all the stem's channels.
    assert first.weight.shape == (first.out_channels, model.conv1[0].out_channels, 1, 1)
    for unit in [*model.stage2[1:], *model.stage3, *model.stage4]:
        assert unit.conv1[0].groups == groups
    for unit in units(model, ShuffleUnit):
        assert unit.conv2[0].groups == groups
        dw = unit.dwconv[0]
        assert dw.groups == dw.in_channels == dw.out_channels


def test_v1_unit_order_conv_shuffle_depthwise_conv() -> None:
    model = create_model("shufflenet_v1", groups=4, width_mult=0.25, variant="cifar")
    unit = model.stage3[1]
    calls: list[str] = []
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
        for name, module in unit.named_children()
    ]
    unit(torch.randn(1, unit.conv1[0].in_channels, 4, 4))
    for handle in handles:
        handle.remove()
    assert calls[:4] == ["conv1", "shuffle", "dwconv", "conv2"]
    assert isinstance(unit.shuffle, ChannelShuffle) and unit.shuffle.groups == 4
    # Section 3.2: ReLU after the first 1x1 only, none after the depthwise or the second 1x1.
    assert isinstance(unit.conv1[-1], nn.ReLU)
    assert not any(isinstance(m, nn.ReLU) for m in (*unit.dwconv, *unit.conv2))


@pytest.mark.parametrize("groups", V1_GROUPS)
def test_v1_stride2_units_concat_avgpooled_shortcut(groups) -> None:
    torch.manual_seed(0)
    model = create_model("shufflenet_v1", groups=groups, width_mult=0.5, variant="cifar").eval()
    for stage in (model.stage2, model.stage3, model.stage4):
        unit = stage[0]
        pool = unit.shortcut
        assert isinstance(pool, nn.AvgPool2d)
        assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
        assert unit.dwconv[0].stride == (2, 2)
        c_in = unit.conv1[0].in_channels
        c_branch = unit.conv2[0].out_channels
        c_out = stage[1].conv1[0].in_channels
        assert c_in + c_branch == c_out
        assert c_branch % groups == 0
        x = torch.randn(2, c_in, 8, 8)  # negative values too: the ReLU follows the concat
        with torch.no_grad():
            out = unit(x)
        assert out.shape == (2, c_out, 4, 4)
        expected_shortcut = torch.relu(nn.functional.avg_pool2d(x, 3, 2, 1))
        torch.testing.assert_close(out[:, :c_in], expected_shortcut)
        # Stride-1 units: ReLU(x + branch(x)).
        unit = stage[1]
        x = torch.randn(2, c_out, 4, 4)
        with torch.no_grad():
            branch = unit.conv2(unit.dwconv(unit.shuffle(unit.conv1(x))))
            torch.testing.assert_close(unit(x), torch.relu(x + branch))
        assert isinstance(unit.shortcut, nn.Identity)


def test_v1_every_combination_builds_and_runs_at_cifar_size() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for groups, width_mult in itertools.product(V1_GROUPS, V1_WIDTHS):
        model = create_model(
            "shufflenet_v1", groups=groups, width_mult=width_mult, num_classes=10, variant="cifar"
        ).eval()
        with torch.no_grad():
            features = model.forward_features(x)
            logits = model.forward_head(features)
        assert features.shape == (2, model.num_features, 4, 4), (groups, width_mult)
        assert logits.shape == (2, 10)
        assert torch.isfinite(logits).all()
        assert model.default_input_size == (3, 32, 32)
        # The one rounding rule: stage widths and bottlenecks are multiples of g.
        scaled = [make_divisible(w * width_mult, groups) for w in V1_TABLE1[groups]]
        assert model.num_features == scaled[-1]
        for unit in units(model, ShuffleUnit):
            mid = unit.conv1[0].out_channels
            assert mid % groups == 0
            assert unit.conv2[0].out_channels % groups == 0


def test_v1_bottleneck_rounding_example() -> None:
    # The example: g=4 at 0.25x, 272 * 0.25 / 4 = 17 bottleneck channels -> 16.
    model = create_model("shufflenet_v1", groups=4, width_mult=0.25)
    assert model.stage2[1].conv1[0].out_channels == 16
    assert model.stage2[1].conv1[0].in_channels == 68


@pytest.mark.parametrize(
    ("groups", "width_mult", "paper_macs"),
    [
        # Table 1 (1x, by g) and Table 2 (g=3 at 0.5x, 1.5x, 2x): "MFLOPs" are MACs.
        (1, 1.0, 143e6),
        (2, 1.0, 140e6),
        (3, 1.0, 137e6),
        (4, 1.0, 133e6),
        (8, 1.0, 137e6),
        (3, 0.5, 38e6),
        (3, 1.5, 292e6),
        (3, 2.0, 524e6),
    ],
)
def test_v1_macs_within_2_percent_of_paper(groups, width_mult, paper_macs) -> None:
    model = meta_model("shufflenet_v1", groups=groups, width_mult=width_mult)
    assert abs(macs_at_224(model) / paper_macs - 1) < 0.02


def test_v1_bad_hyperparameters_raise() -> None:
    with pytest.raises(InvalidArgumentError, match=r"groups=5.*1, 2, 3, 4, 8"):
        create_model("shufflenet_v1", groups=5)
    with pytest.raises(InvalidArgumentError, match=r"width_mult=0\.75.*0\.25, 0\.5, 1\.0"):
        create_model("shufflenet_v1", width_mult=0.75)


# ---------------------------------------------------------------------------------------------
# ShuffleNet V2


class _TorchvisionUnit(nn.Module):
    """torchvision.models.shufflenetv2.InvertedResidual, retyped (torchvision is not importable)."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, bias=False, groups=inp),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, 1, 0, bias=False),
                nn.BatchNorm2d(bf),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, 1, 0, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, bias=False, groups=bf),
            nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, 1, 0, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.size()
        out = out.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous()
        return out.view(b, -1, h, w)


class _TorchvisionShuffleNetV2(nn.Module):
    """torchvision.models.shufflenetv2.ShuffleNetV2, retyped."""

    def __init__(self, out_channels: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, out_channels[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(out_channels[0]),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = out_channels[0]
        for name, repeats, oup in zip(
            ("stage2", "stage3", "stage4"), (4, 8, 4), out_channels[1:4], strict=True
        ):
            seq = [_TorchvisionUnit(inp, oup, 2)]
            seq += [_TorchvisionUnit(oup, oup, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*seq))
            inp = oup
        self.conv5 = nn.Sequential(
            nn.Conv2d(inp, out_channels[-1], 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels[-1]),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


# torchvision's shufflenet_v2_x{0_5,1_0,1_5,2_0}: stages_out_channels and parameter counts.
V2_REFERENCE = {
    0.5: ([24, 48, 96, 192, 1024], 1_366_792),
    1.0: ([24, 116, 232, 464, 1024], 2_278_604),
    1.5: ([24, 176, 352, 704, 1024], 3_503_624),
    2.0: ([24, 244, 488, 976, 2048], 7_393_996),
}


@pytest.mark.parametrize("width_mult", sorted(V2_REFERENCE))
def test_v2_params_exact(width_mult) -> None:
    model = meta_model("shufflenet_v2", width_mult=width_mult)
    assert n_params(model) == V2_REFERENCE[width_mult][1]


@pytest.mark.parametrize("width_mult", sorted(V2_REFERENCE))
def test_v2_state_dict_maps_one_to_one_onto_torchvision(width_mult) -> None:
    ours = meta_model("shufflenet_v2", width_mult=width_mult).state_dict()
    with torch.device("meta"):
        reference = _TorchvisionShuffleNetV2(V2_REFERENCE[width_mult][0]).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [
        (k, tuple(v.shape)) for k, v in reference.items()
    ]


def test_v2_computes_what_torchvision_computes() -> None:
    torch.manual_seed(0)
    reference = _TorchvisionShuffleNetV2(V2_REFERENCE[0.5][0], num_classes=7)
    for module in reference.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.running_mean, -0.5, 0.5)
            nn.init.uniform_(module.running_var, 0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    model = create_model("shufflenet_v2", width_mult=0.5, num_classes=7)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))


@pytest.mark.parametrize(
    ("width_mult", "widths"),
    [(0.5, (48, 96, 192, 1024)), (1.0, (116, 232, 464, 1024)), (2.0, (244, 488, 976, 2048))],
)
def test_v2_table5_widths_and_split(width_mult, widths) -> None:
    model = meta_model("shufflenet_v2", width_mult=width_mult)
    stages = (model.stage2, model.stage3, model.stage4)
    assert [len(s) for s in stages] == [4, 8, 4]
    for stage, width in zip(stages, widths[:3], strict=True):
        down, basic = stage[0], stage[1]
        assert down.stride == 2 and len(down.branch1) == 5
        assert down.branch1[0].groups == down.branch1[0].in_channels  # depthwise, stride 2
        assert down.branch1[0].stride == (2, 2)
        assert down.branch1[2].out_channels + down.branch2[5].out_channels == width
        # Figure 3(c): the basic unit's branch sees half of the channels and keeps the width.
        assert basic.stride == 1 and len(basic.branch1) == 0
        assert basic.branch2[0].in_channels == basic.branch2[5].out_channels == width // 2
    assert model.conv5[0].out_channels == widths[-1] == model.num_features


@pytest.mark.parametrize(
    ("width_mult", "paper_macs"), [(0.5, 41e6), (1.0, 146e6), (1.5, 299e6), (2.0, 591e6)]
)
def test_v2_macs_within_2_percent_of_paper(width_mult, paper_macs) -> None:
    model = meta_model("shufflenet_v2", width_mult=width_mult)
    assert abs(macs_at_224(model) / paper_macs - 1) < 0.02


def test_v2_unsupported_width_raises() -> None:
    with pytest.raises(InvalidArgumentError, match=r"width_mult=0\.7.*0\.5, 1\.0, 1\.5, 2\.0"):
        create_model("shufflenet_v2", width_mult=0.7)
    with pytest.raises(ValueError):
        create_model("shufflenet_v2", width_mult=0.25)


def test_v2_unit_shuffles_the_concatenation() -> None:
    unit = InvertedResidual(8, 8, 1).eval()
    x = torch.randn(1, 8, 3, 3)
    with torch.no_grad():
        out = unit(x)
        branch = unit.branch2(x[:, 4:])
    # Untouched half on even channels, processed half on odd ones.
    torch.testing.assert_close(out[:, 0::2], x[:, :4])
    torch.testing.assert_close(out[:, 1::2], branch)


# ---------------------------------------------------------------------------------------------
# Both families: CIFAR stem, the model API, scripting and export


FAMILIES = [
    ("shufflenet_v1", {"groups": 8, "width_mult": 0.25}),
    ("shufflenet_v2", {"width_mult": 0.5}),
]


@pytest.mark.parametrize(("name", "hparams"), FAMILIES)
def test_cifar_stem_keeps_resolution_with_relu(name, hparams) -> None:
    model = create_model(name, variant="cifar", num_classes=100, **hparams)
    assert [type(m) for m in model.conv1] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert model.conv1[0].stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert not units(model, nn.MaxPool2d)
    stem_out = model.maxpool(model.conv1(torch.randn(1, 3, 32, 32)))
    assert stem_out.shape[-2:] == (32, 32)
    assert (stem_out >= 0).all()
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert model.default_input_size == (3, 32, 32)

    imagenet = create_model(name, **hparams)
    assert imagenet.conv1[0].stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert imagenet.default_input_size == (3, 224, 224)
    assert imagenet.forward_features(torch.randn(1, 3, 64, 64)).shape[-2:] == (2, 2)


@pytest.mark.parametrize(("name", "hparams"), FAMILIES)
def test_model_api(name, hparams) -> None:
    model = create_model(name, variant="cifar", num_classes=100, **hparams)
    rebuilt = create_model(**model.hparams)
    assert type(rebuilt) is type(model)
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert model.hparams["num_classes"] == 5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("name", "hparams"), FAMILIES)
def test_torchscript(name, hparams) -> None:
    model = create_model(name, variant="cifar", num_classes=10, **hparams).eval()
    scripted = torch.jit.script(model)
    # Without the graph optimiser's profiling runs: the scripted code itself is under test.
    with torch.jit.optimized_execution(False), torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, 32, 32)
            torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize(("name", "hparams"), FAMILIES)
def test_export_with_dynamic_batch(name, hparams) -> None:
    model = create_model(name, variant="cifar", num_classes=10, **hparams).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        model, (torch.randn(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}}
    )
    for size in (1, 5):
        x = torch.randn(size, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x))
