"""Which parts of a backbone int8 hurts: op groups, a cost model, and held-out measurement.

A converted ContentNet/DistortionNet is cut into op groups by the module path that
litert-torch writes into every tensor name: ``stem`` (the first ConvBNAct), ``block1`` ..
``block16`` (the MBConv blocks), ``head`` (the last 2x2 convolution) and ``tail``
(DistortionNet's max-pool and patch tiling, or the output). The sensitivity table quantizes
one group at a time to full-integer int8, leaves the rest float, and measures the change of
the real aggregation head's logit on held-out frames.

The cost model predicts a configuration's time from the float graph alone, so that a
search ranks candidates the same way on a busy machine as on an idle one: on XNNPACK with
2 threads the backbones are dominated by element-wise traffic (SiLU on large maps), and a
full-integer op runs at ~0.30 of its float32 time (research notes: modelled and measured
mixed configurations agreed to within 0.06 of float32 time).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from uvq_int8.runtime import frames as F

BACKBONES = ("content", "distortion")
# Module paths in litert-torch tensor names: ".../Sequential_features/uvq_int8.convert.nets.MBConv_3/..."
_GROUP_RE = re.compile(
    r"Sequential_features/(?:[\w.]*\.)?(ConvBNAct_0|MBConv_(\d+)|SameConv_\d+)[/;]")
# Cost model constants, fitted on a 2-core AVX-512 machine with XNNPACK (benchmarks/
# breakdown.py times each net): milliseconds per MAC and per element written (or read by a
# MUL/ADD/MEAN), and the ratio of full-integer to float32 time. Only that ratio decides
# the ranking of candidates, and it depends on the instruction set (XNNPACK's int8 kernels
# gain most from VNNI): per ISA tier (``util.isa_name``), the ratio measured there by
# benchmarks/breakdown.py (2 threads, median of interleaved calls; docs/benchmarks.md); on
# any other machine the build times the two DistortionNet files once (``measure_int8_ratio``).
MS_PER_GMAC = 9.0
MS_PER_GELEMENT = 600.0
INT8_TIME_RATIOS = MappingProxyType({"avx512_vnni": 0.30, "avx2": 0.68})
INT8_TIME_RATIO = INT8_TIME_RATIOS["avx512_vnni"]
# Per frame and independent of the backend: decode at fps=1 and preprocessing (ms, same machine).
FRAME_OVERHEAD_MS = 210.0
_ELEMENTWISE_INPUTS = ("MUL", "ADD", "MEAN")


def group_of(tensor_name: str) -> str:
    """Op group of an op, from its output tensor's name."""
    m = _GROUP_RE.search(tensor_name)
    if not m:
        return "tail"
    name = m.group(1)
    if name == "ConvBNAct_0":
        return "stem"
    if m.group(2):
        return f"block{int(m.group(2))}"
    return "head"


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str
    output: str
    group: str
    macs: int
    elements: int
    spatial: int = 0  # height x width of a 4-D output (1 in a squeeze-excitation path)


def graph_ops(model: bytes) -> list[OpInfo]:
    """Ops of the main subgraph with their group, MACs and elements moved."""
    from uvq_int8.runtime.tflite_info import builtin_op_names, load_schema

    m = load_schema().Model.GetRootAs(model, 0)
    names = builtin_op_names()
    codes = []
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i)
        codes.append(names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "?"))
    sg = m.Subgraphs(0)

    def shape(t: int) -> list[int]:
        tensor = sg.Tensors(t)
        return [int(tensor.Shape(i)) for i in range(tensor.ShapeLength())]

    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        kind = codes[op.OpcodeIndex()]
        out = int(op.Outputs(0))
        name = sg.Tensors(out).Name().decode("utf-8", "replace")
        n = int(np.prod(shape(out)))
        macs = 0
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.InputsLength() > 1:
            w = shape(int(op.Inputs(1)))  # conv [O,kh,kw,I], depthwise [1,kh,kw,O]
            macs = n * w[1] * w[2] * (w[3] if kind == "CONV_2D" else 1)
        elements = n
        if kind in _ELEMENTWISE_INPUTS and op.InputsLength():
            elements += int(np.prod(shape(int(op.Inputs(0)))))
        dims = shape(out)
        spatial = dims[1] * dims[2] if len(dims) == 4 else 0
        ops.append(OpInfo(i, kind, name, group_of(name), macs, elements, spatial))
    return ops


