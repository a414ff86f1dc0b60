"""Trained quantization by weight sharing (Deep Compression, Section 3).

Han, Mao & Dally, ICLR 2016 (https://www.arxiv-vanity.com/papers/1510.00149/): the surviving
weights of each layer are clustered by k-means into 2**bits shared values; each weight then
stores only its cluster index. Of the three centroid initialisations compared (Forgy, density
based, linear), *linear* initialisation -- centroids spaced evenly between the smallest and
largest weight -- keeps the rare large weights represented and gave the best accuracy
(Section 3.2; see also https://magenta.gitbooks.io/paperreview/content/chapter1.html). With
data, the centroids are fine-tuned: the gradient of each centroid is the sum of the gradients
of the weights in its cluster (Section 3.3, Figure 3), which is what autograd computes for
``weight = codebook[codes]``.

Code 0 is reserved for zero (pruned weights and the coder's filler entries), so a layer
quantized to ``bits`` bits has at most ``2**bits - 1`` clusters and a codebook of at most
``2**bits`` values (clusters left empty by k-means are dropped from the codebook).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

#: Lloyd iterations at most; 1-D k-means on a layer converges well before.
KMEANS_ITERATIONS = 100


def kmeans_linear(values: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means with linear initialisation; returns (centroids (clusters,), assignment).

    In one dimension every cluster is an interval of the sorted values, so a Lloyd iteration
    needs only the boundaries (midpoints between sorted centroids, found by binary search) and
    prefix sums: O(clusters log n) per iteration after one sort. An empty cluster keeps its
    previous centroid.
    """
    values = values.detach().to(torch.float64).reshape(-1)
    if values.numel() == 0:
        return torch.zeros(clusters, dtype=torch.float32), torch.zeros(0, dtype=torch.int64)
    ordered = torch.sort(values).values
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ordered, 0)])
    centroids = torch.linspace(float(ordered[0]), float(ordered[-1]), clusters, dtype=torch.float64)
    edges = None
    for _ in range(KMEANS_ITERATIONS):
        centroids = torch.sort(centroids).values
        midpoints = (centroids[1:] + centroids[:-1]) / 2
        inner = torch.searchsorted(ordered, midpoints)  # values < midpoint go left
        new_edges = torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), len(ordered))])
        if edges is not None and torch.equal(new_edges, edges):
            break
        edges = new_edges
        counts = edges[1:] - edges[:-1]
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    assignment = torch.bucketize(values, midpoints, right=True)
    return centroids.to(torch.float32), assignment


def share_weights(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the non-zero entries of ``weight``: returns (codebook, codes).

    The codebook has at most ``2**bits`` entries (unused clusters are dropped); ``codebook[0]
    == 0``; ``codes`` has the shape of ``weight``, 0 where it is zero, else
    1 + the entry's cluster. ``codebook[codes]`` is the quantized weight.
    """
    flat = weight.detach().float().cpu().reshape(-1)
    kept = flat != 0
    centroids, assignment = kmeans_linear(flat[kept], (1 << bits) - 1)
    # Drop the clusters nobody uses (a small layer has fewer weights than 2**bits codes).
    used = torch.unique(assignment)
    remap = torch.zeros(len(centroids), dtype=torch.int64)
    remap[used] = torch.arange(len(used))
    centroids, assignment = centroids[used], remap[assignment]
    codebook = torch.cat([torch.zeros(1), centroids])
    codes = torch.zeros(flat.shape, dtype=torch.int64)
    codes[kept] = assignment + 1
    return codebook, codes.reshape(weight.shape)


class SharedWeight(nn.Module):
    """Parametrization ``weight = codebook[codes]`` with a trainable codebook.

    Autograd sums the gradients of the weights sharing a code into that code's centroid
    (Deep Compression, Figure 3). Entry 0 (zero: pruned) receives no update.
    """

    codes: torch.Tensor
    fixed: torch.Tensor

    def __init__(self, codebook: torch.Tensor, codes: torch.Tensor) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.clone())
        self.register_buffer("codes", codes.clone())
        self.register_buffer("fixed", torch.zeros(1))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        book = torch.cat([self.fixed, self.codebook[1:]])
        return book[self.codes]


def attach_shared(module: nn.Module, bits: int) -> SharedWeight:
    """Quantize ``module.weight`` in place and parametrize it by its codebook (for fine-tune)."""
    weight = _weight(module)
    codebook, codes = share_weights(weight, bits)
    shared = SharedWeight(codebook.to(weight.device), codes.to(weight.device))
    with torch.no_grad():
        weight.copy_(shared(weight))
    parametrize.register_parametrization(module, "weight", shared)
    return shared


def detach_shared(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Bake the parametrization into a plain weight; returns (codebook, codes) on the CPU."""
    shared = module.get_submodule("parametrizations.weight.0")
    if not isinstance(shared, SharedWeight):
        raise TypeError(f"{type(module).__name__}'s weight is not shared (attach_shared first)")
    book = torch.cat([shared.fixed, shared.codebook[1:]]).detach().float().cpu()
    codes = shared.codes.detach().cpu()
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    weight = _weight(module)
    with torch.no_grad():
        weight.copy_(book[codes].to(weight.device))
    return book, codes


def _weight(module: nn.Module) -> torch.Tensor:
    """A compressible layer's weight (a convolution's or a linear layer's)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor to share")
    return weight
