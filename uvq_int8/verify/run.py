"""Measuring backends: accuracy against float32 (and PyTorch), coverage, size, speed.

``run_verify`` returns a ``VerifyReport``; ``check_thresholds`` fills in each
backend's ``checks`` against the limits. Rendering (JSON, Markdown, plot) lives in
``uvq_int8.verify.report``.
Everything is computed in one pass over the frames, so each frame is decoded
and preprocessed once and every backend sees exactly the same net inputs.
PyTorch is imported only when checkpoints are given.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from uvq_int8 import runtime
from uvq_int8.backends import (ALL, NETS, BackendLike, backends_with_files, discover, get_backend,
                               parse_spec)
from uvq_int8.errors import ModelFilesError, UserError
from uvq_int8.runtime import frames as F
from uvq_int8.runtime import tflite_info
from uvq_int8.runtime.interpreter import OUTPUT_ROLES
from uvq_int8.util import machine_info
from uvq_int8.verify.guide import guide_comparison
from uvq_int8.verify.inputs import (Clip, TorchReference, manifest_file_entries, unique_clip_names,
                                    describe_inputs, random_inputs)
from uvq_int8.verify.metrics import StatsAccumulator, plcc, srcc
from uvq_int8.verify.results import (BASELINE, INPUT_KINDS, OUTPUTS, SCHEMA_VERSION, BackendReport,
                                     ClipScores, EndToEnd, FileInfo, Latency, VerifyReport)

Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class VerifySettings:
    backends: tuple[str, ...]
    model_dir: Path
    threads: int
    random_inputs: int = 2
    seed: int = 0
    warmup: int = 1
    runs: int = 5
    check_manifest: bool = True


def select_backends(requested: Sequence[str] | None, model_dir: Path) -> list[BackendLike]:
    """Backends to verify; float32 (the baseline) always first.

    Each requested value is a backend spec (``parse_spec``): names, ``all`` or one per-net
    mix. Nothing requested, or ``all``: ``backends.backends_with_files``.
    """
    available = discover()
    items: list[str] = []  # backend names and mix specs, in the order given
    for value in requested or [ALL]:
        spec = parse_spec(value)
        items += [value] if spec.mix is not None else list(spec.names)
    chosen: list[BackendLike] = []
    if ALL in items:
        chosen = backends_with_files(model_dir, available)
        if not chosen:
            raise ModelFilesError(f"no backend has model files in {model_dir}; "
                                  f"{runtime.BUILD_HINT} --out {model_dir}")
    for item in items:
        if item == ALL:
            continue
        backend = get_backend(item, available)
        if backend.name not in {b.name for b in chosen}:
            chosen.append(backend)
    if BASELINE not in {b.name for b in chosen}:
        chosen.insert(0, get_backend(BASELINE, available))
    chosen.sort(key=lambda b: b.name != BASELINE)
    return chosen


def load_backends(settings: VerifySettings) -> tuple[list[BackendLike], dict[str, runtime.Models]]:
    """Select and load every backend (cached per process); a bad file raises ModelFilesError."""
    specs = select_backends(settings.backends, settings.model_dir)
    loaded = {spec.name: runtime.load_models(spec, settings.model_dir, settings.threads,
                                             check_manifest=settings.check_manifest)
              for spec in specs}
    return specs, loaded


def _file_infos(models: runtime.Models, baseline: runtime.Models | None) -> dict[str, FileInfo]:
    infos = {}
    manifests: dict[Path, dict[str, dict[str, Any]]] = {}
    for net in NETS:
        path = models.paths[net]
        if path.parent not in manifests:
            manifests[path.parent] = manifest_file_entries(path.parent)
        size = path.stat().st_size
        base_size = baseline.paths[net].stat().st_size if baseline else None
        info = tflite_info.read_model_info(path)
        infos[net] = FileInfo(net, str(path), size, models.sha256[net],
                              size / base_size if base_size else None, info.tensors_by_dtype,
                              sum(info.tensors_by_dtype.values()), info.quantized_tensors,
                              info.quantized_tensors_by_dtype, info.conv_weights_by_dtype,
                              info.ops_by_name, manifests[path.parent].get(path.name))
    return infos


def _auto_record(files: Mapping[str, FileInfo]) -> dict[str, Any] | None:
    """The auto search record behind these files, if the content file was made by it."""
    from uvq_int8.runtime import manifest as mf

    path = Path(files["content"].path)
    try:
        return mf.auto_record(mf.load(path.parent), path.name)
    except mf.ManifestError:
        return None


class _Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "_Timer":
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t


def _empty_net_stats(references: Iterable[str]) -> dict:
    return {net: {kind: {ref: {o: StatsAccumulator() for o in OUTPUTS[net]} for ref in references}
                  for kind in INPUT_KINDS} for net in NETS}


class _Measurement:
    """The state of one verify run: loaded backends, accumulators, per-frame records."""

    def __init__(self, settings: VerifySettings, clips: Sequence[Clip],
                 torch_ref: TorchReference | None, step: Progress) -> None:
        self.settings, self.clips, self.torch_ref, self.step = settings, clips, torch_ref, step
        self.specs, self.loaded = load_backends(settings)
        self.base = self.loaded[BASELINE]
        references = ["vs_float32"] + (["vs_pytorch"] if torch_ref else [])
        self.acc = {name: _empty_net_stats(references) for name in self.loaded}
        self.frame_ms: dict[str, list[float]] = {name: [] for name in self.loaded}
        self.logits: dict[str, dict[str, list[float]]] = {name: {} for name in self.loaded}
        self.torch_logits: dict[str, list[float]] = {}
        self.latency_ms = {name: {net: [] for net in NETS} for name in self.loaded}

    def random_pass(self) -> None:
        """Random inputs per net: the old guide's test, kept to compare with its numbers."""
        total, done = self.settings.random_inputs * len(NETS), 0
        for i in range(self.settings.random_inputs):
            for net in NETS:
                inputs = random_inputs(net, self.settings.seed * 1000 + i * len(NETS)
                                       + NETS.index(net))
                # Outputs by role: a file's order (score, logit) is not OUTPUTS' order.
                refs = {"vs_float32": named_outputs(self.base, net, inputs)}
                if self.torch_ref:
                    refs["vs_pytorch"] = dict(zip(OUTPUT_ROLES[net],
                                                  self.torch_ref.run(net, *inputs)))
                for name, models in self.loaded.items():
                    outs = (refs["vs_float32"] if name == BASELINE
                            else named_outputs(models, net, inputs))
                    for ref_key, ref_outs in refs.items():
                        for output in OUTPUTS[net]:
                            self.acc[name][net]["random"][ref_key][output].add(ref_outs[output],
                                                                                outs[output])
                done += 1
                self.step("random inputs", done, total)

    def frame_pass(self) -> None:
        """Every frame through every backend: per-net errors on identical inputs, end to end."""
        total, done = sum(len(c.frames) for c in self.clips), 0
        for clip in self.clips:
            for name in self.loaded:
                self.logits[name][clip.name] = []
            if self.torch_ref:
                self.torch_logits[clip.name] = []
            for frame in clip.frames:
                self._frame(clip.name, frame)
                done += 1
                self.step("frames", done, total)

    def _frame(self, clip: str, frame: np.ndarray) -> None:
        # Each backend scores the frame on the runtime path uvq takes (Models.features,
        # Models.aggregate), and that is what is timed.
        f32: dict[str, Any] = {}
        torch_out = None
        for name, models in self.loaded.items():  # float32 first: the others need its features
            with _Timer() as run:
                c, d = models.features(frame)
                agg = models.aggregate(c, d)
            self.frame_ms[name].append(run.seconds * 1000)
            self.logits[name][clip].append(agg[0])
            if name == BASELINE:
                f32 = {"content": c, "distortion": d, "aggregation": agg}
                if self.torch_ref:
                    tc, td, tl = self.torch_ref.frame(frame)
                    self.torch_logits[clip].append(tl)
                    outs = self.torch_ref.run("aggregation", c, d)
                    torch_out = {"content": tc, "distortion": td,
                                 "aggregation": (_logit(outs), float(outs[0].reshape(-1)[0]))}
            # The aggregation net alone is fed float32's features, so only its own error shows.
            agg_own = agg if name == BASELINE else \
                models.aggregate(f32["content"], f32["distortion"])
            refs = {"vs_float32": f32}
            if torch_out is not None:
                refs["vs_pytorch"] = torch_out
            a = self.acc[name]
            for key, ref in refs.items():
                a["content"]["frames"][key]["features"].add(ref["content"], c)
                a["distortion"]["frames"][key]["features"].add(ref["distortion"], d)
                _add_agg(a["aggregation"]["frames"][key], ref["aggregation"], agg_own)

    def latency_pass(self) -> None:
        """Per-net latency on the first frame, each net fed what Models.features feeds it
        (the pixel table for a full-integer DistortionNet); median after warm-up."""
        frame = self.clips[0].frames[0]
        c, d = self.base.features(frame)
        inputs = {}
        for name, models in self.loaded.items():
            content_in, patches = models.inputs_for(frame)
            inputs[name] = {"content": (content_in,), "distortion": (patches,),
                            "aggregation": (c, d)}
        rounds = self.settings.warmup + self.settings.runs
        total, done = len(self.loaded) * len(NETS) * rounds, 0
        # Round-robin over backends, so a load change on a shared machine hits them alike.
        for r in range(rounds):
            for name, models in self.loaded.items():
                for net in NETS:
                    with _Timer() as t:
                        models.run_net(net, *inputs[name][net])
                    if r >= self.settings.warmup:
                        self.latency_ms[name][net].append(t.seconds * 1000)
                    done += 1
                    self.step("latency", done, total)

    def backend_report(self, spec: BackendLike) -> BackendReport:
        name, models = spec.name, self.loaded[spec.name]
        clip_names = [c.name for c in self.clips]
        files = _file_infos(models, self.base)
        size = sum(f.size_bytes for f in files.values())
        base_size = sum(p.stat().st_size for p in self.base.paths.values())
        e2e = {"vs_float32": _end_to_end("float32", self.logits[BASELINE], self.logits[name],
                                         clip_names)}
        if self.torch_ref:
            e2e["vs_pytorch"] = _end_to_end("pytorch", self.torch_logits, self.logits[name],
                                            clip_names)
        ms = self.frame_ms[name]
        base_ms = self.frame_ms[BASELINE]
        fms = float(np.median(ms)) if ms else None
        lat = Latency(
            self.settings.threads, self.settings.warmup, self.settings.runs,
            {net: float(np.median(v)) for net, v in self.latency_ms[name].items() if v},
            {net: float(np.min(v)) for net, v in self.latency_ms[name].items() if v},
            fms, 1000.0 / fms if fms else None,
            float(np.median(base_ms)) / fms if fms and base_ms else None)
        nets_out = {net: {kind: {ref: {o: s.result() for o, s in outs.items()}
                                 for ref, outs in by_ref.items()}
                          for kind, by_ref in by_kind.items()}
                    for net, by_kind in self.acc[name].items()}
        return BackendReport(
            name=name, description=getattr(spec, "description", ""),
            recipes=dict(getattr(spec, "recipes", {}) or {}), files=files, size_bytes=size,
            size_vs_float32=size / base_size if base_size else None,
            reduction_pct=(1 - size / base_size) * 100 if base_size else None,
            nets=nets_out, clips=[_clip_scores(n, self.logits[name][n]) for n in clip_names],
            end_to_end=e2e, latency=lat, auto=_auto_record(files))


