"""SqueezeNet v1.0 / v1.1: counts, torchvision's layer structure, bypass, BatchNorm, CIFAR stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from conftest import n_params
from lightnets.models.squeezenet import Fire

# torchvision's SqueezeNet, transcribed from torchvision/models/squeezenet.py: the layers of
# ``features`` (index -> Conv2d(in, out, k) or Fire(in, squeeze, e1x1, e3x3)); ReLU and max-pool
# layers have no tensors. Fire inputs 96/128/... are the previous outputs.
TORCHVISION_FEATURES = {
    "1_0": {0: ("conv", 3, 96, 7), 3: (96, 16, 64, 64), 4: (128, 16, 64, 64),
            5: (128, 32, 128, 128), 7: (256, 32, 128, 128), 8: (256, 48, 192, 192),
            9: (384, 48, 192, 192), 10: (384, 64, 256, 256), 12: (512, 64, 256, 256)},
    "1_1": {0: ("conv", 3, 64, 3), 3: (64, 16, 64, 64), 4: (128, 16, 64, 64),
            6: (128, 32, 128, 128), 7: (256, 32, 128, 128), 9: (256, 48, 192, 192),
            10: (384, 48, 192, 192), 11: (384, 64, 256, 256), 12: (512, 64, 256, 256)},
}  # fmt: skip


def torchvision_state_shapes(version: str, num_classes: int = 1000) -> list[tuple[str, tuple]]:
    shapes: list[tuple[str, tuple]] = []
    for index, layer in TORCHVISION_FEATURES[version].items():
        if layer[0] == "conv":
            _, cin, cout, k = layer
            shapes += [(f"features.{index}.weight", (cout, cin, k, k)),
                       (f"features.{index}.bias", (cout,))]  # fmt: skip
            continue
        cin, s, e1, e3 = layer
        p = f"features.{index}"
        shapes += [
            (f"{p}.squeeze.weight", (s, cin, 1, 1)), (f"{p}.squeeze.bias", (s,)),
            (f"{p}.expand1x1.weight", (e1, s, 1, 1)), (f"{p}.expand1x1.bias", (e1,)),
            (f"{p}.expand3x3.weight", (e3, s, 3, 3)), (f"{p}.expand3x3.bias", (e3,)),
        ]  # fmt: skip
    shapes += [("classifier.1.weight", (num_classes, 512, 1, 1)),
               ("classifier.1.bias", (num_classes,))]  # fmt: skip
    return shapes


@pytest.mark.parametrize(
    ("name", "version", "params", "paper_macs"),
    [("squeezenet1_0", "1_0", 1_248_424, 819e6), ("squeezenet1_1", "1_1", 1_235_496, 349e6)],
)
def test_counts_and_torchvision_state_dict(name, version, params, paper_macs, count_macs):
    model = lightnets.create_model(name)
    assert n_params(model) == params
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == torchvision_state_shapes(version)
    assert count_macs(name, 224) == pytest.approx(paper_macs, rel=0.02)
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.ceil_mode and p.kernel_size == 3 for p in pools)
    assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 13, 13)


def test_initialisation_matches_torchvision_but_centres_each_class():
    model = lightnets.create_model("squeezenet1_0", num_classes=1000)
    final = model.classifier[1]
    assert final.weight.std().item() == pytest.approx(0.01, rel=0.05)
    stem = model.features[0]
    # kaiming_uniform_ with a=0: U(-b, b), b = sqrt(6 / fan_in).
    bound = (6 / (3 * 7 * 7)) ** 0.5
    assert stem.weight.abs().max().item() <= bound
    assert stem.weight.abs().max().item() > 0.9 * bound
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, nn.Conv2d))
    # Each class's conv10 weights sum to zero (see the next test for why).
    sums = final.weight.sum(dim=(1, 2, 3))
    assert sums.abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_every_class_starts_alive_on_real_images(name):
    """conv10's class scores pass a ReLU: a class scoring <= 0 at every location of every image
    gets no gradient and never learns. With torchvision's N(0, 0.01) weights alone, on these
    images, 3 of 10 classes of squeezenet1_0 (seed 1) and 1 of squeezenet1_1 (each of seeds 0,
    1, 2) started that way, and squeezenet1_0's seed-1 run ended at 23% with 7 classes
    unlearned; centred weights start every class with a positive score on some image."""
    from conftest import FASHION
    from lightnets.deploy.quantization import calibration_data

    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed in /usr/share/datasets/fashion-mnist")
    _, evals, _ = calibration_data(
        "fashion-mnist", input_size=(3, 32, 32), calibration_images=1, eval_images=256, val_size=0
    )
    images = torch.cat([x for x, _ in evals])
    for seed in range(3):
        torch.manual_seed(seed)
        model = lightnets.create_model(name, variant="cifar", num_classes=10).eval()
        with torch.no_grad():
            scores = model.classifier[1](model.forward_features(images))  # before the ReLU
        alive = (scores > 0).flatten(2).any(2).any(0)  # per class: any image, any location
        assert alive.all(), (seed, alive.tolist())


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_bypass_placement(name):
    simple = lightnets.create_model(name, bypass="simple")
    complex_ = lightnets.create_model(name, bypass="complex")
    fires = [m for m in simple.features if isinstance(m, Fire)]
    cfires = [m for m in complex_.features if isinstance(m, Fire)]
    assert len(fires) == len(cfires) == 8
    # Section 6: fire2 ... fire9; simple bypass around fire3/5/7/9, 1x1 conv around 2/4/6/8.
    for number, fire, cfire in zip(range(2, 10), fires, cfires, strict=True):
        if number % 2:
            assert isinstance(fire.bypass, nn.Identity)
            assert isinstance(cfire.bypass, nn.Identity)
        else:
            assert fire.bypass is None
            assert isinstance(cfire.bypass, nn.Conv2d)
            assert cfire.bypass.kernel_size == (1, 1)
            assert cfire.bypass.in_channels == cfire.in_channels
            assert cfire.bypass.out_channels == cfire.out_channels
    base = n_params(lightnets.create_model(name))
    assert n_params(simple) == base
    widths = [(96 if name == "squeezenet1_0" else 64, 128), (128, 256), (256, 384), (384, 512)]
    assert n_params(complex_) == base + sum(i * o + o for i, o in widths)


def test_bypass_adds_the_input():
    torch.manual_seed(0)
    plain = Fire(128, 16, 64, 64)
    simple = Fire(128, 16, 64, 64, bypass="simple")
    simple.load_state_dict(plain.state_dict())
    x = torch.randn(2, 128, 9, 9)
    torch.testing.assert_close(simple(x), plain(x) + x)
    complex_ = Fire(96, 16, 64, 64, bypass="complex")
    y = torch.randn(2, 96, 9, 9)
    s = torch.relu(complex_.squeeze(y))
    expected = torch.cat([torch.relu(complex_.expand1x1(s)), torch.relu(complex_.expand3x3(s))], 1)
    torch.testing.assert_close(complex_(y), expected + complex_.bypass(y))


def test_batch_norm_after_every_trunk_convolution():
    model = lightnets.create_model("squeezenet1_1", batch_norm=True, bypass="complex")
    modules = list(model.features.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 8 * 3 + 4
    for conv in convs:
        assert conv.bias is None
        following = modules[modules.index(conv) + 1]
        assert isinstance(following, nn.BatchNorm2d)
        assert following.num_features == conv.out_channels
    assert model.classifier[1].bias is not None  # the class-score convolution keeps its bias
    model.train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


@pytest.mark.parametrize(("name", "stem_channels"), [("squeezenet1_0", 96), ("squeezenet1_1", 64)])
def test_cifar_variant_stem(name, stem_channels):
    model = lightnets.create_model(name, variant="cifar", num_classes=100)
    stem = model.features[0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((3, 3), (1, 1), (1, 1))
    assert stem.out_channels == stem_channels
    assert isinstance(model.features[2], nn.Identity)  # no max-pool after the stem
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 2
    x = torch.randn(1, 3, 32, 32)
    assert model.features[:2](x).shape[-2:] == (32, 32)
    assert model.forward_features(x).shape == (1, 512, 8, 8)
    assert model.default_input_size == (3, 32, 32)
    # Fire weights keep the ImageNet network's keys, so they transfer.
    imagenet = lightnets.create_model(name, num_classes=100).state_dict()
    cifar = model.state_dict()
    assert list(cifar) == list(imagenet)
    changed = [k for k in cifar if cifar[k].shape != imagenet[k].shape]
    assert changed == (["features.0.weight"] if stem_channels == 96 else [])  # v1.1: 3x3 already


def test_dropout_rate():
    assert lightnets.create_model("squeezenet1_1").classifier[0].p == 0.5
    assert lightnets.create_model("squeezenet1_1", drop_rate=0.1).classifier[0].p == 0.1
    with pytest.raises(
        ValueError, match=r"drop_rate=.* is not allowed; use a number >= 0.0 and < 1.0"
    ):
        lightnets.create_model("squeezenet1_1", drop_rate=1.0)
    with pytest.raises(ValueError, match="bypass='full' is not supported; allowed: none"):
        lightnets.create_model("squeezenet1_1", bypass="full")
