"""``--backend auto``: the fastest configuration whose measured logit change is within a budget.

Per backbone the candidates are float32, fp16 weights, full-integer int8 with each way of
merging per-frame calibration ranges, and (when full int8 is over budget) mixed int8/float
configurations grown greedily from the per-op-group sensitivity table. Each candidate is
measured on held-out frames against the float32 files with the real (float) aggregation
head; then joint content/distortion configurations are tried in order of modelled time and
the first whose measured largest logit change is within the budget is chosen. float32 on
both nets always qualifies, so there is always an answer.

Time is modelled from the float graph (``sensitivity.cost_model``), not measured, so the
same inputs and budget give the same choice on a busy machine too. The aggregation head
stays float32: statically quantizing it breaks its scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from uvq_int8.convert import sensitivity as S
from uvq_int8.convert.calibration import RANGE_MERGES, FrameRanges, NetRanges
from uvq_int8.backends import AUTO, RECIPES

# 5: int8 candidates with the build's own histogram ranges take int8-static's refit of
# the 1x1 convolutions (uvq_int8.convert.refit; mixed ones take the full-int8 file's).
# 4: int8 candidates also leave a prefix of the net float (the stem, then block 1, ...):
# the high-resolution early groups lose the most under int8 (docs/backends.md). 3: up to
# promise.DEFAULT_LOOKS candidates confirmed in turn, each at the Bonferroni-split
# fraction; int8 candidates include the build's histogram ranges. 2: chosen on natural
# search frames and confirmed once on confirmation frames from other images
# (runtime/promise.py); the record holds the promise. 1: chosen and measured on the same
# (synthetic) frames, with no promise.
AUTO_VERSION = 5
# The longest float prefix tried: the stem and blocks 1-3, about half of the net's time.
MAX_FLOAT_PREFIX = 4
# Candidate recipes from fastest to slowest at equal modelled time; fp16 weights are
# dequantized at load and run as float32 compute, so float32 wins a tie with them.
_RECIPE_ORDER = ("static_wi8_ai8", "float32", "fp16_weights")

AUTO_BACKEND = AUTO  # registered in setup.cfg as uvq_int8.backends:AUTO


# --------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class NetChoice:
    """How one backbone file is made: a recipe, and for int8 the range merge and float groups."""

    recipe: str
    range_merge: str | None = None
    float_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.recipe not in _RECIPE_ORDER:
            raise ValueError(f"auto cannot make recipe {self.recipe!r}")
        if (self.recipe == "static_wi8_ai8") != (self.range_merge is not None):
            raise ValueError("a range merge goes with static int8 and only with it")
        object.__setattr__(self, "float_groups", tuple(self.float_groups))

    @property
    def label(self) -> str:
        text = RECIPES[self.recipe].label
        if self.range_merge:
            text += f"({self.range_merge}"
            if self.float_groups:
                text += "; float: " + ",".join(self.float_groups)
            text += ")"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "range_merge": self.range_merge,
                "float_groups": list(self.float_groups)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetChoice":
        return cls(data["recipe"], data.get("range_merge"), tuple(data.get("float_groups", ())))


def check_choice(choice: NetChoice, info: Any) -> None:
    """Refuse a file that is not what ``choice`` says (``info``: tflite_info.ModelInfo)."""
    from uvq_int8.convert.quantize import QuantizationError, check_quantized

    if choice.recipe != "static_wi8_ai8" or not choice.float_groups:
        check_quantized(choice.recipe, info)
        return
    # Mixed: some ops float (the input may stay float too), but int8 must be there.
    if info.quantized_tensors_by_dtype.get("int8", 0) == 0:
        raise QuantizationError(f"{choice.label}: no tensor was quantized to int8")


def make_model(choice: NetChoice, float_model: bytes, ranges: FrameRanges | NetRanges | None = None,
               ops: Sequence[S.OpInfo] | None = None) -> bytes:
    """The .tflite bytes for a choice (deterministic for the same inputs)."""
    from uvq_int8.convert import quantize

    if choice.recipe == "float32":
        return bytes(float_model)
    if choice.recipe == "fp16_weights":
        return quantize.quantize_model("fp16_weights", float_model)
    if ranges is None:
        raise ValueError("static int8 needs calibration ranges")
    model = S.quantize_static(float_model, ranges.merged(choice.range_merge), choice.float_groups,
                              ops)
    return with_refit(model, choice.range_merge, choice.float_groups, float_model, ranges, ops)


def with_refit(model: bytes, range_merge: str, float_groups: Sequence[str], float_model: bytes,
               ranges: FrameRanges | NetRanges, ops: Sequence[S.OpInfo] | None = None) -> bytes:
    """``model`` (static int8 with ``range_merge``, ``float_groups`` float) as the build
    makes it final: with the build's own ranges and its refit on (int8-static's recipe),
    the refit of the full-int8 file, whose weights a mixed file takes for the 1x1
    convolutions it keeps int8; else unchanged."""
    if not (isinstance(ranges, NetRanges) and ranges.refits
            and range_merge == ranges.settings.ranges):
        return model
    from uvq_int8.convert import refit as R

    if not float_groups:
        return ranges.refitted(model)
    full = S.quantize_static(float_model, ranges.merged(range_merge), (), ops)
    return R.transplant(ranges.refitted(full), model)[0]


@dataclass(frozen=True)
class Candidate:
    net: str
    choice: NetChoice
    modelled_ms: float
    measurement: S.Measurement  # the other backbone float32
    # Held-out features of this candidate: joint configurations then need only the head.
    features: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"net": self.net, "choice": self.choice.as_dict(), "label": self.choice.label,
                "modelled_ms": round(self.modelled_ms, 2),
                "logit_delta_max": self.measurement.logit_delta_max,
                "logit_delta_mean": self.measurement.logit_delta_mean,
                "feature_rel_error": self.measurement.feature_rel_error[self.net]}


@dataclass(frozen=True)
class JointTrial:
    content: str
    distortion: str
    modelled_ms: float
    logit_delta_max: float
    logit_delta_mean: float
    within_budget: bool


@dataclass
class AutoResult:
    """The chosen configuration and everything measured to choose it."""

    budget: float
    frames: int
    content: NetChoice
    distortion: NetChoice
    measurement: S.Measurement
    modelled_ms: dict[str, float]          # per frame: chosen, float32
    candidates: list[Candidate]
    trials: list[JointTrial]
    sensitivity: dict[str, S.SensitivityTable] = field(default_factory=dict)
    seconds: float = 0.0
    # Set by the confirmation (runtime/promise.py): the promise, and the searched choice when the
    # confirmation rejected it and float32 was taken instead.
    promise: Any = None
    rejected: dict[str, Any] | None = None
    content_basis: dict[str, Any] | None = None  # what the search and confirmation frames are
    # The next joint configurations within budget on the search frames, in the search's
    # order: what the confirmation looks at when the choice before it misses.
    # (content, distortion, search measurement, modelled ms per frame)
    alternatives: list[tuple[NetChoice, NetChoice, S.Measurement, float]] = field(
        default_factory=list, repr=False)
    rejected_looks: list[dict[str, Any]] = field(default_factory=list)
    # The cost model's int8 time ratio, and the instruction set it is for.
    cost: dict[str, Any] = field(default_factory=dict)
    # Per backbone, the refit its int8 candidates took (FrameRanges.refit's record).
    refits: dict[str, Any] = field(default_factory=dict)

    def reject(self, failed: Any, content: NetChoice | None = None,
               distortion: NetChoice | None = None,
               measurement: S.Measurement | None = None) -> None:
        """A confirmed choice (default: the current one) missed: keep it in the record."""
        choices = ({"content": content, "distortion": distortion} if content is not None
                   else self.choices)
        measured = measurement if measurement is not None else self.measurement
        self.rejected_looks.append({
            "labels": {net: c.label for net, c in choices.items()},
            "choices": {net: c.as_dict() for net, c in choices.items()},
            "search_logit_delta_max": measured.logit_delta_max,
            "confirmation": failed.as_dict()})
        self.rejected = self.rejected_looks[0]

    def take(self, content: NetChoice, distortion: NetChoice, measurement: S.Measurement,
             modelled_ms: float) -> None:
        """Make an alternative the choice (after the one before it was rejected)."""
        self.content, self.distortion, self.measurement = content, distortion, measurement
        self.modelled_ms = {**self.modelled_ms, "chosen": modelled_ms}

    def fall_back_to_float32(self, failed: Any) -> None:
        """No confirmed choice held: take float32 on both backbones (logit change 0 by
        definition), keeping the rejected choices."""
        from uvq_int8.runtime import promise as P

        if not self.rejected_looks or self.rejected_looks[-1]["confirmation"] != failed.as_dict():
            self.reject(failed)
        self.content = self.distortion = NetChoice("float32")
        self.measurement = S.Measurement(0.0, 0.0, {net: 0.0 for net in S.BACKBONES})
        self.modelled_ms = {**self.modelled_ms, "chosen": self.modelled_ms["float32"]}
        self.promise = P.float32_fallback(failed)

    @property
    def choices(self) -> dict[str, NetChoice]:
        return {"content": self.content, "distortion": self.distortion}

    @property
    def modelled_speedup(self) -> float:
        return self.modelled_ms["float32"] / self.modelled_ms["chosen"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "auto_version": AUTO_VERSION,
            "max_logit_delta": self.budget,
            "validation_frames": self.frames,
            "choices": {net: c.as_dict() for net, c in self.choices.items()},
            "labels": {net: c.label for net, c in self.choices.items()},
            "measured": {"logit_delta_max": self.measurement.logit_delta_max,
                         "logit_delta_mean": self.measurement.logit_delta_mean,
                         "feature_rel_error": dict(self.measurement.feature_rel_error)},
            "modelled_ms_per_frame": {k: round(v, 1) for k, v in self.modelled_ms.items()},
            "modelled_speedup": round(self.modelled_speedup, 3),
            "cost_model": self.cost,
            "refits": self.refits,
            "candidates": [c.as_dict() for c in self.candidates],
            "trials": [asdict(t) for t in self.trials],
            "sensitivity": {net: t.as_dict() for net, t in self.sensitivity.items()},
            "seconds": round(self.seconds, 1),
            "promise": self.promise.as_dict() if self.promise is not None else None,
            "rejected": self.rejected,
            "rejected_looks": self.rejected_looks,
            "content_basis": self.content_basis,
        }

    def recipe_options(self, net: str) -> dict[str, Any]:
        """What the manifest records for ``net``'s auto file (enough to make it again)."""
        return {"auto_version": AUTO_VERSION, "max_logit_delta": self.budget,
                "validation_frames": self.frames, **self.choices[net].as_dict(),
                "measured_logit_delta_max": self.measurement.logit_delta_max,
                "cost_isa": self.cost.get("isa"),
                "promise": self.promise.as_dict() if self.promise is not None else None}

    def summary(self) -> str:
        return describe(self.as_dict())


