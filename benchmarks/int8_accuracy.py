"""Full-integer int8: activation-range methods and bias correction, on natural holdout frames.

Run by hand (bias correction of DistortionNet takes minutes per recipe):

    .venv/bin/python benchmarks/int8_accuracy.py --models DIR [--nets content,distortion] \\
        [--methods minmax,p99.99,mse] [--bias none,depthwise,all] [--json FILE]
    .venv/bin/python benchmarks/int8_accuracy.py --models DIR --built int8-static \\
        [--against OLD_DIR] [--json FILE]
    .venv/bin/python benchmarks/int8_accuracy.py --models DIR --int4 --weights minmax,MSE,OCTAV

DIR holds the float32 files of one weight set (``uvq-int8 build --backend float32``). Per
net it calibrates on the build's default natural calibration frames (per-frame min/max,
then a histogram of every op output over the union of those ranges), quantizes with each
range method (``minmax``: the mean of per-frame ranges, today's int8-static; ``pNN.NN``: a
percentile; ``mse``: least quantization error), optionally bias-corrects each result
(``depthwise``: the 16 DEPTHWISE_CONV_2D ops; ``all``: all 81 convolutions; one op at a
time), and reports the output-feature SNR (dB, pooled over frames) and cosine against the
float32 file on the promise holdout frames (natural clips of images no build split uses).

``--float-groups none,stem+block1`` also leaves op groups float32 (``se``: the
squeeze-excitation paths' 1x1 ops); ``--logits`` adds the aggregation logit's change with
the other net float32, ``--speed`` times each candidate against float32 (interleaved calls),
and ``--save DIR`` writes each candidate for ``int8_layers.py --candidate``.

``--refit none,3e-2`` adds the least-squares refit of the 1x1 convolutions (recipe version
3; the value is the ridge; ``--refit-no-check`` keeps every fit) and ``--equalize none,1``
rescales the residual streams' channels before calibration (SmoothQuant's alpha).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from uvq_int8.backends import NETS
from uvq_int8.convert import bias_correction as B
from uvq_int8.convert import calibration as C
from uvq_int8.convert import equalize as EQ
from uvq_int8.convert import refit as R
from uvq_int8.convert import natural, quantize, sensitivity
from uvq_int8.convert import tensor_stats as T
from uvq_int8.runtime import frames as F
from uvq_int8.util import atomic_write_text, machine_info

BIAS = {"none": (), "depthwise": ("DEPTHWISE_CONV_2D",), "all": B.CONV_OPS}


def net_input(net: str, frame: np.ndarray) -> np.ndarray:
    content, patches = F.net_inputs(frame)
    return content if net == "content" else patches


def output_agreement(net: str, float_model: bytes, model: bytes, frames, threads: int):
    """(SNR dB, cosine) of the net's output, pooled over ``frames``."""
    import tempfile

    from uvq_int8 import runtime

    sums = T.PairSums()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "float.tflite", Path(tmp) / "candidate.tflite"]
        for path, data in zip(paths, (float_model, model)):
            path.write_bytes(data)
        reference, candidate = (runtime.NetRunner(net, p, threads) for p in paths)
        for frame in frames:
            x = net_input(net, frame)
            sums.add(reference.run(x)[0], candidate.run(x)[0])
    return round(sums.snr_db, 2), round(sums.cosine, 5)


def net_times(runners: dict, frames, rounds: int = 5) -> dict[str, float]:
    """Median ms per call of each runner (name -> (NetRunner, net)), calls interleaved so
    that a change of machine load hits every runner alike."""
    inputs = {net: [net_input(net, f) for f in frames] for net in ("content", "distortion")}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for name, (runner, net) in runners.items():  # warm-up
        runner.run(inputs[net][0])
    for _ in range(rounds):
        for i in range(len(frames)):
            for name, (runner, net) in runners.items():
                started = time.perf_counter()
                runner.run(inputs[net][i])
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: float(np.median(t)) for name, t in times.items()}


def candidate_speed(net: str, float_model: bytes, model: bytes, frames, threads: int) -> float:
    """float32 ms / ``model`` ms for one net, from interleaved calls (``net_times``)."""
    import tempfile

    from uvq_int8 import runtime

    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "float.tflite", Path(tmp) / "candidate.tflite"]
        for path, data in zip(paths, (float_model, model)):
            path.write_bytes(data)
        ms = net_times({"float32": (runtime.NetRunner(net, paths[0], threads), net),
                        "candidate": (runtime.NetRunner(net, paths[1], threads), net)}, frames)
    return round(ms["float32"] / ms["candidate"], 3)


