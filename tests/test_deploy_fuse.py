"""BatchNorm folding: same function, no BatchNorm left, original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from lightnets.deploy import count_batchnorm, fuse


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms (fresh ones are identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


CASES = [
    (name, variant, {}) for name in lightnets.list_models() for variant in ("imagenet", "cifar")
]
CASES += [
    ("squeezenet1_1", "cifar", {"batch_norm": True}),
    ("shufflenet_v1", "cifar", {"groups": 8}),
]


@pytest.mark.parametrize(("name", "variant", "hparams"), CASES)
def test_fuse_is_exact_for_every_zoo_model(name, variant, hparams):
    torch.manual_seed(0)
    model = randomize_batchnorm(lightnets.create_model(name, variant=variant, **hparams))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse(model)
    size = 96 if variant == "imagenet" else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = model(x), fused(x)
    scale = expected.abs().max().item()
    assert scale > 1e-3  # the comparison is not between two near-zero tensors
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, scale)
    assert count_batchnorm(fused) == 0
    assert not fused.training
    bn = count_batchnorm(model)
    assert len(list(fused.modules())) == len(list(model.modules())) - bn
    # The original keeps its BatchNorm layers and weights.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    expected_bn = 0 if name.startswith("squeezenet") and not hparams.get("batch_norm") else 1
    assert (bn > 0) == bool(expected_bn)


def test_fused_conv_has_the_folded_weights():
    conv, bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
    model = randomize_batchnorm(nn.Sequential(conv, bn, nn.ReLU()))
    fused = fuse(model)
    assert isinstance(fused[0], nn.Conv2d) and isinstance(fused[1], nn.ReLU) and len(fused) == 2
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(fused[0].weight, conv.weight * scale.view(-1, 1, 1, 1))
    torch.testing.assert_close(fused[0].bias, bn.bias - bn.running_mean * scale)


def test_batchnorm_not_after_a_conv_is_kept():
    model = randomize_batchnorm(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1)))
    fused = fuse(model)
    assert count_batchnorm(fused) == 1
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(fused(x), model(x))
