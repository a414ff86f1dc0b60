"""Reference weight files load exactly: torchvision and timm state dicts, lightnets files.

No downloads and no torchvision/timm import: the reference state dicts are built here from key
lists and shapes transcribed from the reference code (torchvision ``mobilenetv2.py``,
``shufflenetv2.py``, ``squeezenet.py``; timm ``efficientnet.py`` ``_gen_mobilenet_v1/v2`` with
``_efficientnet_blocks.py``), filled with random values, saved as the real formats, loaded, and
checked tensor by tensor; timm's networks (whose names differ from ours) are also run through a
functional forward pass written from timm's block definitions, as an independent oracle.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import lightnets
from lightnets.models.weights import export_state_dict, identify, read_weights_file

Shapes = list[tuple[str, tuple[int, ...]]]


def divisible(value: float, divisor: int = 8) -> int:
    """TF-slim's ``_make_divisible`` (torchvision ``_make_divisible``, timm ``make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def bn(prefix: str, c: int) -> Shapes:
    return [(f"{prefix}.{k}", (c,)) for k in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())
    ]


# -- torchvision -------------------------------------------------------------------------------

MNV2_ROWS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def torchvision_mobilenet_v2(width: float = 1.0, classes: int = 1000) -> Shapes:
    """torchvision.models.MobileNetV2: features[0] stem, [1..17] InvertedResidual, [18] last."""
    c_in = divisible(32 * width)
    keys = [("features.0.0.weight", (c_in, 3, 3, 3)), *bn("features.0.1", c_in)]
    index = 1
    for t, c, n, _ in MNV2_ROWS:
        out = divisible(c * width)
        for _ in range(n):
            hidden, p, j = round(c_in * t), f"features.{index}.conv", 0
            if t != 1:
                keys += [(f"{p}.0.0.weight", (hidden, c_in, 1, 1)), *bn(f"{p}.0.1", hidden)]
                j = 1
            keys += [(f"{p}.{j}.0.weight", (hidden, 1, 3, 3)), *bn(f"{p}.{j}.1", hidden)]
            keys += [(f"{p}.{j + 1}.weight", (out, hidden, 1, 1)), *bn(f"{p}.{j + 2}", out)]
            c_in, index = out, index + 1
    last = divisible(1280 * max(1.0, width))
    keys += [(f"features.{index}.0.weight", (last, c_in, 1, 1)), *bn(f"features.{index}.1", last)]
    return [*keys, ("classifier.1.weight", (classes, last)), ("classifier.1.bias", (classes,))]


SHUFFLENET_V2_STAGES = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def torchvision_shufflenet_v2(width: float = 1.0, classes: int = 1000) -> Shapes:
    """torchvision.models.ShuffleNetV2 (``shufflenet_v2_x0_5`` ... ``x2_0``)."""
    *stages, last = SHUFFLENET_V2_STAGES[width]
    keys = [("conv1.0.weight", (24, 3, 3, 3)), *bn("conv1.1", 24)]
    c_in = 24
    for s, (out, repeats) in enumerate(zip(stages, (4, 8, 4), strict=True), start=2):
        b = out // 2
        for i in range(repeats):
            p = f"stage{s}.{i}"
            inp = c_in if i == 0 else b
            if i == 0:
                keys += [(f"{p}.branch1.0.weight", (c_in, 1, 3, 3)), *bn(f"{p}.branch1.1", c_in)]
                keys += [(f"{p}.branch1.2.weight", (b, c_in, 1, 1)), *bn(f"{p}.branch1.3", b)]
            keys += [(f"{p}.branch2.0.weight", (b, inp, 1, 1)), *bn(f"{p}.branch2.1", b)]
            keys += [(f"{p}.branch2.3.weight", (b, 1, 3, 3)), *bn(f"{p}.branch2.4", b)]
            keys += [(f"{p}.branch2.5.weight", (b, b, 1, 1)), *bn(f"{p}.branch2.6", b)]
        c_in = out
    keys += [("conv5.0.weight", (last, c_in, 1, 1)), *bn("conv5.1", last)]
    return [*keys, ("fc.weight", (classes, last)), ("fc.bias", (classes,))]