def speed(models: Path, backend: str, against: Path | None, frames, threads: int) -> dict:
    """Per net: float32 ms / backend ms (and / the same backend in ``against``), one run."""
    from uvq_int8 import runtime

    ours = runtime.load_models(backend, models, threads)
    ref = runtime.load_models("float32", models, threads)
    other = runtime.load_models(backend, against, threads) if against else None
    out = {}
    for net in ("content", "distortion"):
        runners = {"float32": (ref.runners[net], net), backend: (ours.runners[net], net)}
        if other is not None:
            runners["against"] = (other.runners[net], net)
        ms = net_times(runners, frames)
        out[f"{net}_float32_over_backend"] = round(ms["float32"] / ms[backend], 3)
        if other is not None:
            out[f"{net}_backend_over_against_ms"] = round(ms[backend] / ms["against"], 3)
    return out


def built_agreement(models: Path, backend: str, frames, threads: int) -> dict:
    """A built backend against float32 of the same build: per-net SNR and cosine, and the
    aggregation logit's change (max, mean, share of frames within 0.1)."""
    from uvq_int8 import runtime

    ours = runtime.load_models(backend, models, threads)
    ref = runtime.load_models("float32", models, threads)
    sums = {"content": T.PairSums(), "distortion": T.PairSums()}
    deltas = []
    for frame in frames:
        a, b = ref.features(frame), ours.features(frame)
        sums["content"].add(a[0], b[0])
        sums["distortion"].add(a[1], b[1])
        deltas.append(abs(ours.aggregate(*b)[0] - ref.aggregate(*a)[0]))
    deltas = np.array(deltas, np.float64)
    return {"backend": backend, "frames": len(deltas),
            **{f"{net}_snr_db": round(s.snr_db, 2) for net, s in sums.items()},
            **{f"{net}_cosine": round(s.cosine, 5) for net, s in sums.items()},
            "logit_delta_max": round(float(deltas.max()), 4),
            "logit_delta_mean": round(float(deltas.mean()), 4),
            "within_0.1": round(float((deltas <= 0.1).mean()), 4)}


