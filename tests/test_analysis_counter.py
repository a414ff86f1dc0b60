"""The profiler on small hand-built modules: kinds, counts, bytes, and leaving the model alone."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torch.utils.flop_counter import FlopCounterMode

import lightnets
from lightnets.analysis import formulas, profile
from lightnets.errors import InvalidArgumentError
from lightnets.models.layers import ChannelShuffle, ConvBNAct


class Toy(nn.Module):
    """One of every operation kind the zoo uses."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, stride=2)
        self.dw = ConvBNAct(16, 16, 3, groups=16, activation=nn.ReLU6)
        self.gconv = ConvBNAct(16, 32, 1, groups=4, activation=None)
        self.shuffle = ChannelShuffle(4)
        self.pw = nn.Conv2d(32, 32, 1, bias=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.avg = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.dw(x)
        x = self.shuffle(self.gconv(x))
        a, b = x.chunk(2, dim=1)
        x = self.pw(torch.cat([b, a], 1))
        x = self.avg(self.pool(x))
        x = self.drop(torch.flatten(self.gap(x), 1))
        return self.fc(x)


def kinds(prof) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in prof.rows:
        out.setdefault(row.module, []).append(row.kind)
    return out


def test_every_kind_is_classified_and_attributed_to_its_module():
    prof = profile(Toy(), (3, 32, 32))
    by_module = kinds(prof)
    assert "conv" in by_module["stem.0"]
    assert "batchnorm" in by_module["stem.1"]
    assert by_module["stem.2"] == ["activation"]
    assert "depthwise_conv" in by_module["dw.0"]
    assert by_module["dw.2"] == ["activation"]  # ReLU6 is hardtanh
    assert "group_conv" in by_module["gconv.0"]
    assert "channel_shuffle" in by_module["shuffle"]
    assert set(by_module["shuffle"]) == {"view", "channel_shuffle"}
    assert "pointwise_conv" in by_module["pw"]
    assert by_module["pool"] == ["maxpool"]
    assert by_module["avg"] == ["avgpool"]
    assert by_module["gap"] == ["global_pool"]
    assert "linear" in by_module["fc"]
    root = by_module[""]
    assert "add" in root and "concat" in root
    assert "drop" not in by_module  # dropout in eval is the identity: no operation runs
    assert not prof.unknown_ops


def test_counts_match_the_closed_forms_and_flop_counter():
    model = Toy()
    prof = profile(model, (3, 32, 32))
    rows = {row.module: row for row in prof.rows if row.macs}
    stem, dw, gconv, pw, fc = (rows[k] for k in ("stem.0", "dw.0", "gconv.0", "pw", "fc"))
    assert stem.macs == formulas.conv2d_macs(3, 16, 3, 16) == 3 * 3 * 3 * 16 * 16 * 16
    assert dw.macs == formulas.conv2d_macs(16, 16, 3, 16, groups=16) == 9 * 16 * 16 * 16
    assert gconv.macs == formulas.conv2d_macs(16, 32, 1, 16, groups=4) == 4 * 32 * 256
    assert pw.macs == 32 * 32 * 256
    assert fc.macs == formulas.linear_macs(32, 10) == 320
    assert dw.params == formulas.conv2d_params(16, 16, 3, groups=16) == 144
    assert pw.params == formulas.conv2d_params(32, 32, 1, bias=True) == 32 * 32 + 32
    assert fc.params == 330 and fc.weight_params == 320
    # Bias adds are element-wise work, not MACs.
    assert pw.elementwise_ops == 32 * 16 * 16 and stem.elementwise_ops == 0
    assert prof.flops == 2 * prof.macs
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert prof.macs * 2 == counter.get_total_flops()
    # Every parameter is attributed to exactly one operation.
    assert sum(row.params for row in prof.rows) == prof.params
    assert prof.params == sum(p.numel() for p in model.parameters())


def test_elementwise_work_is_reported_not_zero():
    prof = profile(Toy(), (3, 32, 32))
    summary = prof.by_kind()
    assert summary["batchnorm"]["elementwise_ops"] == 16 * 256 + 16 * 256 + 32 * 256
    assert summary["add"]["elementwise_ops"] == 16 * 256
    # max pool 3x3 on 32x16x16 -> 32x8x8: 9 reads per output element.
    assert summary["maxpool"]["elementwise_ops"] == 9 * 32 * 8 * 8
    assert summary["global_pool"]["elementwise_ops"] == 32 * 4 * 4
    assert prof.elementwise_ops == sum(v["elementwise_ops"] for v in summary.values())


def test_memory_access_of_a_convolution_is_the_closed_form_in_bytes():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=True)
    (row,) = [r for r in profile(conv, (8, 20, 20)).rows if r.macs]
    expected = (8 * 20 * 20 + (16 * 8 * 9 + 16) + 16 * 10 * 10) * 4
    assert row.memory_access == expected
    assert expected == formulas.conv2d_memory_access_bytes(8, 16, 3, 20, 10, bias=True)
    assert row.output_bytes == 16 * 10 * 10 * 4
    assert row.intensity == pytest.approx(2 * row.macs / expected)
    double = next(r for r in profile(conv.double(), (8, 20, 20)).rows if r.macs)
    assert double.memory_access == 2 * expected


