"""The "Inside the model" page's pieces: feature maps, first-layer filters, one conv output worked
out by hand (CNN Explainer's view, for the user's own model), and the test set's embedding.

The page picks a run and an image; everything here draws what core.insight.activations computes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from core.insight.activations import TSNE_MAX_POINTS, Activations, ConvArithmetic, embedding
from core.insight.evaluate import Predictions
from core.models.build import module_expr
from studio import insight
from studio.charts import BLUE, FONT, ORANGE, legend_clear_of_toolbar
from studio.predict_view import run_predictor

MAP_SIDE = 96  # px per feature map tile
CHANNEL_NAMES = {3: ("R", "G", "B")}
CLASS_COLORS = plotly.colors.qualitative.T10 + plotly.colors.qualitative.Alphabet


def _layer(name: str) -> str:
    """A layer's title: its name, and the code that reaches it (`model[0]` in an nn.Sequential)."""
    return f"**Layer {name}** (`{module_expr(name)}`)"


@st.cache_resource(max_entries=3, show_spinner="Tracing the model's layers…")
def activations(run_dir: str, mtime: float) -> Activations:
    return Activations(run_predictor(run_dir, mtime))


@st.cache_data(max_entries=8, show_spinner=False)
def _embedding(run_dir: str, mtime: float, method: str, max_points: int, _images: np.ndarray) -> dict[str, Any]:
    # The run and checkpoint stand for the images in the cache key (the underscore keeps them out of hashing).
    images = _images
    batch = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # a copy: the cached images are read-only
    return embedding(activations(run_dir, mtime), batch, method, max_points)


# ---------------------------------------------------------------------- images