def describe(record: Mapping[str, Any]) -> str:
    """One line for a search record (``AutoResult.as_dict()``, as the manifest keeps it)."""
    m = record["measured"]
    text = (f"auto: content {record['labels']['content']}, distortion "
            f"{record['labels']['distortion']}: logit Δ max {m['logit_delta_max']:.4f} "
            f"(mean {m['logit_delta_mean']:.4f}) on {record['validation_frames']} search "
            f"frames, budget {record['max_logit_delta']:g}; modelled "
            f"{record['modelled_speedup']:.2f}x float32 end to end; search "
            f"{record['seconds']:.0f} s")
    if record.get("auto_version", 1) < 2:
        return text + ("; built by auto version 1: chosen and measured on the same synthetic "
                       "frames, no promise (rebuild for one)")
    if record.get("rejected"):
        text += (f"; rejected on confirmation: content {record['rejected']['labels']['content']}"
                 f", distortion {record['rejected']['labels']['distortion']}")
    if record.get("promise"):
        from uvq_int8.runtime import promise as P

        text += "; promise: " + P.Promise.from_dict(record["promise"]).sentence()
    return text


# --------------------------------------------------------------------------- search


def _rank(c: Candidate) -> tuple:
    m = c.measurement
    return (round(c.modelled_ms, 3), _RECIPE_ORDER.index(c.choice.recipe),
            m.logit_delta_max, m.logit_delta_mean, c.choice.label)