def group_names(ops: Sequence[OpInfo]) -> list[str]:
    """Groups in graph order."""
    seen: dict[str, None] = {}
    for op in ops:
        seen.setdefault(op.group, None)
    return list(seen)


def se_outputs(ops: Sequence[OpInfo]) -> tuple[str, ...]:
    """Output names of the squeeze-excitation paths' ops after the pooling: the 1x1 ops of
    the MBConv blocks (two convolutions, a SiLU and the gate's sigmoid per block). They
    hold a few hundred values per frame, so float32 there costs next to nothing."""
    return tuple(op.output for op in ops
                 if op.group.startswith("block") and op.spatial == 1 and op.op != "MEAN")


def group_regex(ops: Sequence[OpInfo], groups: Iterable[str],
                outputs: Iterable[str] = ()) -> str | None:
    """A regex matching exactly the output tensor names of the ops in ``groups``.

    ai-edge-quantizer searches an override's regex in each op's "scope": its output tensor
    names joined by ";", with a ";" at the end. Exact names make the rule independent of
    how a converter spells module paths.
    """
    wanted = set(groups)
    names = sorted({op.output for op in ops if op.group in wanted} | set(outputs))
    if not names:
        return None
    return "^" + _trie_pattern(names) + ";$"


def _trie_pattern(names: Sequence[str]) -> str:
    """A regex matching exactly ``names``, their shared prefixes written once.

    The names are module paths of a few hundred characters that share most of their
    length; a plain alternation of them is ~100 kB, which ``re`` takes ~0.15 s to compile,
    and the quantizer compiles it again on every call.
    """
    trie: dict = {}
    for name in names:
        node = trie
        for ch in name:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        ends = "" in node
        branches = sorted(ch for ch in node if ch)
        if not branches:
            return ""
        if len(branches) == 1 and not ends:
            # A run of single-child nodes: written out directly.
            run, ch = [], branches[0]
            while True:
                run.append(re.escape(ch))
                node = node[ch]
                keys = [k for k in node if k]
                if len(keys) != 1 or "" in node:
                    break
                ch = keys[0]
            return "".join(run) + emit(node)
        body = "|".join(re.escape(ch) + emit(node[ch]) for ch in branches)
        return f"(?:{body})" + ("?" if ends else "")

    return emit(trie)


@dataclass(frozen=True)
class CostModel:
    """Predicted milliseconds per frame of one net (reference machine, 2 threads)."""

    float_ms: Mapping[str, float]  # group -> ms in float32
    int8_ratio: float = INT8_TIME_RATIO  # full-integer time / float32 time

    @property
    def float32_ms(self) -> float:
        return float(sum(self.float_ms.values()))

    def ms(self, int8_groups: Iterable[str] = ()) -> float:
        chosen = set(int8_groups)
        return float(sum(t * (self.int8_ratio if g in chosen else 1.0)
                         for g, t in self.float_ms.items()))

    def share(self, group: str) -> float:
        return self.float_ms.get(group, 0.0) / self.float32_ms


def cost_model(ops: Sequence[OpInfo], int8_ratio: float = INT8_TIME_RATIO) -> CostModel:
    ms: dict[str, float] = {}
    for op in ops:
        ms[op.group] = ms.get(op.group, 0.0) + (op.macs * MS_PER_GMAC
                                                + op.elements * MS_PER_GELEMENT) / 1e9
    return CostModel(ms, int8_ratio)


def measure_int8_ratio(net: str, float_model: bytes, int8_model: bytes,
                       inputs: Sequence[np.ndarray], threads: int = 2, rounds: int = 5) -> float:
    """Median over interleaved calls of (full-integer time / float32 time) on this machine."""
    import time

    from uvq_int8 import runtime

    with tempfile.TemporaryDirectory(prefix="uvq-int8-timing-") as tmp:
        runners = []
        for name, data in (("float", float_model), ("int8", int8_model)):
            path = Path(tmp) / f"{name}.tflite"
            path.write_bytes(data)
            runners.append(runtime.NetRunner(net, path, threads))
        ratios = []
        for runner in runners:
            runner.run(inputs[0])  # warm-up
        for _ in range(rounds):
            for x in inputs:
                ms = []
                for runner in runners:
                    started = time.perf_counter()
                    runner.run(x)
                    ms.append(time.perf_counter() - started)
                ratios.append(ms[1] / ms[0])
    return float(np.median(ratios))