def signed_colors(values: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) -> uint8 RGB: negative blue, zero white, positive orange, saturating at +-scale."""
    t = np.clip(values / max(scale, 1e-12), -1, 1)[..., None]
    white = np.array([255.0, 255.0, 255.0])
    pos, neg = np.array([238.0, 76.0, 44.0]), np.array([31.0, 111.0, 209.0])
    rgb = np.where(t >= 0, white + t * (pos - white), white - t * (neg - white))
    return rgb.round().astype(np.uint8)


def filter_tiles(weights: np.ndarray) -> list[np.ndarray]:
    """(C_out, C_in, k, k) -> one RGB tile per filter, each stretched to its own min..max (grey for C_in != 3)."""
    tiles = []
    for w in weights:
        w = w if w.shape[0] == 3 else np.repeat(w.mean(axis=0, keepdims=True), 3, axis=0)
        lo, hi = float(w.min()), float(w.max())
        tile = (w - lo) / (hi - lo) if hi > lo else np.full_like(w, 0.5)
        tiles.append((tile.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    return tiles


def to_tensor(image_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image_hwc)).permute(2, 0, 1).contiguous()  # a copy: cached images are read-only


# ---------------------------------------------------------------------- sections


def feature_maps_section(acts: Activations, image: torch.Tensor) -> None:
    st.caption(
        "What every convolution layer computes for this image: one map per output channel, orange where it "
        "is positive, blue where negative, white at zero. Shown: the channels with the highest mean activation."
    )
    shown = st.slider("Channels per layer", 4, 32, 8, 4, key="inside_channels")
    for fmap in acts.feature_maps(image):
        top = fmap.order[:shown]
        scale = float(np.abs(fmap.maps[top]).max())
        st.markdown(
            f"{_layer(fmap.layer)} · {fmap.kind} · output {fmap.shape or ' x '.join(map(str, fmap.maps.shape))}"
            f" · the {len(top)} most active of {fmap.maps.shape[0]} channels"
        )
        st.image(
            [insight.enlarge(signed_colors(fmap.maps[c], scale), MAP_SIDE) for c in top],
            width=MAP_SIDE,
            caption=[f"ch {c}: {fmap.maps[c].mean():.2f}" for c in top],
        )


def filters_section(acts: Activations) -> None:
    name, conv = acts.first_conv()
    weights = acts.filters()
    st.markdown(
        f"{_layer(name)} · {conv.out_channels} filters of {conv.in_channels} x {conv.kernel_size[0]} x {conv.kernel_size[1]} weights"
    )
    st.caption(
        "Each tile is one filter's weights as colours (stretched to its own range): the pattern of colours "
        "and edges it responds to most." + ("" if conv.in_channels == 3 else " Shown grey: the input is not RGB.")
    )
    tiles = filter_tiles(weights)
    side = max(48, min(96, 12 * conv.kernel_size[0]))
    st.image([insight.enlarge(t, side) for t in tiles], width=side, caption=[str(i) for i in range(len(tiles))])


def arithmetic_section(acts: Activations, image: torch.Tensor) -> None:
    name, conv = acts.first_conv()
    maps = acts.feature_maps(image)[0]
    c_out, h, w = maps.maps.shape
    st.caption(
        f"How `{module_expr(name)}` computes one number of its output: the kernel of one output channel lies on a "
        f"patch of the input, each input value is multiplied by the weight on top of it, and the products are "
        f"summed, plus the channel's bias. Sliding the kernel over every position gives the whole map."
    )
    cols = st.columns(3)
    channel = cols[0].selectbox(
        "Output channel", list(maps.order), key="inside_ch", format_func=lambda c: f"{c} (mean {maps.maps[c].mean():.2f})"
    )
    peak_r, peak_c = np.unravel_index(int(np.argmax(maps.maps[channel])), (h, w))
    row = cols[1].slider("Output row", 0, h - 1, int(peak_r), key=f"inside_row-{channel}")
    col = cols[2].slider("Output column", 0, w - 1, int(peak_c), key=f"inside_col-{channel}")
    calc = acts.conv_arithmetic(image, int(channel), row, col)
    left, right = st.columns([2, 3])
    left.plotly_chart(_where_figure(acts, image, calc, maps.maps[channel]), key="inside-where")
    right.plotly_chart(arithmetic_figure(calc, CHANNEL_NAMES.get(len(calc.patch))), key="inside-arith")
    terms = " + ".join(f"{s:.3f}" for s in calc.channel_sums)
    ok = abs(calc.value - calc.actual) <= 1e-4 * max(1.0, abs(calc.actual))
    st.markdown(
        f"**Sum of products per input channel** ({terms}) **+ bias** ({calc.bias:.3f}) "
        f"**= {calc.value:.4f}**. The model computed **{calc.actual:.4f}** at channel {channel}, row {row}, "
        f"column {col} "
        + ("— the same number. :material/check_circle:" if ok else f"— they differ by {abs(calc.value - calc.actual):.2g}.")
    )
    mean, std = acts.predictor.mean.tolist(), acts.predictor.std.tolist()
    st.caption(
        "Input values are the normalized image the model sees: (pixel / 255 − mean) / std per channel, with "
        f"mean {', '.join(f'{m:.3f}' for m in mean)} and std {', '.join(f'{s:.3f}' for s in std)}"
        + (
            f"; positions outside the image are the zero padding ({conv.padding})."
            if any(r < 0 or r >= image.shape[-1] for r in calc.input_rows + calc.input_cols)
            else "."
        )
    )


def _where_figure(acts: Activations, image: torch.Tensor, calc: ConvArithmetic, fmap: np.ndarray) -> go.Figure:
    """The input with the kernel's patch outlined, and the output map with the computed value marked."""
    view = acts.predictor.model_view(image).permute(1, 2, 0).numpy()
    fig = make_subplots(1, 2, subplot_titles=("input (what the model sees)", f"output channel {calc.channel}"), horizontal_spacing=0.08)
    fig.add_trace(go.Image(z=view, hoverinfo="skip"), 1, 1)
    scale = float(np.abs(fmap).max())
    fig.add_trace(
        go.Heatmap(
            z=fmap,
            colorscale=[[0, BLUE], [0.5, "white"], [1, ORANGE]],
            zmin=-scale,
            zmax=scale,
            showscale=False,
            hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>",
        ),
        1,
        2,
    )
    r0, r1, c0, c1 = min(calc.input_rows), max(calc.input_rows), min(calc.input_cols), max(calc.input_cols)
    fig.add_shape(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5, line=dict(color="#111", width=3), row=1, col=1)
    fig.add_shape(
        type="rect",
        x0=calc.col - 0.5,
        x1=calc.col + 0.5,
        y0=calc.row - 0.5,
        y1=calc.row + 0.5,
        line=dict(color="#111", width=3),
        row=1,
        col=2,
    )
    h, w = fmap.shape
    # Square cells, as the input image beside it has square pixels: left free, the map stretched to the plot's height.
    fig.update_yaxes(range=[h - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x2", constrain="domain", row=1, col=2)
    fig.update_xaxes(range=[-0.5, w - 0.5], showgrid=False, zeroline=False, constrain="domain", row=1, col=2)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), font=FONT, showlegend=False)
    fig.update_annotations(font=dict(size=14))
    return fig