def net_candidates(net: str, float_model: bytes, ranges: FrameRanges | NetRanges | None,
                   held_out: S.HeldOut,
                   budget: float, merges: Sequence[str] = RANGE_MERGES, mixed: bool = True,
                   progress: Callable[[str], None] | None = None, sensitivity: bool = False,
                   int8_ratio: float = S.INT8_TIME_RATIO
                   ) -> tuple[list[Candidate], S.SensitivityTable | None]:
    """Measured candidates for one backbone (the other float32), and the sensitivity table
    if the mixed search needed it or ``sensitivity`` asked for it."""
    say = progress or (lambda _m: None)
    ops = S.graph_ops(float_model)
    costs = S.cost_model(ops, int8_ratio)
    groups = S.group_names(ops)
    out: list[Candidate] = []

    def add(choice: NetChoice, int8_groups: Sequence[str] = ()) -> Candidate:
        say(f"{net}: measuring {choice.label}")
        model = None if choice.recipe == "float32" else make_model(choice, float_model, ranges, ops)
        feats = held_out.features(net, model)
        other = "distortion" if net == "content" else "content"
        m = held_out.measure_features(**{net: feats, other: held_out.reference[other]})
        cand = Candidate(net, choice, costs.ms(int8_groups), m, feats)
        out.append(cand)
        return cand

    add(NetChoice("float32"))
    add(NetChoice("fp16_weights"))
    if ranges is None:
        return out, None
    full = [add(NetChoice("static_wi8_ai8", how), groups) for how in merges]
    best = min(full, key=lambda c: (c.measurement.logit_delta_max, c.measurement.logit_delta_mean,
                                    merges.index(c.choice.range_merge)))
    need_mixed = mixed and best.measurement.logit_delta_max > budget
    how = best.choice.range_merge

    def finish(model: bytes, floats: tuple[str, ...]) -> bytes:
        return with_refit(model, how, floats, float_model, ranges, ops)

    if not need_mixed:
        if not sensitivity:
            return out, None
        return out, S.sensitivity_table(net, float_model, ranges.merged(how), held_out,
                                        progress=say, int8_ratio=int8_ratio, finish=finish)
    table = S.sensitivity_table(net, float_model, ranges.merged(how), held_out, progress=say,
                                int8_ratio=int8_ratio, finish=finish)
    # Full int8 is over budget: grow an int8 set from the groups that are within budget on
    # their own, cheapest error per saved millisecond first, while the whole stays within.
    order = {g: i for i, g in enumerate(groups)}
    eligible = sorted((r for r in table.rows if r.logit_delta_max <= budget),
                      key=lambda r: ((r.logit_delta_max + r.logit_delta_mean)
                                     / max(r.time_share, 1e-6), order[r.group]))
    chosen: list[str] = []
    for r in eligible:
        trial = chosen + [r.group]
        floats = tuple(g for g in groups if g not in trial)
        cand = add(NetChoice("static_wi8_ai8", how, floats), trial)
        if cand.measurement.logit_delta_max > budget:
            break
        chosen = trial
    # And from the other side: all int8 but a float prefix, one group longer at a time,
    # until one is within budget. A longer prefix is only slower, so the walk also stops
    # at a prefix no faster than a candidate already within budget.
    fastest_within = min(c.modelled_ms for c in out if c.measurement.logit_delta_max <= budget)
    for k in range(1, min(MAX_FLOAT_PREFIX, len(groups) - 1) + 1):
        floats = tuple(groups[:k])
        if costs.ms(groups[k:]) >= fastest_within:
            break
        cand = add(NetChoice("static_wi8_ai8", how, floats), groups[k:])
        if cand.measurement.logit_delta_max <= budget:
            break
    return out, table


