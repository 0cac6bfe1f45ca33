"""Turn an Optuna trial into a frozen :class:`DesignPoint`. This is the only caller of ``trial.suggest_*``."""

from __future__ import annotations

from typing import Any

import optuna

from models.cut_points import CutTable
from models.image_codec import IMAGE_CODECS, RAW
from objectives.design import DesignPoint
from search.config import SpaceConfig

SHARED_KEEP = "keep_L"  # the one step-2 parameter of space.shared_layer_keep=true
IMAGE_CODEC = "image_codec"  # at the point that sends the image: raw or a lossy codec
BOTTLENECK, RATE_LAMBDA = "bottleneck", "rate_lambda"  # where a feature map is cut: a learned bottleneck (0: none)


def quality_param(codec: str) -> str:
    """The quality parameter of one lossy image codec (one per codec: their scales differ, e.g. ``jpeg_quality``)."""
    return f"{codec}_quality"


def param_columns(table: CutTable, shared_layer_keep: bool = False, bottleneck: bool = False) -> tuple[str, ...]:
    """Every parameter name :func:`suggest` can produce for ``table``'s model, in export column order (codec and
    radio are columns of their own); ``bottleneck``: the space searches learned bottlenecks."""
    step2 = (SHARED_KEEP,) if shared_layer_keep else tuple(f"keep_L{c}" for c in table.earlier_convs)
    learned = (BOTTLENECK, RATE_LAMBDA) if bottleneck else ()
    return ("j", *learned, "bits", "keep_cut", *step2, "criterion", IMAGE_CODEC, *map(quality_param, IMAGE_CODECS))


def suggest(trial: optuna.trial.BaseTrial, space: SpaceConfig, table: CutTable) -> DesignPoint:
    """Sample a design point. Parameters that only exist for some j are only suggested there (conditional
    space): ``bits`` and ``keep_L<conv>`` where a feature map is cut (``table[j].is_split``), ``keep_cut`` where
    one conv makes the cut tensor (``table[j].conv``; a concatenation is pruned through its sources' keep_L).
    With ``space.shared_layer_keep`` one parameter ``keep_L`` is the step-2 ratio of every earlier conv. Where the
    node sends the image, ``image_codec`` (``space.image_codecs``) and, for a lossy one, its ``<codec>_quality``.
    Where ``space.bottleneck.latent`` is set and a feature map is cut, ``bottleneck`` (0 or a latent width) and,
    for a bottleneck, ``rate_lambda``: such a point is unpruned and has no ``bits``."""
    j = int(trial.suggest_categorical("j", space.partitions))
    bits, cut_keep, layer_keep = 8, 1.0, ()
    latent, lam = 0, 0.0
    criterion = space.criteria[0]
    image_codec, quality = RAW, 0
    if table[j].sends_image:
        image_codec = str(trial.suggest_categorical(IMAGE_CODEC, space.image_codecs))
        if image_codec != RAW:
            q = space.image_quality
            quality = int(trial.suggest_int(quality_param(image_codec), q.low, q.high, step=q.step))
    if table[j].is_split and space.bottleneck.latent:
        latent = int(trial.suggest_categorical(BOTTLENECK, [0, *space.bottleneck.latent]))
        if latent:
            lam = float(trial.suggest_categorical(RATE_LAMBDA, space.bottleneck.lambdas))
    if table[j].is_split and not latent:
        bits = int(trial.suggest_categorical("bits", space.bits))
        if table[j].conv is not None:
            cut_keep = float(trial.suggest_float("keep_cut", space.cut_keep.low, space.cut_keep.high,
                                                 log=space.cut_keep.log))
        if space.prune_earlier and space.shared_layer_keep and table[j].earlier_convs:
            r = float(trial.suggest_float(SHARED_KEEP, space.layer_keep.low, space.layer_keep.high,
                                          log=space.layer_keep.log))
            layer_keep = tuple((c, r) for c in table[j].earlier_convs)
        elif space.prune_earlier:
            layer_keep = tuple(
                (c, float(trial.suggest_float(f"keep_L{c}", space.layer_keep.low, space.layer_keep.high,
                                              log=space.layer_keep.log)))
                for c in table[j].earlier_convs)
        if len(space.criteria) > 1:
            criterion = str(trial.suggest_categorical("criterion", space.criteria))
    codec = str(trial.suggest_categorical("codec", space.codecs))
    radio = str(trial.suggest_categorical("radio", space.radios))
    return DesignPoint(j, bits, cut_keep, layer_keep, criterion, codec, radio, image_codec, quality, latent, lam)


def point_of(params: dict[str, Any], space: SpaceConfig, table: CutTable) -> DesignPoint:
    """The design point of a stored trial's parameters (a trial from before ``image_codec`` existed sent the raw
    image at j=0; one from before the space searched bottlenecks had none)."""
    return suggest(optuna.trial.FixedTrial(_completed(params, space, table)), space, table)


