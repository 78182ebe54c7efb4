"""Inside a trained network: feature maps, first-layer filters, one conv output worked out by
hand, and the test set's penultimate-layer features projected to 2-D.

Activations come from torchvision's `create_feature_extractor` (torch.fx): the model's own
forward, traced once, returns the tensors of any named layer. Every module without children is
traced as a leaf, so layers written outside torch.nn (the speedrun net's BatchNorm, say) keep
their names and need not be traceable inside. Layers are named as core.models.inspect's layer table
names them (dotted module names), so a map's label matches the Architecture page.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor

from core.errors import PlaygroundError
from core.insight.predict import Predictor
from core.models.inspect import LayerTable, summary

# t-SNE runs a fixed 1000 iterations whose cost grows ~N log N: 600 points take ~2 s on one idle CPU core
# (measured ~8 s for 500 with 8 other processes on 2 cores), so a click gets an answer in seconds.
TSNE_MAX_POINTS = 600
PCA_MAX_POINTS = 10_000


@dataclass
class FeatureMap:
    layer: str  # module name, as in core.models.inspect's layer table
    kind: str  # the layer's type, e.g. Conv2d (a subclass's own name, as the layer table shows it)
    shape: str  # its output shape from the layer table, e.g. "32 x 32 x 32"
    maps: np.ndarray  # float32 (C, H, W): this image's activations
    order: np.ndarray  # channel indices, most active (highest mean activation) first


@dataclass
class ConvArithmetic:
    """One output value of a conv layer, computed by hand: sum(patch * kernel) + bias."""

    layer: str
    channel: int
    row: int
    col: int
    patch: np.ndarray  # (C_in, kh, kw): the input values under the kernel (0 where it overlaps the padding)
    kernel: np.ndarray  # (C_in, kh, kw): the weights of output channel `channel`
    bias: float
    input_rows: list[int]  # rows and columns of the (unpadded) input the patch covers; outside = padding
    input_cols: list[int]
    actual: float  # the value the model itself computed at (channel, row, col)

    @property
    def products(self) -> np.ndarray:
        return self.patch * self.kernel

    @property
    def channel_sums(self) -> np.ndarray:
        return self.products.reshape(len(self.patch), -1).sum(axis=1)

    @property
    def value(self) -> float:
        return float(self.products.astype(np.float64).sum() + self.bias)


class Activations:
    """One trained model, traced once, and what it computes inside for any image of its run."""

    def __init__(self, predictor: Predictor):
        # A private copy of the model: tracing switches a model to train mode and back, which must never
        # overlap a forward pass on the same model elsewhere (the studio shares a run's Predictor across pages).
        self.predictor = dataclasses.replace(predictor, model=copy.deepcopy(predictor.model).eval())
        self.model = self.predictor.model
        self._leaves = sorted({type(m) for m in self.model.modules() if not list(m.children())}, key=str)
        self._modules = dict(self.model.named_modules())
        self._extractors: dict[tuple[str, ...], nn.Module] = {}
        self._table: LayerTable | None = None
        # torchvision's own tracer, for the node names create_feature_extractor takes (a module's
        # qualified name for its first call, `name_1` for a second) and each node's inputs.
        tracer = NodePathTracer(leaf_modules=self._leaves)
        try:
            graph = tracer.trace(self.model)
        except Exception as exc:  # data-dependent control flow in a custom forward
            raise PlaygroundError(
                f"This model's forward pass cannot be traced to read its layers ({str(exc).splitlines()[0][:120]})."
            ) from None
        self._name = {node: tracer.node_to_qualname.get(node, node.name) for node in graph.nodes}
        self._calls = [node for node in graph.nodes if node.op == "call_module"]
        self.convs = [str(n.target) for n in self._calls if isinstance(self._modules.get(str(n.target)), nn.Conv2d)]

    def _extractor(self, nodes: tuple[str, ...]) -> nn.Module:
        if nodes not in self._extractors:
            self._extractors[nodes] = create_feature_extractor(
                self.model, return_nodes=list(nodes), tracer_kwargs={"leaf_modules": self._leaves}
            ).eval()
        return self._extractors[nodes]

    @torch.no_grad()
    def _run(self, nodes: tuple[str, ...], batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 images (N, 3, S, S) through the run's preprocessing, returning the named nodes' outputs."""
        return self._extractor(nodes)(self.predictor.inputs(batch))

    # ------------------------------------------------------------------ layers

    def layer_table(self) -> LayerTable:
        if self._table is None:
            depth = max((name.count(".") + 1 for name in self._modules if name), default=1)
            size = self.predictor.input_size
            self._table = summary(self.model, (3, size, size), depth=depth)
        return self._table

    def _row(self, layer: str) -> tuple[str, str]:
        """(type, output shape) as the layer table writes them."""
        rows = self.layer_table().layers
        match = rows[rows["name"] == layer]
        if not len(match):
            return type(self._modules[layer]).__name__, ""
        return str(match["type"].iloc[0]), str(match["output_shape"].iloc[0])

    def feature_maps(self, image: torch.Tensor) -> list[FeatureMap]:
        """Every conv layer's output for one uint8 image (3, S, S), channels ranked by mean activation."""
        if not self.convs:
            raise PlaygroundError("This model has no Conv2d layers, so it has no feature maps to show.")
        nodes = tuple(self._node_of(c) for c in self.convs)
        out = self._run(nodes, image[None])
        maps = []
        for layer, node in zip(self.convs, nodes):
            fmap = out[node][0].float().cpu().numpy()
            maps.append(FeatureMap(layer, *self._row(layer), fmap, np.argsort(-fmap.mean(axis=(1, 2)), kind="stable")))
        return maps

    def _call_of(self, module_name: str) -> torch.fx.Node:
        """The graph node of a module's first call."""
        for node in self._calls:
            if str(node.target) == module_name:
                return node
        raise PlaygroundError(f"Layer {module_name} is not called in the model's forward pass.")

    def _node_of(self, module_name: str) -> str:
        return self._name[self._call_of(module_name)]

    # ------------------------------------------------------------------ first conv

    def first_conv(self) -> tuple[str, nn.Conv2d]:
        if not self.convs:
            raise PlaygroundError("This model has no Conv2d layer.")
        return self.convs[0], self._modules[self.convs[0]]

    def filters(self) -> np.ndarray:
        """The first conv's weights as float32 (C_out, C_in, kh, kw)."""
        return self.first_conv()[1].weight.detach().float().cpu().numpy()

    def conv_arithmetic(self, image: torch.Tensor, channel: int, row: int, col: int) -> ConvArithmetic:
        """Output (channel, row, col) of the first conv for one uint8 image, as the sum of its products."""
        name, conv = self.first_conv()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise PlaygroundError(f"Layer {name} is a grouped or non-zero-padded conv; its arithmetic is not drawn.")
        call = self._call_of(name)
        node, source = self._name[call], call.args[0]
        if source.op == "placeholder":  # the conv reads the model's input itself
            out = self._run((node,), image[None])
            x = self.predictor.inputs(image[None])[0]
        else:
            out = self._run((node, self._name[source]), image[None])
            x = out[self._name[source]][0]
        y = out[node][0]
        c_out, h_out, w_out = y.shape
        if not (0 <= channel < c_out and 0 <= row < h_out and 0 <= col < w_out):
            raise PlaygroundError(f"Layer {name} has {c_out} channels of {h_out} x {w_out}; ({channel}, {row}, {col}) is outside it.")
        kh, kw = conv.kernel_size
        (sh, sw), (dh, dw) = conv.stride, conv.dilation
        top, left = _leading_padding(conv)
        rows = [row * sh - top + i * dh for i in range(kh)]
        cols = [col * sw - left + j * dw for j in range(kw)]
        x = x.float().cpu()
        patch = torch.zeros(x.shape[0], kh, kw)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if 0 <= r < x.shape[1] and 0 <= c < x.shape[2]:
                    patch[:, i, j] = x[:, r, c]
        bias = float(conv.bias.detach()[channel]) if conv.bias is not None else 0.0
        return ConvArithmetic(
            name,
            channel,
            row,
            col,
            patch.numpy(),
            conv.weight[channel].detach().float().cpu().numpy(),
            bias,
            rows,
            cols,
            float(y[channel, row, col]),
        )

    # ------------------------------------------------------------------ embedding

    def penultimate(self) -> str:
        """The node feeding the last Linear layer: the features the classifier separates."""
        linears = [node for node in self._calls if isinstance(self._modules.get(str(node.target)), nn.Linear)]
        if not linears:
            raise PlaygroundError("This model has no Linear layer, so it has no penultimate-layer features to project.")
        source = linears[-1].args[0]
        if source.op == "placeholder":
            raise PlaygroundError("This model is a single Linear layer on the pixels; it has no hidden features to project.")
        return self._name[source]

    def features(self, images: torch.Tensor, batch_size: int = 250) -> np.ndarray:
        """Penultimate-layer features (N, D) of uint8 images (N, 3, S, S)."""
        node = self.penultimate()
        parts = [self._run((node,), images[i : i + batch_size])[node].flatten(1).float().cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


def _leading_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Zeros added above and left of the input; 'same' puts any odd extra at the bottom/right, as torch does."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))  # type: ignore[return-value]
    return int(conv.padding[0]), int(conv.padding[1])


# ---------------------------------------------------------------------- 2-D projections


def sample_indices(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """A seeded subset of range(n), in order; all of it when n <= max_points."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def project(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) with scikit-learn: PCA, or t-SNE on the top 50 principal components."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n, d = features.shape
    if n < 3:
        raise PlaygroundError(f"Projecting needs at least 3 images; there are {n}.")
    x = features.astype(np.float32)
    if method == "pca":
        if d < 2:
            return np.hstack([x, np.zeros((n, 2 - d), np.float32)])
        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "tsne":
        if d > 50:  # the usual first step: t-SNE on 50 components is faster and less noisy than on all
            x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
        perplexity = float(min(30.0, (n - 1) / 3))
        # One thread: with a trainer on the same cores, OpenMP's spinning threads made it 5x slower, not faster.
        with threadpool_limits(limits=1):
            return (
                TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
                .fit_transform(x)
                .astype(np.float32)
            )
    raise PlaygroundError(f"Unknown projection {method!r}; use pca or tsne.")


def embedding(
    activations: Activations, images: torch.Tensor, method: str = "pca", max_points: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """A seeded subset of `images` projected to 2-D: {"index", "xy", "seconds", "dim"} (index into `images`)."""
    limit = max_points or (TSNE_MAX_POINTS if method == "tsne" else PCA_MAX_POINTS)
    index = sample_indices(len(images), limit, seed)
    started = time.perf_counter()
    feats = activations.features(images[torch.from_numpy(index)])
    xy = project(feats, method, seed)
    return {"index": index, "xy": xy, "seconds": time.perf_counter() - started, "dim": int(feats.shape[1])}