def choose(candidates: Sequence[Candidate], held_out: S.HeldOut, budget: float
           ) -> tuple[tuple[Candidate, Candidate], S.Measurement, list[JointTrial]]:
    """The joint configuration of least modelled time whose measured logit Δ max ≤ budget."""
    return choose_ranked(candidates, held_out, budget)[:3]


def choose_ranked(candidates: Sequence[Candidate], held_out: S.HeldOut, budget: float,
                  alternatives: int = 0
                  ) -> tuple[tuple[Candidate, Candidate], S.Measurement, list[JointTrial],
                             list[tuple[Candidate, Candidate, S.Measurement]]]:
    """``choose``, and up to ``alternatives`` more joint configurations within budget on
    the search frames, in the same order (what the confirmation may look at next)."""
    by_net = {net: sorted((c for c in candidates if c.net == net), key=_rank)
              for net in S.BACKBONES}
    pairs = [(c, d) for c in by_net["content"] for d in by_net["distortion"]
             if c.measurement.logit_delta_max <= budget
             and d.measurement.logit_delta_max <= budget]
    pairs.sort(key=lambda p: (round(p[0].modelled_ms + p[1].modelled_ms, 3),
                              _rank(p[1]), _rank(p[0])))
    trials: list[JointTrial] = []
    found: list[tuple[Candidate, Candidate, S.Measurement]] = []
    for c, d in pairs:
        m = held_out.measure_features(_features(c, held_out), _features(d, held_out))
        ok = m.logit_delta_max <= budget
        trials.append(JointTrial(c.choice.label, d.choice.label,
                                 c.modelled_ms + d.modelled_ms, m.logit_delta_max,
                                 m.logit_delta_mean, ok))
        if ok:
            found.append((c, d, m))
            if len(found) > alternatives:
                break
    if not found:
        raise AssertionError("float32 on both nets always fits a non-negative budget")
    (c, d, m), rest = found[0], found[1:]
    return (c, d), m, trials, rest