def ranges_for(method: str, stats: C.TensorStatistics):
    if method == "minmax":
        return C.histogram_ranges(stats, "minmax")
    if method == "mse":
        return C.histogram_ranges(stats, "mse")
    if method.startswith("p"):
        return C.histogram_ranges(stats, "percentile", float(method[1:]))
    raise SystemExit(f"unknown method {method!r}: minmax, mse or pNN.NN")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path, help="dir with the float32 files")
    p.add_argument("--nets", default="content,distortion")
    p.add_argument("--methods", default="minmax,p99.99,mse")
    p.add_argument("--bias", default="none,depthwise,all")
    p.add_argument("--weights", default="minmax",
                   help="the convolutions' weight ranges, a comma list of "
                        f"{', '.join(quantize.WEIGHT_ALGORITHMS)} (each with every method)")
    p.add_argument("--float-groups", default="none",
                   help="op groups to leave float32, a comma list of alternatives, each "
                        "'none' or groups joined by '+' (e.g. none,stem+block1; 'se': the "
                        "squeeze-excitation paths' 1x1 ops); each is measured with every "
                        "method")
    p.add_argument("--logits", action="store_true",
                   help="also the aggregation logit's change on the same frames, with the "
                        "other net float32 (max, mean, share of frames within 0.1)")
    p.add_argument("--speed", action="store_true",
                   help="also time each candidate against the float32 file (median of "
                        "interleaved calls on 4 frames): float32 ms / candidate ms")
    p.add_argument("--save", type=Path, metavar="DIR",
                   help="also write each candidate file to DIR (for int8_layers.py --candidate)")
    p.add_argument("--equalize", default="none", metavar="ALPHAS",
                   help="comma-separated: none, or SmoothQuant's alpha in [0, 1] for "
                        "residual-stream channel equalization before calibration")
    p.add_argument("--refit", default="none", metavar="RIDGES",
                   help="comma-separated: none, the ridge of a least-squares refit of "
                        "the 1x1 convolutions with int8 inputs in the loop (e.g. 1e-3), or "
                        "cv: that refit with each op's ridge chosen by cross-validation (cv:R: "
                        "among the ridges up to R only); a cv one ending in +dw also refits "
                        "the depthwise convolutions channel by channel (e.g. cv+dw), and +gptq rounds "
                        "each 1x1 fit's weights with the rounding error carried onto the "
                        "inputs not yet rounded (e.g. cv+gptq)")
    p.add_argument("--refit-no-check", action="store_true",
                   help="fit on every calibration frame and keep every fit (the refit "
                        "normally keeps a fit only if it is better on the last quarter)")
    p.add_argument("--refit-frames", type=int, default=16,
                   help="refit on the first N calibration frames (DistortionNet's refit "
                        "runs the whole int8 net once per frame and 1x1 convolution)")
    p.add_argument("--refit-samples", type=int, default=R.DEFAULT_SAMPLES,
                   help="positions per frame and op that the refit fits and checks on")
    p.add_argument("--calibration-frames", type=int, default=16)
    p.add_argument("--range-frames", type=int, default=None,
                   help="take the activation ranges from the first N calibration frames "
                        "(default: all); with --refit-frames above N, the refit sees more "
                        "frames than the ranges")
    p.add_argument("--holdout-frames", type=int, default=24)
    p.add_argument("--eval-split", default="holdout",
                   choices=("holdout", "search", "confirmation"),
                   help="the natural split to measure on: the promise holdout (default), "
                        "the auto search split (to choose a method without the holdout), or "
                        "auto's confirmation split (what its promise is tested on)")
    p.add_argument("--in-sample", action="store_true",
                   help="calibrate the ranges and the refit on the measured frames "
                        "themselves (whether calibration content is the limit; not a strict "
                        "bound, since the methods do not minimise the output error)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--int4", action="store_true",
                   help="instead: int4 (dynamic_wi4_afp32, channelwise) with each --weights "
                        "algorithm for the convolutions' weights, against float32")
    p.add_argument("--built", nargs="+", metavar="BACKEND",
                   help="instead: measure these built backends of --models (e.g. int8-static) "
                        "against its float32 files on the holdout frames, and time each net "
                        "against float32 (median of interleaved calls)")
    p.add_argument("--against", type=Path, metavar="DIR",
                   help="with --built: also time each backend against the same backend in DIR "
                        "(another build, e.g. --int8-ranges minmax), in the same run")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    if args.refit_no_check and any(r.startswith("cv") for r in args.refit.split(",")):
        p.error("--refit-no-check is the one-split refit's; the cv refit checks by its folds")
    for r in args.refit.split(","):
        base, *extras = r.split("+")
        if extras and not base.startswith("cv"):
            p.error(f"--refit {r}: +dw and +gptq are the cv refit's")
        if any(e not in ("dw", "gptq") for e in extras):
            p.error(f"--refit {r}: a suffix is +dw or +gptq")
    hold = natural.make_set(args.eval_split, args.holdout_frames)
    if args.built:
        rows = [{**built_agreement(args.models, b, hold.frames, args.threads),
                 **speed(args.models, b, args.against, hold.frames[:4], args.threads)}
                for b in args.built]
        for row in rows:
            print(json.dumps(row), flush=True)
        if args.json:
            atomic_write_text(args.json, json.dumps({
                "models": str(args.models), "holdout_sha256": hold.sha256,
                "holdout_images": hold.images, "against": str(args.against or ""),
                "machine": machine_info(), "rows": rows},
                indent=2))
        return 0
    if args.int4:
        rows = []
        for net in args.nets.split(","):
            float_model = (args.models / f"{net}_net.tflite").read_bytes()
            for weights in args.weights.split(","):
                model = quantize.quantize_model("dynamic_wi4_afp32", float_model,
                                                weight_algorithm=weights)
                snr, cosine = output_agreement(net, float_model, model, hold.frames,
                                               args.threads)
                row = {"net": net, "recipe": "dynamic_wi4_afp32", "weights": weights,
                       "snr_db": snr, "cosine": cosine}
                rows.append(row)
                print(json.dumps(row), flush=True)
        if args.json:
            atomic_write_text(args.json, json.dumps({
                "models": str(args.models), "eval_split": args.eval_split,
                "holdout_sha256": hold.sha256, "machine": machine_info(), "rows": rows},
                indent=2))
        return 0
    # --in-sample: calibrate (ranges and refit) on the very frames measured: whether the
    # calibration content is what limits these methods (docs/backends.md).
    cal = hold if args.in_sample else natural.make_set("calibration", args.calibration_frames)
    print(f"calibration {len(cal.frames)} frames ({cal.sha256[:12]}), {args.eval_split} "
          f"{len(hold.frames)} frames from {hold.images} ({hold.sha256[:12]})", file=sys.stderr)
    held = None
    if args.logits:
        held = sensitivity.HeldOut({n: args.models / f"{n}_net.tflite" for n in NETS},
                                   hold.frames, args.threads)
    rows = []
    for net, eq in [(n, e) for n in args.nets.split(",") for e in args.equalize.split(",")]:
        float_model = (args.models / f"{net}_net.tflite").read_bytes()

        def inputs(net=net):
            return ([net_input(net, f)] for f in cal.frames)

        started = time.perf_counter()
        source = float_model
        eq_record = None
        if eq != "none":
            one = T.one_item_variant(float_model) if net == "distortion" else None
            source, rec = EQ.equalized(float_model, inputs,
                                       float(eq), args.threads, statistics_model=one)
            eq_record = rec.as_dict()
        def range_inputs(net=net):
            return ([net_input(net, f)] for f in cal.frames[:args.range_frames])

        ranges = C.calibrate_per_frame(source, ({"args_0": x[0]} for x in range_inputs()),
                                       threads=args.threads)
        # As the build does: DistortionNet a patch at a time, on its one-patch variant.
        stats = C.tensor_statistics(source, range_inputs, ranges, args.threads,
                                    statistics_model=(T.one_item_variant(source)
                                                      if net == "distortion" else None))
        print(f"{net}: statistics in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        float_means = None
        for method, weights, floats in [(m, w, g) for m in args.methods.split(",")
                                        for w in args.weights.split(",")
                                        for g in args.float_groups.split(",")]:
            groups = () if floats == "none" else tuple(floats.split("+"))
            se = ("se" in groups) and sensitivity.se_outputs(sensitivity.graph_ops(float_model))
            model = sensitivity.quantize_static(source, ranges_for(method, stats),
                                                float_groups=[g for g in groups if g != "se"],
                                                weight_algorithm=weights,
                                                float_outputs=se or ())
            for bias, refit in [(b, r) for b in args.bias.split(",")
                                for r in args.refit.split(",")]:
                started = time.perf_counter()
                record = None
                corrected = model
                if BIAS[bias]:
                    if float_means is None:
                        sites = [s.output for s in B.bias_sites(model)]
                        float_means = B.channel_means(source, inputs, sites,
                                                      args.threads)[0]
                    corrected, rec = B.correct(model, source, inputs, iterations=1,
                                               threads=args.threads, float_means=float_means,
                                               ops=BIAS[bias])
                    record = rec.as_dict()
                refit_record = None
                if refit != "none":
                    some = cal.frames[:args.refit_frames]
                    cv = refit.startswith("cv")
                    base, *extras = refit.split("+")
                    dw = "dw" in extras
                    cv_max = float(base[3:]) if base.startswith("cv:") else np.inf
                    corrected, rrec = R.refit(
                        corrected, source, lambda: ([net_input(net, f)] for f in some),
                        threads=args.threads,
                        ridge=R.DEFAULT_RIDGE if cv else float(refit),
                        cv=cv, cv_ridges=[r for r in R.CV_RIDGES if r <= cv_max],
                        depthwise=dw, rounding="gptq" if "gptq" in extras else "nearest",
                        samples=args.refit_samples,
                        check=not args.refit_no_check,
                        statistics_model=(T.one_item_variant(source) if net == "distortion"
                                          else None),
                        progress=lambda t: print(t, file=sys.stderr, flush=True))
                    refit_record = rrec.as_dict()
                snr, cosine = output_agreement(net, float_model, corrected, hold.frames,
                                               args.threads)
                row = {"net": net, "method": method, "weights": weights, "bias": bias,
                       "float_groups": floats, "equalize": eq, "equalize_record": eq_record,
                       "snr_db": snr,
                       "cosine": cosine, "bias_seconds": round(time.perf_counter() - started, 1),
                       "bias_record": record,
                       "refit": refit, "refit_record": refit_record}
                if held is not None:
                    deltas = held.logit_deltas(held.features("content", corrected if
                                                             net == "content" else None),
                                               held.features("distortion", corrected if
                                                             net == "distortion" else None))
                    row.update(logit_delta_max=round(float(deltas.max()), 4),
                               logit_delta_mean=round(float(deltas.mean()), 4),
                               within_0_1=round(float((deltas <= 0.1).mean()), 4))
                if args.save:
                    args.save.mkdir(parents=True, exist_ok=True)
                    extra = "".join(f"_{k}{v}" for k, v in (("eq", eq), ("refit", refit))
                                    if v != "none")
                    name = f"{net}_{method}_{weights}_{floats}_{bias}{extra}.tflite"
                    (args.save / name).write_bytes(corrected)
                    row["file"] = str(args.save / name)
                if args.speed:
                    row["float32_over_candidate"] = candidate_speed(
                        net, float_model, corrected, hold.frames[:4], args.threads)
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"models": str(args.models), "calibration_sha256": cal.sha256,
              "eval_split": args.eval_split,
              "holdout_sha256": hold.sha256, "holdout_images": hold.images,
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "machine": machine_info(), "python": platform.python_version(), "rows": rows}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