def arithmetic_figure(calc: ConvArithmetic, channel_names: tuple[str, ...] | None = None) -> go.Figure:
    """Per input channel: the patch, the kernel, and their products, each cell with its number."""
    c_in, kh, kw = calc.patch.shape
    shown = min(c_in, 4)  # beyond a few input channels the grid would be unreadable; the sums cover all
    names = channel_names or tuple(f"in {i}" for i in range(c_in))
    sums = calc.channel_sums
    titles = [f"{names[i]}: {what}" for i in range(shown) for what in ("input patch", "× kernel", f"= products, sum {sums[i]:.3f}")]
    fig = make_subplots(shown, 3, subplot_titles=titles, horizontal_spacing=0.05, vertical_spacing=0.12 if shown > 1 else 0.1)
    big = kh * kw > 49
    for i in range(shown):
        for j, grid in enumerate((calc.patch[i], calc.kernel[i], calc.products[i])):
            scale = float(np.abs(grid).max()) or 1.0
            fig.add_trace(
                go.Heatmap(
                    z=grid,
                    text=np.vectorize(lambda v: f"{v:.2f}")(grid),
                    texttemplate=None if big else "%{text}",
                    textfont=dict(size=11),
                    colorscale=[[0, BLUE], [0.5, "white"], [1, ORANGE]],
                    zmin=-scale,
                    zmax=scale,
                    showscale=False,
                    hovertemplate="%{z:.4f}<extra></extra>",
                ),
                i + 1,
                j + 1,
            )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=max(240, shown * (30 * kh + 50) + 30), margin=dict(l=10, r=10, t=30, b=10), font=FONT)
    fig.update_annotations(font=dict(size=14))
    return fig


def embedding_section(run_dir: Path, result: Predictions, images: np.ndarray, look_inside: Callable[[int], None]) -> None:
    """The scatter of the test set; a clicked point's image beside it, with a button to look inside with it."""
    mtime = insight.checkpoint_mtime(run_dir)
    left, right = st.columns([1, 2])
    method = left.segmented_control(
        "Projection", ["pca", "tsne"], default="pca", required=True, key="inside_method", format_func={"pca": "PCA", "tsne": "t-SNE"}.get
    )
    limit = TSNE_MAX_POINTS if method == "tsne" else 2000
    with st.spinner("Projecting the test set…" if method == "pca" else f"t-SNE on {min(limit, len(result))} test images (a few seconds)…"):
        emb = _embedding(str(run_dir), mtime, method, limit, images)
    idx, xy = emb["index"], emb["xy"]
    right.caption(
        f"Each point is a test image, placed by the {emb['dim']} features the model's last layer reads; colours are the "
        f"true classes, ✕ marks a misclassified image. "
        + (
            f"t-SNE keeps neighbours together but distances between groups mean little; it ran on a seeded random "
            f"{len(idx):,} of the {len(result):,} test images to stay within seconds ({emb['seconds']:.1f} s here)."
            if method == "tsne"
            else f"PCA: the two directions of largest variance ({len(idx):,} images, {emb['seconds']:.1f} s)."
        )
    )
    chart, side = st.columns([4, 1])
    event = chart.plotly_chart(
        embedding_figure(xy, idx, result), key=f"inside-embedding-{method}", on_select="rerun", selection_mode="points"
    )
    points = event.selection.points if event else []
    if not points:
        side.info("Click a point to see its image here.", icon=":material/touch_app:")
        return
    clicked = int(points[0]["customdata"][0])
    true, pred = int(result.labels[clicked]), int(result.preds[clicked])
    side.image(insight.enlarge(images[clicked], 128), width=128)
    side.markdown(
        f"Test image {clicked}: **{result.classes[true]}**, predicted **{result.classes[pred]}** "
        f"({result.probs[clicked, pred]:.0%})" + (" ✕" if true != pred else "")
    )
    side.button(
        "Look inside with it",
        on_click=look_inside,
        args=(clicked,),
        icon=":material/arrow_upward:",
        help="Use this test image for the feature maps and the first layer's arithmetic above.",
    )


def embedding_figure(xy: np.ndarray, index: np.ndarray, result: Predictions) -> go.Figure:
    preds, labels = result.preds[index], result.labels[index]
    fig = go.Figure(
        layout=legend_clear_of_toolbar(
            dict(
                height=560,
                font=FONT,
                margin=dict(l=10, r=10, t=10, b=10),
                hovermode="closest",
                clickmode="event+select",
                dragmode="pan",
                legend=dict(itemsizing="constant"),
                xaxis=dict(showticklabels=False, title=None),
                yaxis=dict(showticklabels=False, title=None),
            ),
            right=True,
        )
    )
    for c, name in enumerate(result.classes):
        color = CLASS_COLORS[c % len(CLASS_COLORS)]
        for wrong in (False, True):  # two traces per class, so the legend shows the class's dot, not a cross
            mine = np.flatnonzero((labels == c) & ((preds != c) == wrong))
            if not len(mine):
                continue
            fig.add_scatter(
                x=xy[mine, 0],
                y=xy[mine, 1],
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=not wrong or not np.any((labels == c) & (preds == c)),
                marker=dict(color=color, symbol="x" if wrong else "circle", size=10 if wrong else 7, line=dict(width=0)),
                # Lists, not an array: Plotly would send an array as base64, and a clicked point's customdata back as a dict.
                customdata=np.stack([index[mine], preds[mine]], axis=1).tolist(),
                text=[f"true {name}, predicted {result.classes[p]}" for p in preds[mine]],
                hovertemplate="%{text}<extra>image %{customdata[0]}</extra>",
            )
    return fig
