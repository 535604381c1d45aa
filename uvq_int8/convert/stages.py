"""``uvq-int8 build``: checkpoints -> each backend's three .tflite files + manifest.json.

The order of work:

1. ``plan_build`` checks every input that can be checked cheaply (backend
   names, checkpoint paths, calibration videos, the output directory, the
   manifest) and decides per file: build or skip. A file is skipped when its
   checkpoint sha256, recipe and recipe options are unchanged and the file
   still has its recorded sha256.
2. ``build`` then checks the checkpoints' contents (strict load), decodes
   calibration videos, and only then converts: each net that needs it goes
   through litert-torch once, in its own process (two at a time), and every
   other recipe is derived from that float32 file with ai-edge-quantizer.
3. Each file is checked (a quantizing recipe that quantized nothing is an
   error), written atomically and recorded in the manifest at once, so an
   interrupted build keeps what it finished.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from uvq_int8.backends import NETS
from uvq_int8.convert.calibration import Calibration
from uvq_int8.convert.options import (CONVERSION_ORDER, MEMORY_BOUND_BYTES, BuildError, BuildOptions,
                                    BuildPlan, BuildSummary, FileJob, FileResult, NullReporter,
                                    Reporter)
from uvq_int8.convert.plan import plan_build, require_build_tools
from uvq_int8.convert.sources import FrameSources
from uvq_int8.runtime import manifest as mf
from uvq_int8.util import atomic_write_bytes, machine_info, sha256_bytes, tool_versions


# --------------------------------------------------------------------------- planning


# --------------------------------------------------------------------------- building


class _MemorySampler:
    """Peak of (this process + running conversion processes) RSS, sampled from /proc.

    getrusage gives each process's own peak; this gives what the machine had to hold.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.children: set[int] = set()
        self.peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: int | str) -> int:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def sample(self) -> None:
        total = self._rss("self") + sum(self._rss(pid) for pid in self.running())
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "_MemorySampler":
        if os.path.exists("/proc/self/statm"):
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def running(self) -> list[int]:
        """The conversion processes being sampled now."""
        with self._lock:
            return list(self.children)

    def add(self, pid: int) -> None:
        with self._lock:
            self.children.add(pid)

    def remove(self, pid: int) -> None:
        with self._lock:
            self.children.discard(pid)


def _peak_rss(sampler: _MemorySampler | None) -> dict[str, int]:
    from uvq_int8.convert.export import peak_rss_bytes

    own, kids = peak_rss_bytes(), peak_rss_bytes(children=True)
    out = {"self": own, "children": kids, "max": max(own, kids)}
    if sampler is not None and sampler.peak:
        out["concurrent"] = sampler.peak
    return out


def _validate_checkpoints(plan: BuildPlan, nets: Iterable[str]) -> None:
    """Strict load of each checkpoint that will be converted (imports torch)."""
    from uvq_int8.convert import nets as torch_nets

    for net in nets:
        core = torch_nets.load_core(net, plan.options.checkpoints[net])  # CheckpointError
        del core


def _io_ports(net: str, info) -> tuple[list[dict], list[dict]]:
    from uvq_int8.convert.export import INPUT_ROLES, OUTPUT_ROLES

    def ports(items, roles, prefix):
        out = []
        for position, port in enumerate(items):
            # The signature names (args_N / output_N) carry the export's order.
            name = port.signature_name or f"{prefix}{position}"
            digits = "".join(ch for ch in name if ch.isdigit())
            order = int(digits) if digits else position
            role = roles[order] if order < len(roles) else None
            out.append({"index": port.index, "name": port.name,
                        "signature_name": port.signature_name, "role": role,
                        "shape": list(port.shape), "dtype": port.dtype,
                        "scale": port.scale, "zero_point": port.zero_point})
        return out

    return (ports(info.inputs, INPUT_ROLES[net], "args_"),
            ports(info.outputs, OUTPUT_ROLES[net], "output_"))


def _check_ports(net: str, filename: str, inputs: list[dict], outputs: list[dict]) -> None:
    from uvq_int8.convert.export import OUTPUT_ROLES
    from uvq_int8.convert.quantize import QuantizationError

    roles = [p["role"] for p in outputs]
    if roles != list(OUTPUT_ROLES[net]):
        # Hosts such as the fork read output_details()[0] as the score.
        raise QuantizationError(f"{filename}: outputs are {roles} in subgraph order, "
                                f"expected {list(OUTPUT_ROLES[net])}")


