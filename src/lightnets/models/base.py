"""The interface every lightnets model implements (timm's conventions)."""

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError, check_int

#: ``variant`` values every family accepts (see :class:`LightweightNet`).
VARIANTS = ("imagenet", "cifar")


def validate_variant(variant: Any) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else InvalidArgumentError."""
    if variant not in VARIANTS:
        raise InvalidArgumentError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    return variant


class LightweightNet(nn.Module):
    """Base class of the zoo.

    Subclasses implement :meth:`forward_features` (the convolutional trunk, returning a feature
    map), :meth:`forward_head` (pooling and classifier, returning logits) and
    :meth:`reset_classifier`. Every family's constructor takes ``(num_classes, variant,
    **hparams)``, hands ``num_classes`` and ``variant`` to this constructor (which checks them
    and records :attr:`num_classes`, so a family built directly reports its own classifier
    size) and raises InvalidArgumentError for values it cannot build. ``variant`` is
    ``"imagenet"`` (the paper's network for 224x224 inputs) or ``"cifar"`` (a stem that keeps
    32x32 inputs at full resolution). The registry sets :attr:`hparams`, a dict of plain values
    from which ``create_model(**model.hparams)`` rebuilds the same network.
    """

    #: (channels, height, width) the network was designed for.
    default_input_size: tuple[int, int, int] = (3, 224, 224)
    #: Number of channels that :meth:`forward_features` returns.
    num_features: int = 0
    num_classes: int = 1000
    if TYPE_CHECKING:  # declared for type checkers only: TorchScript reads class annotations
        #: What ``create_model(weights=FILE)`` loaded (a ``lightnets.models.weights.LoadReport``).
        weights_report: Any

    def __init__(self, num_classes: int, variant: str) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        validate_variant(variant)
        self.hparams: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` classes.

        Keeps :attr:`num_classes` and :attr:`hparams` in step, so the model still rebuilds.
        """
        check_int("num_classes", num_classes, minimum=1)
        self._reset_classifier(num_classes)
        self.num_classes = num_classes
        self.hparams["num_classes"] = num_classes

    def _reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PooledLinearHeadNet(LightweightNet):
    """A trunk ``features``, global average pooling, and ``classifier`` = Dropout + Linear.

    The head of MobileNet V1 and V2 (torchvision's MobileNetV2 names, so its weights map by key).
    Subclasses build ``self.features`` and set ``self.num_features`` and ``self.drop_rate``
    before calling :meth:`_make_classifier`.
    """

    drop_rate: float = 0.0
    if TYPE_CHECKING:  # set by each subclass; TorchScript cannot read this annotation
        features: nn.Module

    def _make_classifier(self, num_classes: int) -> nn.Sequential:
        # The reference initialisation of the classifier: N(0, 0.01) weights, zero bias.
        fc = nn.Linear(self.num_features, num_classes)
        if not fc.weight.is_meta:  # see init_conv_bn_
            nn.init.normal_(fc.weight, 0.0, 0.01)
            nn.init.zeros_(fc.bias)
        return nn.Sequential(nn.Dropout(p=self.drop_rate), fc)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if pre_logits:
            return x
        return self.classifier(x)

    def _reset_classifier(self, num_classes: int) -> None:
        self.classifier = self._make_classifier(num_classes)
