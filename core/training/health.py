"""Training health: per-layer gradient, weight and update norms, dead ReLU units, and what they say in plain words.

Measuring (`Probe`, used by the training loop on log-interval steps only, so other steps pay nothing):
- gradient norm: the L2 norm of a layer's gradients (weight and bias together) after backward;
- weight norm: the L2 norm of its weight matrices / kernels after the optimizer step (of its vectors, for a layer
  that has only those: BatchNorm, a lone bias; such rows say `"vectors_only": true`);
- update / weight: ||w_after - w_before|| / ||w_after|| of the same tensors, from a copy of the parameters taken
  just before that step. It is the step the weights really took (lr, momentum, Adam's scaling and weight decay
  included), not lr * grad. Karpathy's rule of thumb: about 1e-3 is healthy; far below, the weights barely move
  (the learning rate may be too low); far above, training is unstable (too high);
- dead units: the fraction of a ReLU's units (channels of a conv output, features of a Linear output) that are 0
  for every image of the batch, i.e. that pass no gradient back. Forward hooks count them, registered for that
  one step. A ReLU module used several times in one forward (torchvision's ResNet blocks) counts all its calls.
Everything is computed on the device and read with the interval's loss and accuracy (core.training.fastloop.IntervalReads):
no wait of its own.

Judging (`check`): records in (the `health`, `step` and `epoch` records of metrics.jsonl), `HealthWarning`s out,
each with a level, the layer it is about (or None) and a one-line message that says what to do. The Train page
and the command line's progress output both show them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from core.training.curves import HEALTH_POINTS, Thinned

UPDATE_RATIO_GOOD = 1e-3  # the rule of thumb for update / weight per step
UPDATE_RATIO_LOW = 1e-5  # 100x below it: the weights hardly move
UPDATE_RATIO_HIGH = 3e-1  # a step that changes a layer's weights by a third: far too large
EXPLODING_FACTOR, EXPLODING_WINDOW = 20.0, 5  # total gradient norm this many times its median over the last few records
# (not over the whole run: a net leaving the ln(C) plateau grows its gradients ~10x in an epoch, healthily)
# The absolute floors of that relative rule: a jump counts only from gradients that were doing work (a rise from ~0 is
# the gradients coming back, not an explosion) to a norm that is large in itself (above gradient clipping's usual 1 to 5).
GRAD_NORM_VANISHED = 1e-4  # total gradient norm below this: ~0, the weights get almost no signal
EXPLODING_MIN_NORM = 10.0
FITTED_LOSS = 0.01  # training loss below this: the model fits its training batches, so ~0 gradients are expected
STUCK_FRACTION = 0.95  # train loss at or above this fraction of ln(num_classes), after
STUCK_AFTER_EPOCHS, STUCK_AFTER_STEPS = 1.0, 200  # one epoch or this many steps, whichever comes first,
STUCK_MIN_STEPS = 10  # but never before this many: an epoch of a few dozen images is a step or two
LEVELS = ("error", "warning", "info")
ROOT_NAME = "(own parameters)"  # parameters a container holds itself: the name core.models.inspect's layer table uses


# --------------------------------------------------------------------------- measuring


class Probe:
    """Per-layer health of one model's training step; `begin()` before the step, `measure()` after it."""

    def __init__(self, model: nn.Module, *, dead_units: bool = True):
        self.layers: list[tuple[str, str]] = []  # (name, type) of every module that owns trainable parameters
        self.params: list[nn.Parameter] = []
        self._has_matrix: list[bool] = []
        group: list[int] = []
        seen: set[int] = set()
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
            if not own:
                continue
            seen.update(id(p) for p in own)
            self.layers.append((name or ("model" if not any(True for _ in module.children()) else ROOT_NAME), type(module).__name__))
            self.params += own
            # Two groups per layer: its weight matrices / kernels (what the update-size rule of thumb is about), and
            # its vectors (biases, norm scales and shifts), which start at 0 or 1 and move at their own pace.
            group += [2 * (len(self.layers) - 1) + int(p.ndim < 2) for p in own]
            self._has_matrix.append(any(p.ndim >= 2 for p in own))
        device = self.params[0].device if self.params else torch.device("cpu")
        self._group = torch.tensor(group, dtype=torch.long, device=device)
        # Modules, not F.relu calls: only modules can be hooked (the presets and torchvision models use modules).
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)] if dead_units else []
        self._before: list[torch.Tensor] | None = None
        self._handles: list[Any] = []
        self._dead: dict[int, list[tuple[torch.Tensor, int]]] = {}

    @property
    def pending(self) -> bool:
        return self._before is not None

    def begin(self) -> None:
        """Before the step that ends a log interval: hook the ReLUs and copy the parameters."""
        self._remove_hooks()
        self._dead = {i: [] for i in range(len(self.relus))}
        for i, (_, module) in enumerate(self.relus):
            self._handles.append(module.register_forward_hook(self._count_dead(i)))
        with torch.no_grad():
            self._before = [p.detach().clone() for p in self.params]

    def _count_dead(self, index: int):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor) or output.ndim < 2:
                return
            out = output.detach()
            alive = out.amax(dim=[d for d in range(out.ndim) if d != 1]) > 0  # a unit: one channel / feature
            self._dead[index].append(((~alive).sum(), out.shape[1]))

        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def collect(self) -> tuple[torch.Tensor, Callable[[list[float]], list[dict[str, Any]]]]:
        """After the step: (values, rows). `values` is a 1-D float tensor still on the device, so the loop can read it
        with the interval's loss, without a wait of its own; `rows(values as floats)` gives one dict per layer (name,
        type, grad_norm, weight_norm, update_ratio; dead and units for ReLUs)."""
        self._remove_hooks()
        before, self._before = self._before, None
        calls, self._dead = self._dead, {}
        n = len(self.layers) if before is not None else 0
        parts: list[torch.Tensor] = []
        if n:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            deltas = torch._foreach_sub([p.detach() for p in self.params], before)
            per_param = torch.stack(
                [torch.stack([v.float() for v in torch._foreach_norm(ts)]) for ts in (grads, self.params, deltas)]
            )  # 3 x parameters
            squares = torch.zeros(3, 2 * n, device=per_param.device).index_add_(1, self._group, per_param.square())
            parts.append(squares.flatten())  # squared grad, weight and update norms; per layer: matrices, then vectors
        counted = [(self.relus[i][0], sum(c for c, _ in seen), sum(u for _, u in seen)) for i, seen in calls.items() if seen]
        if counted:
            dead_counts = torch.stack([c.float() for _, c, _ in counted])
            parts.append(dead_counts.to(parts[0].device) if parts else dead_counts)
        values = torch.cat(parts) if parts else torch.zeros(0)
        return values, lambda floats: self._rows(floats, n, counted)

    def measure(self) -> list[dict[str, Any]]:
        """collect(), read at once."""
        values, rows = self.collect()
        return rows(values.tolist())

    def _rows(self, values: list[float], n: int, counted: list[tuple[str, Any, int]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for i, (name, kind) in enumerate(self.layers[:n]):
            grad = math.sqrt(values[2 * i] + values[2 * i + 1])
            which = 2 * i + (0 if self._has_matrix[i] else 1)
            weight, update = math.sqrt(values[2 * n + which]), math.sqrt(values[4 * n + which])
            row = {
                "name": name,
                "type": kind,
                "grad_norm": _round(grad),
                "weight_norm": _round(weight),
                "update_ratio": _round(update / weight) if weight > 0 else None,
            }
            if not self._has_matrix[i]:
                row["vectors_only"] = True  # a norm layer or a lone bias: left out of the update-size rules
            rows.append(row)
        for j, (name, _, units) in enumerate(counted):
            rows.append({"name": name, "type": "ReLU", "dead": round(values[6 * n + j] / units, 4), "units": units})
        return rows


def _round(value: float) -> float:
    """4 significant digits: plenty for a chart, and short lines in metrics.jsonl."""
    return float(f"{value:.4g}") if math.isfinite(value) else value


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class HealthWarning:
    level: str  # "error" (training is broken), "warning" (probably wrong), "info" (surprising but fine)
    code: str  # which rule: one warning per code, so a watcher can say each thing once
    message: str  # one line that says what is wrong and what to do
    layer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(records: Iterable[dict[str, Any]], *, num_classes: int, config: dict[str, Any] | None = None) -> list[HealthWarning]:
    """The warnings a run's records point at, most serious first.

    `records` may hold any kinds (only `health`, `step` and `epoch` are read), in order; `config` (config.json)
    lets the explanations name the run's own settings.
    """
    health, steps, epochs = [], [], []
    for r in records:
        kind = r.get("kind")
        (health if kind == "health" else steps if kind == "step" else epochs if kind == "epoch" else []).append(r)
    config = config or {}
    broken = [*_exploding(health), *_dead_layers(health)]
    found = [
        *broken,
        *_vanishing(health, explained=bool(broken)),
        *_update_size(health, config),
        *_stuck(steps or health, num_classes, explained=bool(broken)),
        *_test_above_train(epochs, config),
    ]
    return sorted(found, key=lambda w: LEVELS.index(w.level))


def _total(values: Iterable[float | None]) -> float:
    return math.sqrt(sum(v * v for v in values if v is not None))


def _norms_and_losses(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Each record's total gradient norm, and the training losses among them."""
    norms = [_total(row.get("grad_norm") for row in r.get("layers", [])) for r in records]
    return norms, [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]


def _exploding(health: list[dict[str, Any]]) -> list[HealthWarning]:
    if not health:
        return []
    last = [row for row in health[-1].get("layers", []) if "grad_norm" in row]
    if any(not math.isfinite(row["grad_norm"]) for row in last):
        bad = next(row["name"] for row in last if not math.isfinite(row["grad_norm"]))
        return [
            HealthWarning(
                "error",
                "exploding",
                f"The gradients of layer {bad} are inf/NaN: training has blown up. Lower the "
                "learning rate 10x (or use the learning-rate finder) and start again.",
                bad,
            )
        ]
    history, losses = _norms_and_losses(health[-1 - EXPLODING_WINDOW : -1])
    history = [h for h in history if h > 0]
    if len(history) < 3:
        return []
    typical, now = statistics.median(history), _total(row["grad_norm"] for row in last)
    if now <= EXPLODING_FACTOR * typical or now < EXPLODING_MIN_NORM:
        return []
    # From ~0 (the model fitted its batches, or no gradient got through) any gradient is a huge multiple: that is
    # the gradients coming back, which _vanishing speaks about, not an explosion.
    if typical < GRAD_NORM_VANISHED or (losses and statistics.median(losses) < FITTED_LOSS):
        return []
    worst = max(last, key=lambda row: row["grad_norm"])["name"]
    return [
        HealthWarning(
            "error",
            "exploding",
            f"Exploding gradients: their norm is {now:.3g}, {now / typical:.0f}x its recent "
            f"{typical:.3g} (largest in layer {worst}). Lower the learning rate "
            "(10x), or add BatchNorm; the loss may soon become NaN.",
            worst,
        )
    ]


def _vanishing(health: list[dict[str, Any]], *, explained: bool = False) -> list[HealthWarning]:
    """Gradients of ~0 over the last few records: fine when the training loss is ~0 too (nothing left to learn from
    those images), a problem when the loss is not."""
    norms, losses = _norms_and_losses(health[-EXPLODING_WINDOW:])
    if len(norms) < 3 or statistics.median(norms) >= GRAD_NORM_VANISHED or not losses:
        return []
    norm, loss = statistics.median(norms), statistics.median(losses)
    if loss < FITTED_LOSS:
        return [
            HealthWarning(
                "info",
                "fitted",
                f"The training loss is ~0 ({loss:.1g}) and so are the gradients (norm {norm:.1g}): the model fits "
                "its training images, so it has almost nothing left to learn from them. A gradient that comes back "
                "later is a batch it does not fit yet, not an explosion. If the test accuracy is far below the "
                "training accuracy, it has memorised them: more images or augmentation help more than more epochs.",
            )
        ]
    cause = (
        "The problem above is why: fix it first."
        if explained
        else "Usual causes: ReLUs that output 0 for every image (dead units), a deep stack without BatchNorm, or "
        "saturated sigmoid/tanh layers. Start again with a lower learning rate, or add BatchNorm."
    )
    return [
        HealthWarning(
            "warning",
            "vanishing",
            f"Vanishing gradients: their norm is {norm:.1g} while the training loss is still {loss:.2f}, so almost "
            f"no signal reaches the weights and they stop learning. {cause}",
        )
    ]


def _dead_layers(health: list[dict[str, Any]]) -> list[HealthWarning]:
    if not health:
        return []
    dead = [row for row in health[-1].get("layers", []) if row.get("dead") is not None and row["dead"] >= 1.0]
    return [
        HealthWarning(
            "error",
            f"dead:{row['name']}",
            f"Every unit of layer {row['name']} (ReLU, {row.get('units', '?')} units) outputs 0 for every image, "
            "so no gradient flows back through it and the layers before it stop learning. Start again with a "
            "lower learning rate (or add BatchNorm before it).",
            row["name"],
        )
        for row in dead
    ]


def _update_size(health: list[dict[str, Any]], config: dict[str, Any]) -> list[HealthWarning]:
    """Judged near the schedule's peak only: warm-up and the final decay make small updates on purpose."""
    peak = max((r.get("lr") or 0 for r in health), default=0)
    near_peak = [r for r in health if (r.get("lr") or 0) >= 0.5 * peak][-5:]
    medians = []
    for r in near_peak:
        ratios = [row["update_ratio"] for row in r.get("layers", []) if row.get("update_ratio") and not row.get("vectors_only")]
        if ratios:
            medians.append(statistics.median(ratios))
    if len(medians) < 3:
        return []
    ratio = statistics.median(medians)
    lr = f" ({config['lr']:g})" if isinstance(config.get("lr"), (int, float)) else ""
    losses = [r["loss"] for r in near_peak if isinstance(r.get("loss"), (int, float))]
    fitted = bool(losses) and statistics.median(losses) < FITTED_LOSS  # ~0 loss, ~0 gradients: small steps, whatever the lr
    if ratio < UPDATE_RATIO_LOW and not fitted:
        return [
            HealthWarning(
                "warning",
                "lr_low",
                f"Each step changes the weights by only ~{ratio:.0e} of their size (rule of "
                f"thumb: about 1e-3): the learning rate{lr} may be too low. Try it 10x higher, "
                "or use the learning-rate finder.",
            )
        ]
    if ratio > UPDATE_RATIO_HIGH:
        return [
            HealthWarning(
                "warning",
                "lr_high",
                f"Each step changes the weights by ~{ratio:.0%} of their size (rule of thumb: "
                f"about 0.1%): the learning rate{lr} may be too high. Try it 10x lower, or use "
                "the learning-rate finder.",
            )
        ]
    return []


def _stuck(records: list[dict[str, Any]], num_classes: int, *, explained: bool = False) -> list[HealthWarning]:
    """The loss of guessing: a model that predicts every class with probability 1/C has cross-entropy ln(C)."""
    if num_classes < 2 or not records:
        return []
    last = records[-1]
    steps = last.get("step") or 0
    if ((last.get("progress") or 0) < STUCK_AFTER_EPOCHS and steps < STUCK_AFTER_STEPS) or steps < STUCK_MIN_STEPS:
        return []
    recent = [r["loss"] for r in records[-max(3, len(records) // 4) :] if isinstance(r.get("loss"), (int, float))]
    if len(recent) < 3:
        return []
    guess, loss = math.log(num_classes), statistics.mean(recent)
    if not STUCK_FRACTION * guess <= loss <= 1.1 * guess:
        return []
    where = f"{last['progress']:.1f} epochs" if last.get("progress") else f"{last.get('step')} steps"
    # With a dead layer or exploding gradients the lr was too high: "try a higher one" would be the wrong advice.
    advice = (
        "The problem above is why: fix it first."
        if explained
        else "Try a higher learning rate (the learning-rate finder), more epochs or more images per class."
    )
    return [
        HealthWarning(
            "warning",
            "stuck",
            f"The training loss is stuck near {loss:.2f} ≈ ln({num_classes}) = {guess:.2f}, the "
            f"loss of guessing among {num_classes} classes: after {where} the model has learned "
            f"almost nothing. {advice}",
        )
    ]


def _test_above_train(epochs: list[dict[str, Any]], config: dict[str, Any]) -> list[HealthWarning]:
    pairs = [(e.get("train_acc"), e.get("test_acc")) for e in epochs]
    pairs = [(a, b) for a, b in pairs if isinstance(a, (int, float)) and isinstance(b, (int, float))]
    if not pairs or not all(test > train for train, test in pairs):
        return []
    why = ["training accuracy is averaged over the epoch while the model was still improving"]
    if config.get("augment", True):
        why.insert(0, "training images are randomly cropped and flipped (harder) while test images are not")
    if any(layer.get("type") == "Dropout" for layer in config.get("layers") or []) or config.get("model") in ("vgg16", "alexnet"):
        why.insert(-1, "dropout is switched off when testing")
    return [HealthWarning("info", "test_above_train", "Test accuracy above training accuracy is expected here: " + "; ".join(why) + ".")]


class Watcher:
    """Says each warning once, as records arrive (the command line's progress output).

    It runs inside the trainer, so it judges at most every `every_s` seconds (and at every epoch's end): on a GPU a
    log interval can be a few milliseconds, and judging a few hundred records each time would slow training.
    """

    def __init__(self, num_classes: int, config: dict[str, Any] | None = None, every_s: float = 5.0):
        self.num_classes, self.config, self.every_s = num_classes, config, every_s
        self.judged_at = -math.inf
        # Bounded, so judging stays cheap however long the run: the rules read the newest records and medians.
        self.health, self.steps = Thinned(HEALTH_POINTS), Thinned(HEALTH_POINTS)
        self.epochs: list[dict[str, Any]] = []
        self.said: set[str] = set()

    def add(self, record: dict[str, Any]) -> list[HealthWarning]:
        kind = record.get("kind")
        if kind == "step":  # steps only feed the stuck-loss rule (when health records are off); judged at the next epoch
            self.steps.add(record)
            return []
        if kind == "health":
            self.health.add(record)
            if time.monotonic() - self.judged_at < self.every_s:
                return []
        elif kind == "epoch":
            self.epochs.append(record)
        else:
            return []
        self.judged_at = time.monotonic()
        records = [*self.health.items(), *self.steps.items(), *self.epochs]
        new = [w for w in check(records, num_classes=self.num_classes, config=self.config) if w.code not in self.said]
        self.said.update(w.code for w in new)
        return new