class _Builder:
    """Makes the planned files: converts, quantizes, searches (auto), writes, records."""

    def __init__(self, plan: BuildPlan, reporter: Reporter, tmp: Path,
                 sampler: _MemorySampler) -> None:
        self.plan = plan
        self.reporter = reporter
        self.tmp = tmp
        self.sampler = sampler
        self.build_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        self.results: dict[str, FileResult] = {}
        self.conversions: list[dict[str, Any]] = []
        self.frames = FrameSources(plan, tmp)
        # Each net's ranges on the calibration frames, shared by int8-static and auto.
        self.frame_ranges = Calibration(self.frames, plan.options.threads,
                                        reporter.status, sampler.sample,
                                        statistics_model=self.statistics_model)
        self.float32_sizes: dict[str, int] = {}
        self.float_paths: dict[str, Path] = dict(plan.float_sources)
        self.auto_record: dict[str, Any] | None = None

    @property
    def calibration_record(self) -> dict[str, Any] | None:
        return self.frames.record

    # -- per net --------------------------------------------------------------

    def convert(self, net: str) -> Path:
        from uvq_int8.convert.export import convert_in_subprocess

        out = self.tmp / f"{net}_net.float32.tflite"
        threads = 1 if self.plan.options.jobs > 1 else self.plan.options.threads
        result = convert_in_subprocess(net, self.plan.options.checkpoints[net], out,
                                       self.tmp / f"{net}.convert.log", threads=threads,
                                       on_start=self.sampler.add, on_exit=self.sampler.remove)
        record = asdict(result)
        record.pop("path")  # a temp file, gone after the build
        self.conversions.append(record)
        return out

    def statistics_model(self, net: str) -> bytes | None:
        """DistortionNet's one-patch variant of its float32 file, for tensor statistics."""
        from uvq_int8.convert.tensor_stats import one_item_variant

        if net != "distortion":
            return None
        return one_item_variant(self.float_paths[net].read_bytes())

    def make_files(self, net: str, float_path: Path) -> None:
        from uvq_int8.convert import quantize
        from uvq_int8.runtime.tflite_info import read_model_info

        float_model = float_path.read_bytes()
        self.float_paths[net] = float_path
        self.float32_sizes[net] = len(float_model)
        # auto files wait for every net's float32 file: see _make_auto.
        jobs = [j for j in self.plan.to_build if j.net == net and j.recipe != "auto"]
        # float32 copies first: they are ready at once; the calibrated recipe is slowest.
        jobs.sort(key=lambda j: (j.recipe != "float32", quantize.get_recipe(j.recipe).calibrated))
        calibration_result = None
        int8 = self.plan.options.int8
        for job in jobs:
            recipe = quantize.get_recipe(job.recipe)
            try:
                if recipe.calibrated and calibration_result is None:
                    calibration_result = self.frame_ranges.activation_ranges(
                        net, job.filename, float_model, int8)
                self.reporter.status(job.filename, "quantizing" if recipe.quantized_dtype
                                     else "writing")
                data = quantize.quantize_model(job.recipe, float_model,
                                               calibration_result if recipe.calibrated else None)
                if job.recipe == "static_wi8_ai8" and int8.bias_correction != "none":
                    data, record = self.frame_ranges.bias_correct(net, job.filename, data,
                                                                  float_model, int8)
                    self.frames.record_net(net, {"bias_correction": record})
                if job.recipe == "static_wi8_ai8" and int8.refit != "none":
                    data, record = self.frame_ranges.refit(net, job.filename, data,
                                                           float_model, int8)
                    self.frames.record_net(net, {"refit": record})
                info = read_model_info(data)
                quantize.check_quantized(job.recipe, info)
                inputs, outputs = _io_ports(net, info)
                _check_ports(net, job.filename, inputs, outputs)
            except quantize.QuantizationError as exc:
                self._finish(FileResult(job.backend, net, job.filename, job.recipe, "failed",
                                        str(exc), float32_size=len(float_model)))
                continue
            self._write(job, data, info, inputs, outputs)

    def _write(self, job: FileJob, data: bytes, info, inputs: list[dict],
               outputs: list[dict], recipe_options: dict[str, Any] | None = None) -> None:
        out_path = self.plan.out_dir / job.filename
        atomic_write_bytes(out_path, data)
        sha = sha256_bytes(data)
        entry = mf.file_entry(
            filename=job.filename, backend=job.backend, net=job.net, recipe=job.recipe,
            recipe_options=job.options if recipe_options is None else recipe_options,
            size=len(data), sha256=sha,
            checkpoint=dict(self.plan.checkpoints[job.net]), built_at=mf.utc_now(),
            build_id=self.build_id, tensors_by_dtype=info.tensors_by_dtype,
            constant_tensors_by_dtype=info.constant_tensors_by_dtype,
            quantized_tensors_by_dtype=info.quantized_tensors_by_dtype,
            conv_weights_by_dtype=info.conv_weights_by_dtype,
            int4_conv_weights=info.int4_conv_weights, ops_by_name=info.ops_by_name,
            inputs=inputs, outputs=outputs)
        mf.update(self.plan.out_dir, {job.filename: entry})
        self._finish(FileResult(job.backend, job.net, job.filename, job.recipe, "built",
                                job.reason, len(data), sha, self.float32_sizes.get(job.net),
                                dict(info.quantized_tensors_by_dtype), info.int4_conv_weights))

    def stop_workers(self) -> None:
        import signal

        for pid in self.sampler.running():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _finish(self, result: FileResult) -> None:
        self.results[result.filename] = result
        self.reporter.done(result)