def _completed(params: dict[str, Any], space: SpaceConfig, table: CutTable) -> dict[str, Any]:
    """A stored trial's parameters with those of later axes at their old meaning (raw image, no bottleneck)."""
    if "j" not in params:
        return params
    p = table[int(params["j"])]
    if p.sends_image and IMAGE_CODEC not in params:
        params = {**params, IMAGE_CODEC: RAW}
    if p.is_split and space.bottleneck.latent and BOTTLENECK not in params:
        params = {**params, BOTTLENECK: 0}
    return params


def params_of(point: DesignPoint, space: SpaceConfig, table: CutTable) -> dict[str, Any]:
    """The trial parameters that :func:`suggest` would produce for ``point`` (to enqueue or add trials)."""
    p: dict[str, Any] = {"j": point.j}
    if table[point.j].sends_image:
        p[IMAGE_CODEC] = point.image_codec
        if point.coded_image:
            p[quality_param(point.image_codec)] = point.quality
    if table[point.j].is_split and space.bottleneck.latent:
        p[BOTTLENECK] = point.bottleneck
        if point.bottleneck:
            p[RATE_LAMBDA] = point.rate_lambda
    elif point.bottleneck:
        raise ValueError(f"{point}: a learned bottleneck needs space.bottleneck.latent to name its width")
    if table[point.j].is_split and not point.bottleneck:
        p["bits"] = point.bits
        if table[point.j].conv is not None:
            p["keep_cut"] = point.cut_keep
        if space.prune_earlier and space.shared_layer_keep and point.layer_keep:
            ratios = {r for _, r in point.layer_keep}
            if len(ratios) > 1:
                raise ValueError(f"{point}: space.shared_layer_keep=true needs one step-2 ratio, got {sorted(ratios)}")
            p[SHARED_KEEP] = ratios.pop()
        elif space.prune_earlier:
            p.update({f"keep_L{c}": r for c, r in point.layer_keep})
        if len(space.criteria) > 1:
            p["criterion"] = point.criterion
    p["codec"] = point.codec
    p["radio"] = point.radio
    return p


class _Recorder:
    """A trial that answers ``suggest_*`` from fixed parameters and records the distribution of each call - so the
    ranges exist in one place, :func:`suggest`. A parameter the caller left out is answered with its range's upper
    end (an unpruned ratio), so a partial set of parameters still follows the conditional space."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.distributions: dict[str, optuna.distributions.BaseDistribution] = {}

    def _take(self, name: str, dist: optuna.distributions.BaseDistribution, missing: Any) -> Any:
        self.distributions[name] = dist
        return self.params.get(name, missing)

    def suggest_categorical(self, name: str, choices) -> Any:
        return self._take(name, optuna.distributions.CategoricalDistribution(choices), choices[0])

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> Any:
        return self._take(name, optuna.distributions.FloatDistribution(low, high, step=step, log=log), high)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> Any:
        return self._take(name, optuna.distributions.IntDistribution(low, high, step=step, log=log), high)


def distributions_of(params: dict[str, Any], space: SpaceConfig,
                     table: CutTable) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of the given parameters (for ``optuna.trial.create_trial``), as :func:`suggest` declares
    them for that point."""
    rec = _Recorder(_completed(params, space, table))
    suggest(rec, space, table)  # type: ignore[arg-type] - the suggest_* calls are all it needs of a trial
    unknown = sorted(set(params) - set(rec.distributions))
    if unknown:
        raise KeyError(f"unknown parameter {unknown[0]!r}")
    return {k: rec.distributions[k] for k in params}


def baseline_points(space: SpaceConfig, table: CutTable, bits: int | None = None) -> list[DesignPoint]:
    """The image, all-in-node and every unpruned split point at ``bits`` (default: the space's largest bit width, which
    is the most likely to meet the mAP constraint and so gives the sampler feasible anchors in the split
    region), each with the first codec and radio; at j=0 the raw image (if searched) and each lossy image codec
    at every quality of ``space.image_anchors``; where the space has learned bottlenecks, at every split j the
    widest one narrower than the cut tensor (none where no width is) at the smallest rate weight."""
    b = max(space.bits) if bits is None else bits
    codec, radio = space.codecs[0], space.radios[0]
    pts = []
    for j in space.partitions:
        if table[j].is_split:
            if space.cut_keep.high < 1.0 or (space.prune_earlier and space.layer_keep.high < 1.0):
                continue  # an unpruned point is outside this space
            keeps = tuple((c, 1.0) for c in table[j].earlier_convs) if space.prune_earlier else ()
            pts.append(DesignPoint(j, b, 1.0, keeps, space.criteria[0], codec, radio))
            narrower = [k for k in space.bottleneck.latent if k < table[j].channels]
            if narrower:  # and the most accurate learned bottleneck: the widest that narrows the cut, lowest lambda
                pts.append(DesignPoint(j, 8, 1.0, (), space.criteria[0], codec, radio, bottleneck=max(narrower),
                                       rate_lambda=min(space.bottleneck.lambdas)))
        elif table[j].sends_image:
            pts += [DesignPoint(j, 8, 1.0, (), space.criteria[0], codec, radio, c, 0 if c == RAW else q)
                    for c in space.image_codecs for q in ([0] if c == RAW else space.image_anchors)]
        else:
            pts.append(DesignPoint(j, 8, 1.0, (), space.criteria[0], codec, radio))
    return pts