def torchvision_squeezenet(version: str, classes: int = 1000) -> Shapes:
    """torchvision.models.SqueezeNet: Fire modules at their ``features`` indices."""
    stem, kernel, fires = {
        "1_0": (
            96,
            7,
            [
                (3, 16, 64),
                (4, 16, 64),
                (5, 32, 128),
                (7, 32, 128),
                (8, 48, 192),
                (9, 48, 192),
                (10, 64, 256),
                (12, 64, 256),
            ],
        ),
        "1_1": (
            64,
            3,
            [
                (3, 16, 64),
                (4, 16, 64),
                (6, 32, 128),
                (7, 32, 128),
                (9, 48, 192),
                (10, 48, 192),
                (11, 64, 256),
                (12, 64, 256),
            ],
        ),
    }[version]
    keys = [("features.0.weight", (stem, 3, kernel, kernel)), ("features.0.bias", (stem,))]
    c_in = stem
    for index, s, e in fires:
        p = f"features.{index}"
        keys += [(f"{p}.squeeze.weight", (s, c_in, 1, 1)), (f"{p}.squeeze.bias", (s,))]
        keys += [(f"{p}.expand1x1.weight", (e, s, 1, 1)), (f"{p}.expand1x1.bias", (e,))]
        keys += [(f"{p}.expand3x3.weight", (e, s, 3, 3)), (f"{p}.expand3x3.bias", (e,))]
        c_in = 2 * e
    return [*keys, ("classifier.1.weight", (classes, 512, 1, 1)), ("classifier.1.bias", (classes,))]


# -- timm --------------------------------------------------------------------------------------

#: timm ``_gen_mobilenet_v1`` arch_def: dsa_r1_k3_s1_c64, dsa_r2_k3_s2_c128, dsa_r2_k3_s2_c256,
#: dsa_r6_k3_s2_c512, dsa_r2_k3_s2_c1024 (rows: repeats, out channels, first stride).
TIMM_V1 = [(1, 64, 1), (2, 128, 2), (2, 256, 2), (6, 512, 2), (2, 1024, 2)]
#: timm ``_gen_mobilenet_v2``: ds_r1_k3_s1_c16, then ir_r{n}_k3_s{s}_e6_c{c}.
TIMM_V2 = [("ds", 1, 16, 1, 1), *(("ir", n, c, s, t) for t, c, n, s in MNV2_ROWS[1:])]


def timm_mobilenet_v1(width: float = 1.0, classes: int = 1000) -> Shapes:
    c_in = divisible(32 * width)
    keys = [("conv_stem.weight", (c_in, 3, 3, 3)), *bn("bn1", c_in)]
    for stage, (n, c, _) in enumerate(TIMM_V1):
        out = divisible(c * width)
        for i in range(n):
            p = f"blocks.{stage}.{i}"
            keys += [(f"{p}.conv_dw.weight", (c_in, 1, 3, 3)), *bn(f"{p}.bn1", c_in)]
            keys += [(f"{p}.conv_pw.weight", (out, c_in, 1, 1)), *bn(f"{p}.bn2", out)]
            c_in = out
    return [*keys, ("classifier.weight", (classes, c_in)), ("classifier.bias", (classes,))]


def timm_mobilenet_v2(width: float = 1.0, classes: int = 1000) -> Shapes:
    c_in = divisible(32 * width)
    keys = [("conv_stem.weight", (c_in, 3, 3, 3)), *bn("bn1", c_in)]
    for stage, (kind, n, c, _, t) in enumerate(TIMM_V2):
        out = divisible(c * width)
        for i in range(n):
            p = f"blocks.{stage}.{i}"
            if kind == "ds":
                keys += [(f"{p}.conv_dw.weight", (c_in, 1, 3, 3)), *bn(f"{p}.bn1", c_in)]
                keys += [(f"{p}.conv_pw.weight", (out, c_in, 1, 1)), *bn(f"{p}.bn2", out)]
            else:
                mid = divisible(c_in * t)
                keys += [(f"{p}.conv_pw.weight", (mid, c_in, 1, 1)), *bn(f"{p}.bn1", mid)]
                keys += [(f"{p}.conv_dw.weight", (mid, 1, 3, 3)), *bn(f"{p}.bn2", mid)]
                keys += [(f"{p}.conv_pwl.weight", (out, mid, 1, 1)), *bn(f"{p}.bn3", out)]
            c_in = out
    head = max(1280, divisible(1280 * width))
    keys += [("conv_head.weight", (head, c_in, 1, 1)), *bn("bn2", head)]
    return [*keys, ("classifier.weight", (classes, head)), ("classifier.bias", (classes,))]


def _bn(x, sd, p, act=None):
    x = F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        training=False,
        eps=1e-5,
    )
    return act(x) if act is not None else x


def _conv(x, w, stride=1):
    groups = x.shape[1] if w.shape[1] == 1 and w.shape[0] == x.shape[1] else 1
    return F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2, groups=groups)