# --------------------------------------------------------------------------- auto

def _make_auto(builder: _Builder) -> None:
    """Search for the fastest configuration within the budget, then write its files
    (``builder``: the build in progress)."""
    from uvq_int8.convert import auto, quantize
    from uvq_int8.convert import sensitivity as S
    from uvq_int8.runtime import frames as F
    from uvq_int8.runtime.tflite_info import read_model_info
    from uvq_int8.util import machine_info

    options = builder.plan.options
    jobs = {j.net: j for j in builder.plan.auto_jobs}

    def say(text: str) -> None:
        for job in jobs.values():
            builder.reporter.status(job.filename, text)
        builder.sampler.sample()

    say("making validation frames")
    frames = builder.frames.validation()
    float_models = {net: builder.float_paths[net].read_bytes() for net in S.BACKBONES}
    ranges = {net: builder.frame_ranges.net_ranges(net, jobs[net].filename, float_models[net],
                                                   options.int8)
              for net in S.BACKBONES}
    say(f"measuring the float32 reference on {len(frames)} validation frames")
    held = S.HeldOut(builder.float_paths, frames, options.threads)

    def time_int8() -> float:
        say("timing full int8 against float32 on this CPU (no cost constants for its ISA)")
        choice = auto.NetChoice("static_wi8_ai8", ranges["distortion"].merges[0])
        int8 = auto.make_model(choice, float_models["distortion"], ranges["distortion"])
        patches = [F.net_inputs(f)[1] for f in frames[:2]]
        return S.measure_int8_ratio("distortion", float_models["distortion"], int8, patches,
                                    options.threads)

    cost = S.cost_constants(machine_info()["isa"], time_int8)
    try:
        result = auto.search(float_models, ranges, held, float(options.max_logit_delta),
                             merges=ranges["distortion"].merges, mixed=options.auto_mixed,
                             sensitivity=options.sensitivity, progress=say,
                             alternatives=options.confirmation_looks - 1, cost=cost)
    except quantize.QuantizationError as exc:
        for job in jobs.values():
            builder._finish(FileResult(job.backend, job.net, job.filename, job.recipe,
                                    "failed", f"auto search: {exc}",
                                    float32_size=builder.float32_sizes.get(job.net)))
        return
    try:
        made = {net: auto.make_model(result.choices[net], float_models[net], ranges[net])
                for net in S.BACKBONES}
    except quantize.QuantizationError as exc:
        made = {}
        failure = str(exc)
    if made:
        _confirm(builder, result, made, float_models, ranges, say)
    for net, job in jobs.items():
        choice = result.choices[net]
        try:
            say(f"writing {choice.label}")
            if not made:
                raise quantize.QuantizationError(failure)
            data = made[net]
            info = read_model_info(data)
            auto.check_choice(choice, info)
            inputs, outputs = _io_ports(net, info)
            _check_ports(net, job.filename, inputs, outputs)
        except quantize.QuantizationError as exc:
            builder._finish(FileResult(job.backend, net, job.filename, job.recipe, "failed",
                                    str(exc), float32_size=len(float_models[net])))
            continue
        options_with_choice = {**job.options, "choice": result.recipe_options(net)}
        builder._write(job, data, info, inputs, outputs, options_with_choice)