def cost_constants(isa: str, measure: Callable[[], float]) -> dict[str, Any]:
    """The int8 time ratio for ``isa``: the table's, else ``measure()`` on this machine."""
    if isa in INT8_TIME_RATIOS:
        return {"isa": isa, "int8_time_ratio": INT8_TIME_RATIOS[isa],
                "source": "table (sensitivity.INT8_TIME_RATIOS)"}
    return {"isa": isa, "int8_time_ratio": round(measure(), 4),
            "source": "timed on the build machine (DistortionNet, float32 vs full int8)"}


# Weight-range algorithms ai-edge-quantizer offers for the convolutions (activations keep
# their min/max calibration): "MSE" registers only weight-bearing ops, "OCTAV" also ADD,
# MUL and LOGISTIC, so both are set per op kind rather than as the recipe's default key.
def quantize_static(float_model: bytes, qsvs: Mapping[str, Any],
                    float_groups: Iterable[str] = (), ops: Sequence[OpInfo] | None = None,
                    weight_algorithm: str = "minmax", float_outputs: Iterable[str] = ()) -> bytes:
    """Full-integer int8 (``static_wi8_ai8``) with the ops of ``float_groups`` left float,
    and the convolutions' weight ranges from ``weight_algorithm``."""
    from uvq_int8.util import quiet_fd2
    from uvq_int8.convert.quantize import QuantizationError, quantizer_modules, weight_rules

    float_groups = tuple(float_groups)
    _, qtyping, quantizer, recipe, _, algorithms = quantizer_modules()
    regex = group_regex(ops if ops is not None else graph_ops(float_model), float_groups,
                        float_outputs)
    rules = weight_rules(recipe.static_wi8_ai8(), weight_algorithm)
    try:
        with quiet_fd2():
            q = quantizer.Quantizer(bytearray(float_model), rules)
            if regex:
                q.update_quantization_recipe(regex, qtyping.TFLOperationName.ALL_SUPPORTED,
                                             algorithm_key=algorithms.NO_QUANTIZE)
            result = q.quantize(calibration_result=dict(qsvs), enable_progress_bar=False,
                                enable_progress_report=False)
    except Exception as exc:
        raise QuantizationError(f"ai-edge-quantizer failed (static int8, float groups "
                                f"{list(float_groups) or 'none'}): {exc}") from None
    return bytes(result.quantized_model)


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Measurement:
    """A candidate's effect on held-out frames, against the float32 files."""

    logit_delta_max: float
    logit_delta_mean: float
    # Relative L2 error of each net's features (mean over frames); 0 for a float32 net.
    feature_rel_error: Mapping[str, float] = field(default_factory=dict)


class HeldOut:
    """Held-out frames with the float32 reference; measures candidate nets against it.

    Features of every measured model are kept (keyed by the model's bytes), so a joint
    content/distortion configuration costs only the aggregation head.
    """

    def __init__(self, float_paths: Mapping[str, str | Path], frames: Sequence[np.ndarray],
                 threads: int = 2) -> None:
        from uvq_int8 import runtime

        if not len(frames):
            raise ValueError("no held-out frames")
        self.frames = [np.asarray(f) for f in frames]
        self.threads = threads
        self._aggregation = runtime.NetRunner("aggregation", float_paths["aggregation"], threads)
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self.reference = {net: self._run(net, Path(float_paths[net])) for net in BACKBONES}
        self.reference_logits = self._logits(self.reference["content"],
                                             self.reference["distortion"])

    def _run(self, net: str, path: Path) -> np.ndarray:
        from uvq_int8 import runtime

        runner = runtime.NetRunner(net, path, self.threads)
        outs = []
        for frame in self.frames:
            content, patches = F.net_inputs(frame)
            outs.append(runner.run(content if net == "content" else patches)[0])
        return np.stack(outs)

    def features(self, net: str, model: bytes | None) -> np.ndarray:
        """[frames, ...] features of ``model`` (None: the float32 reference)."""
        if model is None:
            return self.reference[net]
        key = (net, hashlib.sha256(model).hexdigest())
        if key not in self._cache:
            with tempfile.TemporaryDirectory(prefix="uvq-int8-heldout-") as tmp:
                path = Path(tmp) / f"{net}.tflite"
                path.write_bytes(model)
                self._cache[key] = self._run(net, path)
        return self._cache[key]

    def _logits(self, content: np.ndarray, distortion: np.ndarray) -> np.ndarray:
        logits = []
        for c, d in zip(content, distortion):
            outs = self._aggregation.run(c, d)
            if len(outs) < 2:  # the logit is needed: the score saturates in float32
                raise ValueError("the float32 aggregation file has no logit output; rebuild it")
            logits.append(float(outs[1].reshape(-1)[0]))
        return np.array(logits, dtype=np.float64)

    def measure(self, content: bytes | None = None,
                distortion: bytes | None = None) -> Measurement:
        """Both nets' candidates together (None: that net's float32 file)."""
        return self.measure_features(self.features("content", content),
                                     self.features("distortion", distortion))

    def logit_deltas(self, content: np.ndarray, distortion: np.ndarray) -> np.ndarray:
        """Per-frame |logit - float32 logit| for the given features."""
        return np.abs(self._logits(content, distortion) - self.reference_logits)

    def measure_features(self, content: np.ndarray, distortion: np.ndarray) -> Measurement:
        feats = {"content": content, "distortion": distortion}
        delta = self.logit_deltas(feats["content"], feats["distortion"])
        errors = {}
        for net, f in feats.items():
            ref = self.reference[net].reshape(len(f), -1)
            diff = f.reshape(len(f), -1) - ref
            errors[net] = float(np.mean(np.linalg.norm(diff, axis=1)
                                        / np.maximum(np.linalg.norm(ref, axis=1), 1e-12)))
        return Measurement(float(delta.max()), float(delta.mean()), errors)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class GroupSensitivity:
    group: str
    ops: int
    time_share: float            # of the net's float32 time (cost model)
    logit_delta_max: float       # this group alone in int8, the rest float
    logit_delta_mean: float
    feature_rel_error: float