def run_verify(settings: VerifySettings, clips: Sequence[Clip],
               torch_ref: TorchReference | None = None, pytorch_note: str = "",
               progress: Progress | None = None) -> VerifyReport:
    """Measure every backend in ``settings`` on ``clips`` (and random inputs)."""
    clips = unique_clip_names([c for c in clips if c.frames])
    if not clips:
        raise UserError("no frames to verify on")
    m = _Measurement(settings, clips, torch_ref, progress or (lambda *_: None))
    m.random_pass()
    m.frame_pass()
    m.latency_pass()
    reports = {spec.name: m.backend_report(spec) for spec in m.specs}

    clip_names = [c.name for c in clips]
    pytorch: dict[str, Any] = {"available": torch_ref is not None}
    if torch_ref:
        pytorch["checkpoints"] = {n: str(p) for n, p in torch_ref.checkpoints.items()}
        pytorch["clips"] = [asdict(_clip_scores(n, m.torch_logits[n])) for n in clip_names]
    else:
        pytorch["reason"] = pytorch_note or "not requested"
    inputs = [{"name": c.name, "source": c.source, "frames": len(c.frames),
               "decode_seconds": round(c.decode_seconds, 3)} for c in clips]
    f32_files = reports[BASELINE].files
    settings_out = {
        "backends": [s.name for s in m.specs], "model_dir": str(settings.model_dir),
        "threads": settings.threads, "random_inputs": settings.random_inputs,
        "random_distribution": "standard normal (np.random.default_rng(seed).standard_normal)",
        "seed": settings.seed, "warmup": settings.warmup, "runs": settings.runs,
        "frames": sum(len(c.frames) for c in clips), "clips": len(clips),
        "frames_description": describe_inputs(clips),
        "built_from": {net: (f32_files[net].manifest or {}).get("checkpoint") for net in NETS},
    }
    report = VerifyReport(SCHEMA_VERSION, time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine_info(),
                          settings_out, inputs, pytorch, reports)
    report.guide = guide_comparison(report)
    return report