@dataclass
class _Look:
    """One configuration the confirmation may look at, and its files once made."""

    content: Any       # auto.NetChoice
    distortion: Any
    measurement: Any   # on the search frames
    modelled_ms: float
    files: dict[str, bytes] | None = None


def _confirm(builder: _Builder, result, made: dict[str, bytes], float_models: Mapping[str, bytes],
             ranges: Mapping[str, Any], say: Callable[[str], None]) -> None:
    """Confirm the searched choice on the confirmation frames, and on a miss the next
    alternatives, up to ``--confirmation-looks`` in all (runtime/promise.py); leaves in
    ``made`` the files of the choice that holds, or float32 when none does."""
    from uvq_int8.convert import auto
    from uvq_int8.convert import sensitivity as S
    from uvq_int8.runtime import promise

    options = builder.plan.options
    say("making the confirmation frames")
    frames, images, content = builder.frames.confirmation()
    held = S.HeldOut(builder.float_paths, frames, options.threads)  # float32 measured once
    looks = [_Look(result.content, result.distortion, result.measurement,
                   result.modelled_ms["chosen"], dict(made))]
    looks += [_Look(*alternative) for alternative in result.alternatives]

    def deltas_of(look: _Look) -> np.ndarray:
        choices = {"content": look.content, "distortion": look.distortion}
        if look.files is None:
            look.files = {net: auto.make_model(c, float_models[net], ranges[net])
                          for net, c in choices.items()}
        say(f"confirming {look.content.label} / {look.distortion.label} on {len(frames)} frames")
        models = {net: None if c.recipe == "float32" else look.files[net]
                  for net, c in choices.items()}
        return held.logit_deltas(held.features("content", models["content"]),
                                 held.features("distortion", models["distortion"]))

    # Fewer frames than the looks need (short --validation-videos): fewer looks.
    allowed = max(1, promise.supported_looks(len(frames), options.promise_fraction,
                                             options.confirmation_looks))
    chosen, found, rejected = promise.confirm_first(
        looks, deltas_of, float(options.max_logit_delta), images, content,
        options.promise_fraction, allowed)
    result.content_basis = dict(builder.frames.content_basis)
    for look, failed in rejected:
        result.reject(failed, look.content, look.distortion, look.measurement)
    if chosen is not None:
        if chosen is not looks[0]:
            result.take(chosen.content, chosen.distortion, chosen.measurement,
                        chosen.modelled_ms)
        made.update(chosen.files)
        result.promise = found
    else:
        result.fall_back_to_float32(rejected[-1][1])
        made.update({net: bytes(float_models[net]) for net in made})
    builder.auto_record = result.as_dict()


def _skipped_result(job: FileJob, entry: Mapping[str, Any], float_size: int | None) -> FileResult:
    return FileResult(job.backend, job.net, job.filename, job.recipe, "skipped", "up to date",
                      entry.get("size"), entry.get("sha256"), float_size,
                      dict(entry.get("quantized_tensors_by_dtype", {})),
                      int(entry.get("int4_conv_weights", 0)))