@dataclass
class SensitivityTable:
    net: str
    frames: int
    rows: list[GroupSensitivity]
    all_int8: GroupSensitivity | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"net": self.net, "frames": self.frames, "rows": [asdict(r) for r in self.rows],
                "all_int8": asdict(self.all_int8) if self.all_int8 else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SensitivityTable":
        rows = [GroupSensitivity(**r) for r in data["rows"]]
        whole = data.get("all_int8")
        return cls(data["net"], int(data["frames"]), rows,
                   GroupSensitivity(**whole) if whole else None)

    def to_markdown(self) -> str:
        lines = [f"{self.net} net, each op group alone in int8 (rest float32), "
                 f"{self.frames} held-out frames",
                 "",
                 "| op group | ops | share of float32 time | logit Δ max | logit Δ mean | "
                 "feature rel. error |",
                 "|---|---|---|---|---|---|"]
        rows = list(self.rows) + ([self.all_int8] if self.all_int8 else [])
        for r in rows:
            lines.append(f"| {r.group} | {r.ops} | {r.time_share:.1%} | {r.logit_delta_max:.4f} "
                         f"| {r.logit_delta_mean:.4f} | {r.feature_rel_error:.4f} |")
        return "\n".join(lines)


def sensitivity_table(net: str, float_model: bytes, qsvs: Mapping[str, Any], held_out: HeldOut,
                      groups: Sequence[str] | None = None,
                      progress: Callable[[str], None] | None = None,
                      int8_ratio: float = INT8_TIME_RATIO,
                      finish: Callable[[bytes, tuple[str, ...]], bytes] | None = None
                      ) -> SensitivityTable:
    """Quantize each op group alone (the rest float) and measure it on ``held_out``;
    ``finish(model, float_groups)``, when given, makes each file final first (auto: the
    build's refit)."""
    if net not in BACKBONES:
        raise ValueError(f"sensitivity is defined for {BACKBONES}, not {net!r}")
    ops = graph_ops(float_model)
    costs = cost_model(ops, int8_ratio)
    everything = group_names(ops)
    groups = list(groups) if groups is not None else everything
    counts = {g: sum(1 for op in ops if op.group == g) for g in everything}

    def row(name: str, int8_groups: Sequence[str]) -> GroupSensitivity:
        floats = tuple(g for g in everything if g not in int8_groups)
        model = quantize_static(float_model, qsvs, floats, ops)
        if finish is not None:
            model = finish(model, floats)
        m = held_out.measure(**{net: model})
        share = sum(costs.share(g) for g in int8_groups)
        return GroupSensitivity(name, sum(counts[g] for g in int8_groups), share,
                                m.logit_delta_max, m.logit_delta_mean, m.feature_rel_error[net])

    rows = []
    for i, g in enumerate(groups):
        if progress:
            progress(f"{net} sensitivity {i + 1}/{len(groups)}: {g}")
        rows.append(row(g, [g]))
    whole = row("all groups", everything)
    return SensitivityTable(net, len(held_out.frames), rows, whole)