def named_outputs(models: runtime.Models, net: str, inputs: Sequence[np.ndarray]) -> dict:
    """One net's outputs by role ("features"; "score", "logit")."""
    return dict(zip(models.runners[net].roles, models.run_net(net, *inputs)))


def _logit(outs: Sequence[np.ndarray]) -> float:
    if len(outs) > 1:
        return float(outs[1].reshape(-1)[0])
    return F.score_to_logit(outs[0].reshape(-1)[0])  # a single-output file


def _add_agg(accs: dict[str, StatsAccumulator], ref: tuple[float, float],
             got: tuple[float, float]) -> None:
    """(logit, score) of one frame against the reference's."""
    accs["logit"].add(np.array([ref[0]]), np.array([got[0]]))
    accs["score"].add(np.array([ref[1]]), np.array([got[1]]))


def _scores(logits: Sequence[float]) -> list[float]:
    # The same float32 scaling the scorer applies, so deltas are what users would see.
    return [float(s) for s in F.logit_to_score(np.asarray(logits, dtype=np.float32))]


def _clip_scores(name: str, logits: Sequence[float]) -> ClipScores:
    scores = _scores(logits)
    mean = float(np.mean(np.asarray(scores, dtype=np.float32), dtype=np.float32))
    return ClipScores(name, [float(x) for x in logits], scores, mean)