def timm_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, arch: str) -> torch.Tensor:
    """timm's EfficientNet.forward for mobilenetv1_* / mobilenetv2_* (ReLU6), functionally."""
    x = _bn(_conv(x, sd["conv_stem.weight"], 2), sd, "bn1", F.relu6)
    rows = TIMM_V1 if arch == "v1" else [(n, c, s) for _, n, c, s, _ in TIMM_V2]
    for stage, (n, _, first_stride) in enumerate(rows):
        for i in range(n):
            p, stride, shortcut = f"blocks.{stage}.{i}", first_stride if i == 0 else 1, x
            if f"{p}.conv_pwl.weight" in sd:  # InvertedResidual: pw, dw, pwl (linear)
                x = _bn(_conv(x, sd[f"{p}.conv_pw.weight"]), sd, f"{p}.bn1", F.relu6)
                x = _bn(_conv(x, sd[f"{p}.conv_dw.weight"], stride), sd, f"{p}.bn2", F.relu6)
                x = _bn(_conv(x, sd[f"{p}.conv_pwl.weight"]), sd, f"{p}.bn3")
            else:  # DepthwiseSeparableConv: dw, pw (activated only in "dsa", MobileNet V1)
                x = _bn(_conv(x, sd[f"{p}.conv_dw.weight"], stride), sd, f"{p}.bn1", F.relu6)
                x = _bn(
                    _conv(x, sd[f"{p}.conv_pw.weight"]),
                    sd,
                    f"{p}.bn2",
                    F.relu6 if arch == "v1" else None,
                )
            # timm's has_skip: stride 1, equal widths, and not a "dsa" (noskip) block.
            if arch == "v2" and stride == 1 and shortcut.shape == x.shape:
                x = x + shortcut
    if "conv_head.weight" in sd:
        x = _bn(_conv(x, sd["conv_head.weight"]), sd, "bn2", F.relu6)
    return F.linear(x.mean((2, 3)), sd["classifier.weight"], sd["classifier.bias"])


# -- helpers -----------------------------------------------------------------------------------


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("weight") and len(shape) == 1:  # BatchNorm scale: keep the signal
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) > 1:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    return state


def save(state: dict[str, torch.Tensor], path) -> None:
    if str(path).endswith(".safetensors"):
        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save(state, path)


