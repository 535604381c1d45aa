"""Full-integer int8: activation-range methods and bias correction, on natural holdout frames.

Run by hand (DistortionNet's statistics pass holds ~4.7 GB: this is not the build):

    .venv/bin/python benchmarks/int8_accuracy.py --models DIR [--nets content,distortion] \\
        [--methods minmax,p99.99,mse] [--bias none,depthwise,all] [--json FILE]

DIR holds the float32 files of one weight set (``uvq-int8 build --backend float32``). Per
net it calibrates on the build's default natural calibration frames (per-frame min/max,
then a histogram of every op output over the union of those ranges), quantizes with each
range method (``minmax``: the mean of per-frame ranges, today's int8-static; ``pNN.NN``: a
percentile; ``mse``: least quantization error), optionally bias-corrects each result
(``depthwise``: the 16 DEPTHWISE_CONV_2D ops; ``all``: all 81 convolutions; one op at a
time), and reports the output-feature SNR (dB, pooled over frames) and cosine against the
float32 file on the promise holdout frames (natural clips of images no build split uses).
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

from uvq_int8.convert import bias_correction as B
from uvq_int8.convert import calibration as C
from uvq_int8.convert import natural, sensitivity
from uvq_int8.convert import tensor_stats as T
from uvq_int8.runtime import frames as F
from uvq_int8.util import atomic_write_text, machine_info

BIAS = {"none": (), "depthwise": ("DEPTHWISE_CONV_2D",), "all": B.CONV_OPS}


def net_input(net: str, frame: np.ndarray) -> np.ndarray:
    content, patches = F.net_inputs(frame)
    return content if net == "content" else patches


def output_agreement(net: str, float_model: bytes, model: bytes, frames, threads: int):
    """(SNR dB, cosine) of the net's output, pooled over ``frames``."""
    reference = T.TensorProbe(float_model, threads)
    candidate = T.TensorProbe(model, threads)
    sums = T.PairSums()
    out_ref = reference.ops[-1].index
    out_new = candidate._interp.get_output_details()[0]["index"]
    for frame in frames:
        x = net_input(net, frame)
        reference.run(x)
        candidate.run(x)
        sums.add(reference.tensor(out_ref), candidate.tensor(out_new))
    return round(sums.snr_db, 2), round(sums.cosine, 5)


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
    p.add_argument("--calibration-frames", type=int, default=16)
    p.add_argument("--holdout-frames", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    cal = natural.make_set("calibration", args.calibration_frames)
    hold = natural.make_set("holdout", args.holdout_frames)
    print(f"calibration {len(cal.frames)} frames ({cal.sha256[:12]}), holdout "
          f"{len(hold.frames)} frames from {hold.images} ({hold.sha256[:12]})", file=sys.stderr)
    rows = []
    for net in args.nets.split(","):
        float_model = (args.models / f"{net}_net.tflite").read_bytes()

        def inputs(net=net):
            return ([net_input(net, f)] for f in cal.frames)

        started = time.perf_counter()
        ranges = C.calibrate_per_frame(float_model, ({"args_0": x[0]} for x in inputs()),
                                       threads=args.threads)
        stats = C.tensor_statistics(float_model, inputs, ranges, args.threads)
        print(f"{net}: statistics in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        float_means = None
        for method in args.methods.split(","):
            model = sensitivity.quantize_static(float_model, ranges_for(method, stats))
            for bias in args.bias.split(","):
                started = time.perf_counter()
                record = None
                corrected = model
                if BIAS[bias]:
                    if float_means is None:
                        sites = [s.output for s in B.bias_sites(model)]
                        float_means = B.channel_means(float_model, inputs, sites,
                                                      args.threads)[0]
                    corrected, rec = B.correct(model, float_model, inputs, iterations=1,
                                               threads=args.threads, float_means=float_means,
                                               ops=BIAS[bias])
                    record = rec.as_dict()
                snr, cosine = output_agreement(net, float_model, corrected, hold.frames,
                                               args.threads)
                row = {"net": net, "method": method, "bias": bias, "snr_db": snr,
                       "cosine": cosine, "bias_seconds": round(time.perf_counter() - started, 1),
                       "bias_record": record}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"models": str(args.models), "calibration_sha256": cal.sha256,
              "holdout_sha256": hold.sha256, "holdout_images": hold.images,
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "machine": machine_info(), "python": platform.python_version(), "rows": rows}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