def _end_to_end(reference: str, ref_logits: Mapping[str, list[float]],
                got_logits: Mapping[str, list[float]], clip_names: Sequence[str]) -> EndToEnd:
    dl: dict[str, list[float]] = {}
    ds: dict[str, list[float]] = {}
    ref_clip_scores, got_clip_scores, ref_clip_logits, got_clip_logits = [], [], [], []
    for name in clip_names:
        r, g = np.asarray(ref_logits[name], np.float64), np.asarray(got_logits[name], np.float64)
        rs, gs = np.asarray(_scores(r)), np.asarray(_scores(g))
        dl[name] = (g - r).tolist()
        ds[name] = (gs - rs).tolist()
        ref_clip_scores.append(_clip_scores(name, r).mean_score)
        got_clip_scores.append(_clip_scores(name, g).mean_score)
        ref_clip_logits.append(float(r.mean()))
        got_clip_logits.append(float(g.mean()))
    all_dl = np.abs(np.concatenate([np.asarray(v) for v in dl.values()]))
    all_ds = np.abs(np.concatenate([np.asarray(v) for v in ds.values()]))
    return EndToEnd(
        reference=reference, frames=int(all_dl.size), clips=len(clip_names),
        logit_delta_max=float(all_dl.max()), logit_delta_mean=float(all_dl.mean()),
        score_delta_max=float(all_ds.max()), score_delta_mean=float(all_ds.mean()),
        clip_score_delta_max=float(np.max(np.abs(np.subtract(got_clip_scores, ref_clip_scores)))),
        clip_logit_delta_max=float(np.max(np.abs(np.subtract(got_clip_logits, ref_clip_logits)))),
        score_srcc=srcc(ref_clip_scores, got_clip_scores),
        score_plcc=plcc(ref_clip_scores, got_clip_scores),
        logit_srcc=srcc(ref_clip_logits, got_clip_logits),
        logit_plcc=plcc(ref_clip_logits, got_clip_logits),
        per_frame_logit_delta=dl, per_frame_score_delta=ds)