def assert_loaded(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Tensor by tensor, in order (our layouts keep the reference's order)."""
    ours = list(model.state_dict().items())
    assert len(ours) == len(reference)
    for (key, tensor), (ref_key, ref) in zip(ours, reference.items(), strict=True):
        assert tensor.shape == ref.shape, (key, ref_key)
        assert torch.equal(tensor, ref), (key, ref_key)


CASES = [
    # (layout, model name, hparams, transcribed reference, file suffix)
    ("torchvision", "mobilenet_v2", {}, lambda: torchvision_mobilenet_v2(), ".pth"),
    (
        "torchvision",
        "mobilenet_v2",
        {"width_mult": 0.5},
        lambda: torchvision_mobilenet_v2(0.5),
        ".safetensors",
    ),
    *(
        (
            "torchvision",
            "shufflenet_v2",
            {"width_mult": w},
            lambda w=w: torchvision_shufflenet_v2(w),
            ".pth",
        )
        for w in (0.5, 1.0, 1.5, 2.0)
    ),
    ("torchvision", "squeezenet1_0", {}, lambda: torchvision_squeezenet("1_0"), ".pth"),
    ("torchvision", "squeezenet1_1", {}, lambda: torchvision_squeezenet("1_1"), ".safetensors"),
    ("timm", "mobilenet_v1", {"activation": "relu6"}, lambda: timm_mobilenet_v1(), ".safetensors"),
    (
        "timm",
        "mobilenet_v1",
        {"width_mult": 0.75, "activation": "relu6"},
        lambda: timm_mobilenet_v1(0.75),
        ".pth",
    ),
    ("timm", "mobilenet_v2", {}, lambda: timm_mobilenet_v2(), ".bin"),
    ("timm", "mobilenet_v2", {"width_mult": 0.35}, lambda: timm_mobilenet_v2(0.35), ".safetensors"),
    ("timm", "mobilenet_v2", {"width_mult": 1.4}, lambda: timm_mobilenet_v2(1.4), ".pth"),
]
IDS = [f"{c[0]}-{c[1]}-{c[2].get('width_mult', 1.0)}{c[4]}" for c in CASES]


@pytest.mark.parametrize(("layout", "name", "hparams", "reference", "suffix"), CASES, ids=IDS)
def test_our_layout_equals_the_transcribed_reference(layout, name, hparams, reference, suffix):
    with torch.device("meta"):
        model = lightnets.create_model(name, **hparams)
    ours = [(k, tuple(v.shape)) for k, v in export_state_dict(model, layout).items()]
    assert ours == reference()


@pytest.mark.parametrize(("layout", "name", "hparams", "reference", "suffix"), CASES, ids=IDS)
def test_reference_file_loads_tensor_for_tensor(tmp_path, layout, name, hparams, reference, suffix):
    state = random_state(reference())
    path = tmp_path / f"weights{suffix}"
    save(state, path)
    source = identify(read_weights_file(path).tensors)
    assert (source.layout, source.family) == (layout, name)
    assert source.hparams.get("width_mult", 1.0) == hparams.get("width_mult", 1.0)
    assert source.num_classes == 1000
    # Only the name: width and (for timm's MobileNet V1) the activation come from the file.
    model = lightnets.create_model(name, weights=path).eval()
    assert {k: model.hparams[k] for k in hparams} == hparams
    assert_loaded(model, state)
    if layout == "timm":
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ours, theirs = model(x), timm_forward(state, x, name[-2:])
        assert (ours - theirs).abs().max().item() < 1e-5 * max(1.0, theirs.abs().max().item())


def test_timm_mobilenet_v1_relu_differs_relu6_matches(tmp_path):
    """The activation is what separates our default MobileNet V1 from timm's."""
    state = random_state(timm_mobilenet_v1(0.25))
    path = tmp_path / "mobilenetv1.safetensors"
    save(state, path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    theirs = timm_forward(state, x, "v1")
    with torch.no_grad():
        relu6 = lightnets.create_model("mobilenet_v1", weights=path).eval()(x)
        relu = lightnets.create_model("mobilenet_v1", weights=path, activation="relu").eval()(x)
    assert (relu6 - theirs).abs().max() < 1e-5
    assert (relu - theirs).abs().max() > 1e-3


def test_timm_file_without_num_batches_tracked_loads(tmp_path):
    state = {
        k: v
        for k, v in random_state(timm_mobilenet_v2(0.5)).items()
        if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "model.safetensors"
    save(state, path)
    model = lightnets.create_model("mobilenet_v2", weights=path)
    assert torch.equal(
        model.state_dict()["features.1.conv.1.weight"], state["blocks.0.0.conv_pw.weight"]
    )


def test_wrapped_and_ddp_prefixed_checkpoint_loads(tmp_path):
    state = random_state(torchvision_shufflenet_v2(0.5))
    path = tmp_path / "train_ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = lightnets.create_model("shufflenet_v2", weights=path)
    assert model.hparams["width_mult"] == 0.5
    assert_loaded(model, state)


def test_lightnets_checkpoint_and_safetensors_rebuild_their_model(tmp_path):
    from lightnets.models.weights import model_from_file, save_weights
    from lightnets.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = lightnets.create_model(
        "mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.25, activation="relu6"
    ).eval()
    dataset = {
        "name": "fashion-mnist",
        "classes": list("abcdefghij"),
        "mean": [0.3] * 3,
        "std": [0.35] * 3,
        "input_size": [3, 32, 32],
    }
    save_checkpoint(
        tmp_path / "best.pt",
        {"hparams": model.hparams, "model": model.state_dict(), "dataset": dataset},
    )
    save_weights(model, tmp_path / "w.safetensors", dataset=dataset)
    x = torch.randn(2, 3, 32, 32)
    for name in ("best.pt", "w.safetensors"):
        loaded, state = model_from_file(tmp_path / name)
        assert loaded.hparams == model.hparams
        assert state["dataset"] == dataset
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    # create_model with only the name: variant, classes and hparams come from the file.
    again = lightnets.create_model("mobilenet_v1", weights=tmp_path / "best.pt")
    assert again.hparams == model.hparams


def test_new_number_of_classes_keeps_the_backbone(tmp_path):
    state = random_state(torchvision_mobilenet_v2(0.5))
    path = tmp_path / "mobilenet_v2.pth"
    save(state, path)
    model = lightnets.create_model("mobilenet_v2", weights=path, num_classes=10)
    assert model.hparams["num_classes"] == 10
    assert model.state_dict()["classifier.1.weight"].shape == (10, 1280)
    backbone = [k for k in state if not k.startswith("classifier")]
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in backbone)
    # The load report holds the note the loader logs (independent of logging's configuration).
    notes = model.weights_report.notes
    assert any("classifier freshly initialised for 10 classes" in note for note in notes)