def build(options: BuildOptions, reporter: Reporter | None = None,
          raise_on_failure: bool = True) -> BuildSummary:
    """Build (or skip, when up to date) every file of the requested backends."""
    started = time.perf_counter()
    started_at = mf.utc_now()
    reporter = reporter or NullReporter()
    plan = plan_build(options)
    for note in plan.notes:
        reporter.note(note)

    if plan.to_build:
        require_build_tools()
        _validate_checkpoints(plan, plan.nets_to_convert)

    reporter.start(plan.jobs)
    for job in plan.to_skip:
        reporter.done(_skipped_result(job, plan.manifest.files[job.filename], None))
    try:
        with tempfile.TemporaryDirectory(prefix="uvq-int8-build-") as tmp, \
                _MemorySampler() as sampler:
            builder = _Builder(plan, reporter, Path(tmp), sampler)
            if plan.to_build:
                builder.frames.prepare()  # a broken video stops the build before conversion
                plan.out_dir.mkdir(parents=True, exist_ok=True)
                _run(plan, builder)
    finally:
        reporter.stop()

    results = _collect_results(plan, builder)
    peak = _peak_rss(sampler)
    held = peak.get("concurrent", peak["max"])
    if plan.to_build and held > MEMORY_BOUND_BYTES:
        reporter.note(f"the build held {held / 1e9:.2f} GB at its peak, over the "
                      f"{MEMORY_BOUND_BYTES / 1e9:.0f} GB bound; use --jobs 1 or fewer "
                      f"--calibration-frames")
    summary = BuildSummary(plan.out_dir, mf.manifest_path(plan.out_dir), results,
                           time.perf_counter() - started, peak, builder.conversions,
                           builder.calibration_record, builder.build_id if plan.to_build else None,
                           builder.auto_record)
    if plan.to_build:
        record = {
            "build_id": builder.build_id, "started_at": started_at, "finished_at": mf.utc_now(),
            "seconds": round(summary.seconds, 2), "tools": tool_versions(),
            # The CPU and its int8-relevant features: speed claims and auto's cost model
            # are per instruction set.
            "machine": {k: v for k, v in machine_info().items() if k != "packages"},
            "checkpoints": plan.checkpoints, "calibration": builder.calibration_record,
            "peak_rss_bytes": peak, "conversions": builder.conversions,
            "backends": plan.backends,
            "built": [f.filename for f in summary.built],
            "skipped": [f.filename for f in summary.skipped],
            "failed": [f.filename for f in summary.failed],
        }
        if builder.auto_record is not None:
            record["auto"] = builder.auto_record
        mf.update(plan.out_dir, build=record)
    if raise_on_failure and summary.failed:
        raise BuildError("; ".join(f"{f.filename}: {f.reason}" for f in summary.failed))
    return summary


def _run(plan: BuildPlan, builder: _Builder) -> None:
    to_convert = plan.nets_to_convert
    for net in to_convert:
        for job in plan.to_build:
            if job.net == net:
                builder.reporter.status(job.filename, "waiting for the float32 conversion")
    with ThreadPoolExecutor(max_workers=max(1, plan.options.jobs)) as pool:
        futures: dict[Future, str] = {pool.submit(builder.convert, net): net for net in to_convert}
        try:
            if to_convert and any(j.options.get("calibration") for j in plan.to_build):
                builder.frames.calibration_store()  # the main thread is free while the workers convert
            # Nets with a current float32 file need no conversion: derive their files now.
            for net in NETS:
                if net in plan.float_sources and any(j.net == net for j in plan.to_build):
                    builder.make_files(net, plan.float_sources[net])
            pending = dict(futures)
            while pending:
                done = _wait_any(pending)
                net = pending.pop(done)
                builder.make_files(net, done.result())  # re-raises a conversion error
            if plan.auto_jobs:
                _make_auto(builder)
        except BaseException:
            for future in futures:
                future.cancel()
            builder.stop_workers()  # else the pool would wait for running conversions
            raise


def _wait_any(pending: Mapping[Future, str]) -> Future:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    # Prefer the net that finished first in CONVERSION_ORDER for a stable order.
    return min(done, key=lambda f: CONVERSION_ORDER.index(pending[f]))


def _collect_results(plan: BuildPlan, builder: _Builder) -> list[FileResult]:
    float_sizes = dict(builder.float32_sizes)
    for net, path in plan.float_sources.items():
        float_sizes.setdefault(net, path.stat().st_size)
    for entry in plan.manifest.files.values():
        net = entry.get("net")
        if (entry.get("recipe") == "float32" and net in NETS
                and entry.get("checkpoint", {}).get("sha256") == plan.checkpoints[net]["sha256"]):
            float_sizes.setdefault(net, entry["size"])
    results = []
    for job in plan.jobs:
        if job.filename in builder.results:
            result = builder.results[job.filename]
            if result.float32_size is None:
                result.float32_size = float_sizes.get(job.net)
        elif job.reason is None:
            result = _skipped_result(job, plan.manifest.files[job.filename],
                                     float_sizes.get(job.net))
        else:  # interrupted before this file was reached
            result = FileResult(job.backend, job.net, job.filename, job.recipe, "failed",
                                "not built")
        results.append(result)
    return results