def test_channel_shuffle_moves_every_byte_once_each_way():
    prof = profile(ChannelShuffle(4), (32, 8, 8))
    copies = [r for r in prof.rows if r.kind == "channel_shuffle"]
    assert len(copies) == 1
    assert copies[0].memory_access == 2 * 32 * 8 * 8 * 4
    assert all(r.memory_access == 0 for r in prof.rows if r.kind == "view")
    assert prof.macs == 0


def test_peak_activation_memory_follows_tensor_lifetimes():
    model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU())
    prof = profile(model, (3, 4, 4))
    # input 3x4x4 (192 B) is dead after the conv; conv output (512 B) and ReLU output (512 B)
    # are alive together.
    assert prof.peak_activation_bytes == 1024
    inplace = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU(inplace=True))
    assert profile(inplace, (3, 4, 4)).peak_activation_bytes == 192 + 512


def test_counts_scale_with_batch_size():
    one, four = profile(Toy(), (3, 32, 32)), profile(Toy(), (3, 32, 32), batch_size=4)
    assert four.macs == 4 * one.macs
    assert four.elementwise_ops == 4 * one.elementwise_ops
    assert four.params == one.params
    assert four.input_shape == (4, 3, 32, 32)


def _snapshot(model: nn.Module):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [(name, m.training) for name, m in model.named_modules()],
        "attrs": [(name, sorted(vars(m))) for name, m in model.named_modules()],
        "buffers": [name for name, _ in model.named_buffers()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def _global_hooks():
    return (
        len(module_globals._global_forward_hooks),
        len(module_globals._global_forward_pre_hooks),
        len(module_globals._global_backward_hooks),
    )


def test_profile_leaves_the_model_exactly_as_found():
    model = Toy().train()
    model.dw.eval()  # mixed modes must come back as they were
    before, hooks = _snapshot(model), _global_hooks()
    profile(model, (3, 32, 32))
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["attrs"] == before["attrs"]
    assert after["buffers"] == before["buffers"]
    assert after["hooks"] == before["hooks"]
    assert _global_hooks() == hooks
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key  # BN running stats untouched


def test_profile_works_under_inference_mode_with_identical_rows():
    model = Toy()
    plain = profile(model, (3, 32, 32))
    with torch.inference_mode():
        inside = profile(model, (3, 32, 32))
    assert [(r.module, r.kind, r.macs, r.memory_access) for r in inside.rows] == [
        (r.module, r.kind, r.macs, r.memory_access) for r in plain.rows
    ]
    assert inside.peak_activation_bytes == plain.peak_activation_bytes


class Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cumsum(1)


def test_unknown_operations_are_listed_with_a_warning():
    with pytest.warns(UserWarning, match=r"aten\.cumsum"):
        prof = profile(Cumulative(), (3, 8, 8))
    assert prof.unknown_ops == ["aten.cumsum.default"]
    (row,) = [r for r in prof.rows if r.kind == "unknown"]
    assert row.memory_access == 2 * 3 * 8 * 8 * 4  # still counted as traffic


def test_known_models_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile(Toy(), (3, 32, 32))


@pytest.mark.parametrize("size", [0, (3, 0, 224), (3, -1, 5), (), "224", True])
def test_empty_or_malformed_input_sizes_are_refused(size):
    with pytest.raises(InvalidArgumentError, match="input"):
        profile(Toy(), size)


def test_an_input_too_small_for_a_lightnets_model_names_the_minimum():
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25)
    with pytest.raises(InvalidArgumentError, match=r"16x16 is too small.*>= 32"):
        profile(model, (3, 16, 16))
    cifar = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar")
    assert profile(cifar, (3, 16, 16)).macs > 0


def test_a_forward_failure_on_any_module_is_explained():
    model = nn.Sequential(nn.Conv2d(3, 4, 5), nn.MaxPool2d(3))
    with pytest.raises(InvalidArgumentError, match=r"cannot run on input 1x3x4x4"):
        profile(model, (3, 4, 4))
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        profile(model, (3, 32, 32), batch_size=0)