def _features(c: Candidate, held_out: S.HeldOut) -> np.ndarray:
    return held_out.reference[c.net] if c.features is None else c.features


def search(float_models: Mapping[str, bytes], ranges: Mapping[str, FrameRanges | NetRanges | None],
           held_out: S.HeldOut, budget: float, merges: Sequence[str] = RANGE_MERGES,
           mixed: bool = True, progress: Callable[[str], None] | None = None,
           sensitivity: bool = False, alternatives: int = 0,
           cost: Mapping[str, Any] | None = None) -> AutoResult:
    """Measure the candidates of both backbones and choose the fastest within ``budget``.

    ``float_models`` holds the float32 content and distortion flatbuffers (the files the
    held-out reference was computed with); ``ranges`` their per-frame calibration.
    """
    if not budget >= 0:
        raise ValueError(f"the logit budget must be a non-negative number, got {budget}")
    started = time.perf_counter()
    cost = dict(cost or {"isa": None, "int8_time_ratio": S.INT8_TIME_RATIO,
                         "source": "default"})
    ratio = float(cost["int8_time_ratio"])
    candidates: list[Candidate] = []
    tables: dict[str, S.SensitivityTable] = {}
    for net in ("distortion", "content"):  # the slow net first: its answer matters most
        cands, table = net_candidates(net, float_models[net], ranges.get(net), held_out, budget,
                                      merges, mixed, progress, sensitivity, ratio)
        candidates += cands
        if table is not None:
            tables[net] = table
    (c, d), m, trials, rest = choose_ranked(candidates, held_out, budget, alternatives)
    costs = {net: S.cost_model(S.graph_ops(float_models[net]), ratio) for net in S.BACKBONES}
    modelled = {"chosen": S.FRAME_OVERHEAD_MS + c.modelled_ms + d.modelled_ms,
                "float32": S.FRAME_OVERHEAD_MS + sum(x.float32_ms for x in costs.values())}
    result = AutoResult(budget, len(held_out.frames), c.choice, d.choice, m, modelled,
                        candidates, trials, tables, time.perf_counter() - started, cost=cost,
                        refits={net: r.refit_record for net, r in ranges.items()
                                if isinstance(r, NetRanges) and r.refit_record})
    result.alternatives = [(a.choice, b.choice, mm,
                            S.FRAME_OVERHEAD_MS + a.modelled_ms + b.modelled_ms)
                           for a, b, mm in rest]
    return result
