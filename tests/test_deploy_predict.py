"""predict's preprocessing reproduces the data pipeline's tensors exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import lightnets
from lightnets.deploy.prediction import load_image, predict, preprocessing_from_checkpoint
from lightnets.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_png_matches_the_loader(tmp_path):
    from lightnets.data import load_splits, make_loader

    splits = load_splits("fashion-mnist", train_subset=100)
    images, _ = next(iter(make_loader(splits.test, splits, batch_size=4, train=False)))
    raw = splits.test.images[:4, 0, 2:30, 2:30]  # the 28x28 originals inside the 2-pixel pad
    state = {"dataset": splits.metadata()}
    pre = preprocessing_from_checkpoint(state, (3, 32, 32))
    assert pre.classes[0] == "T-shirt/top" and pre.dataset == "fashion-mnist"
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(raw[i].numpy()).save(path)
        torch.testing.assert_close(load_image(path, pre), images[i], atol=1e-6, rtol=0)
    # An RGB photo of another size is converted to grayscale and fitted the same way.
    big = tmp_path / "big.jpg"
    Image.fromarray(raw[0].numpy()).resize((56, 84)).convert("RGB").save(big)
    x = load_image(big, pre)
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1])


def test_bare_model_uses_imagenet_preprocessing_and_indices(tmp_path):
    model = lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=7).eval()
    pre = preprocessing_from_checkpoint(None, (3, 32, 32))
    assert pre.classes is None and pre.mean == pytest.approx((0.485, 0.456, 0.406))
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 50), (255, 0, 0)).save(path)
    x = load_image(path, pre)
    expected = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    torch.testing.assert_close(x[:, 16, 16], expected)
    (result,) = predict(model, [path], pre, topk=3)
    with torch.no_grad():
        probs = model(x[None]).softmax(1)[0]
    assert [i for i, _, _ in result.topk] == probs.topk(3).indices.tolist()
    assert all(name is None for _, name, _ in result.topk)
    assert sum(p for _, _, p in result.topk) <= 1.0 + 1e-6


def test_unreadable_or_missing_image(tmp_path):
    pre = preprocessing_from_checkpoint(None, (3, 32, 32))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.png"):
        load_image(bad, pre)
    with pytest.raises(DataError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png", pre)
