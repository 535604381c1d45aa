"""Block-wise output reconstruction of a full-integer int8 file (BRECQ/QDrop style, weights only).

Run by hand (PyTorch, the ``[build]`` extra; ContentNet takes minutes, DistortionNet tens):

    .venv/bin/python benchmarks/int8_reconstruct.py --models DIR --net content \\
        [--iterations 300] [--frames 16] [--save FILE] [--json FILE]

DIR holds a build's float32 and int8-static files of one weight set. The int8 file is
simulated in PyTorch: every op computed in float from its dequantized weights, every op
output rounded to the file's own scale and zero point (the rounding passed straight
through for gradients). The net is cut into blocks where a single tensor is live
(``tensor_stats.single_cuts``: between EfficientNet blocks). Block by block, in graph
order, the int8 weights of its convolutions move by whole steps at their own scales and
their biases shift, by Adam on a straight-through rounding, so that the block's output,
from the int8 net's own input (mixed element by element with the float32 net's, QDrop's
drop of 0.5), matches the float32 net's. The scales, the ops and the single XNNPACK node
stay as they are: only weight and bias bytes change in the file written back.

It prints, and with ``--json`` writes, the output-feature SNR (dB, pooled over frames) and
cosine of the int8 file before and after, each against the float32 file on the chosen
split (the promise holdout by default), measured by the LiteRT interpreter, not the
simulation; and the simulation's own agreement with the int8 file (how closely it mirrors
the int8 kernels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from uvq_int8.convert import natural
from uvq_int8.convert import tensor_stats as T
from uvq_int8.convert.tflite_graph import INT8, INT32, TFLiteGraph, buffer_view
from uvq_int8.util import atomic_write_text, machine_info

# A script's own folder is on sys.path: the benchmarks share their helpers.
from int8_accuracy import net_input, output_agreement

SIMULATED = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "LOGISTIC", "MEAN"}


def _options(g: TFLiteGraph, op: int, kind: str) -> dict:
    table = g.sg.Operators(op).BuiltinOptions()
    if kind == "CONV_2D":
        o = g.schema.Conv2DOptions()
    elif kind == "DEPTHWISE_CONV_2D":
        o = g.schema.DepthwiseConv2DOptions()
    else:
        return {}
    o.Init(table.Bytes, table.Pos)
    return {"same": int(o.Padding()) == 0, "stride": (int(o.StrideH()), int(o.StrideW())),
            "dilation": (int(o.DilationHFactor()), int(o.DilationWFactor())),
            "activation": int(o.FusedActivationFunction())}


def _quant(g: TFLiteGraph, t: int) -> tuple[np.ndarray, np.ndarray] | None:
    q = g.sg.Tensors(t).Quantization()
    if q is None or q.ScaleLength() == 0:
        return None
    return (np.asarray(q.ScaleAsNumpy(), np.float64),
            np.asarray(q.ZeroPointAsNumpy(), np.int64))


def _axes(g: TFLiteGraph, t: int) -> list[int]:
    """A MEAN op's constant axes tensor."""
    return [int(a) for a in buffer_view(g.data, g.m, int(g.sg.Tensors(t).Buffer()))]


class Op:
    """One simulated op: kind, tensor names in and out, options, and for convolutions the
    int8 weights, their per-channel scales and the int32 bias (buffers of the int8 file)."""

    def __init__(self, g: TFLiteGraph, index: int, kind: str) -> None:
        self.index, self.kind = index, kind
        ins = [t for t in g.inputs[index] if t >= 0]
        self.inputs = [g.name(t) for t in ins if not g.is_constant(t)]
        self.output = g.name(g.outputs[index][0])
        self.out_shape = g.shape(g.outputs[index][0])
        self.options = _options(g, index, kind)
        oq = _quant(g, g.outputs[index][0])
        self.out_q = None if oq is None else (float(oq[0][0]), int(oq[1][0]))
        self.axes = None
        self.weight = self.bias = None
        if kind == "MEAN":
            self.axes = _axes(g, ins[1])
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            wt, bt = g.sg.Tensors(ins[1]), g.sg.Tensors(ins[2])
            if wt.Type() != INT8 or bt.Type() != INT32:
                raise SystemExit(f"op {index}: not an int8 convolution with an int32 bias")
            self.weight, self.bias = ins[1], ins[2]
            self.w_shape = g.shape(ins[1])
            self.q_w = buffer_view(g.data, g.m, int(wt.Buffer()), np.int8).reshape(
                self.w_shape).copy()
            self.w_scale = _quant(g, ins[1])[0]
            self.q_b = buffer_view(g.data, g.m, int(bt.Buffer()), np.int32).copy()
            self.b_scale = _quant(g, ins[2])[0]


class Simulation:
    """A full-integer int8 .tflite file in PyTorch, NHWC tensors as NCHW."""

    def __init__(self, int8_model: bytes, learn_scales: bool = False) -> None:
        """``learn_scales``: the op outputs' scales (all but LOGISTIC's, which the kernel
        fixes at 1/256) become parameters too, as LSQ and QDrop learn them."""
        import torch

        self.torch = torch
        self.data = bytearray(int8_model)
        g = TFLiteGraph(self.data)
        self.graph = g
        self.ops: list[Op] = []
        self.input_name = g.name(int(g.sg.Inputs(0)))
        self.input_q = _quant(g, int(g.sg.Inputs(0)))
        self.tail: str | None = None
        tail_start = len(g.kinds)
        for i, kind in enumerate(g.kinds):
            if kind not in SIMULATED:
                # What follows (DistortionNet's max pool and patch tiling, with its
                # requantizations) has no weights: the simulation ends before it, and
                # blocks are matched up to there.
                self.tail, tail_start = kind, i
                break
            self.ops.append(Op(g, i, kind))
        if not self.ops:
            raise SystemExit(f"op 0: {g.kinds[0]} is not simulated")
        self.output_name = g.name(int(g.sg.Outputs(0)))
        self.tensor_index = {g.name(t): t for t in range(g.sg.TensorsLength())}
        self.log_scales: dict[str, object] = {}
        # A tensor that an op beyond the simulation reads keeps its scale: MAX_POOL_2D,
        # SLICE and CONCATENATION take their output's scale from their input.
        tail_reads = {g.name(t) for i in range(tail_start, len(g.kinds))
                      for t in g.inputs[i] if t >= 0}
        if learn_scales:
            for op in self.ops:
                if (op.out_q is not None and op.kind != "LOGISTIC"
                        and op.output not in tail_reads):
                    self.log_scales[op.output] = torch.tensor(
                        float(np.log(op.out_q[0])), requires_grad=True)
        self.params: dict[int, tuple] = {}
        for op in self.ops:
            if op.weight is not None:
                delta = torch.zeros(op.q_w.shape, dtype=torch.float32, requires_grad=True)
                shift = torch.zeros(op.q_b.shape, dtype=torch.float32, requires_grad=True)
                self.params[op.index] = (delta, shift)

    def fake(self, x, q: tuple[float, int] | None):
        if q is None:
            return x
        torch = self.torch
        s, z = q
        y = torch.clamp(torch.round(x / s) + z, -128, 127)
        return x + ((y - z) * s - x).detach()

    def scale(self, name: str) -> float:
        """A tensor's scale as it stands (learned, or the file's)."""
        if name in self.log_scales:
            return float(np.exp(float(self.log_scales[name])))
        return float(_quant(self.graph, self.tensor_index[name])[0][0])

    def fake_out(self, op: Op, y):
        if op.output not in self.log_scales:
            return self.fake(y, op.out_q)
        torch = self.torch
        s = torch.exp(self.log_scales[op.output])
        z = op.out_q[1]
        v = y / s
        v = v + (torch.round(v) - v).detach()
        return (torch.clamp(v + z, -128, 127) - z) * s

    def weights(self, op: Op):
        """The op's float weights (torch layout) and bias, int8 steps moved by its params."""
        torch = self.torch
        delta, shift = self.params[op.index]
        q = torch.from_numpy(op.q_w.astype(np.float32))
        moved = q + delta
        moved = moved + (torch.round(moved) - moved).detach()
        moved = torch.clamp(moved, -127, 127)
        s = torch.from_numpy(op.w_scale.astype(np.float32))
        step = op.out_q[0] if op.out_q else 1.0
        b = torch.from_numpy((op.q_b * op.b_scale).astype(np.float32)) + shift * step
        if op.kind == "CONV_2D":  # OHWI -> OIHW
            w = (moved * s.reshape(-1, 1, 1, 1)).permute(0, 3, 1, 2)
        else:  # 1HWC -> C1HW
            w = (moved * s.reshape(1, 1, 1, -1)).permute(3, 0, 1, 2)
        return w, b

    def run_op(self, op: Op, env: dict):
        xs = [env[n] for n in op.inputs]
        weights = self.weights(op) if op.weight is not None else (None, None)
        return self.fake_out(op, compute(op.kind, xs, op.options, *weights, op.axes))

    def run(self, env: dict, ops: list[Op]) -> dict:
        for op in ops:
            env[op.output] = self.run_op(op, env)
        return env

    def nhwc_in(self, x: np.ndarray):
        t = self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(0, 3, 1, 2)
        if self.input_q is not None:
            t = self.fake(t, (float(self.input_q[0][0]), int(self.input_q[1][0])))
        return t

    def write(self) -> bytes:
        """The int8 file with every convolution's moved weights and shifted bias."""
        torch = self.torch
        data = bytearray(self.data)
        g = TFLiteGraph(data)
        with torch.no_grad():
            for op in self.ops:
                if op.weight is None:
                    continue
                delta, shift = self.params[op.index]
                q = np.clip(np.round(op.q_w + delta.numpy()), -127, 127).astype(np.int8)
                step = op.out_q[0] if op.out_q else 1.0
                b = op.q_b * op.b_scale + shift.numpy().astype(np.float64) * step
                # The bias's scale is the input's times the weights' (the input's may have
                # been learned).
                b_scale = self.scale(op.inputs[0]) * op.w_scale
                info = np.iinfo(np.int32)
                qb = np.clip(np.round(b / b_scale), info.min, info.max).astype(np.int32)
                buffer_view(data, g.m, int(g.sg.Tensors(op.weight).Buffer()),
                            np.int8)[...] = q.reshape(-1)
                bt = g.sg.Tensors(op.bias)
                buffer_view(data, g.m, int(bt.Buffer()), np.int32)[...] = qb
                view = bt.Quantization().ScaleAsNumpy()
                view[...] = b_scale.astype(view.dtype)
            for name, log_s in self.log_scales.items():
                view = g.sg.Tensors(self.tensor_index[name]).Quantization().ScaleAsNumpy()
                view[...] = np.float32(np.exp(float(log_s)))
        return bytes(data)


class FloatNet:
    """The float32 file's ops in PyTorch (its weights as they are), for targets."""

    def __init__(self, float_model: bytes) -> None:
        import torch

        g = TFLiteGraph(bytearray(float_model))
        self.g = g
        self.ops = []
        for i, kind in enumerate(g.kinds):
            if kind not in SIMULATED:
                break
            ins = [t for t in g.inputs[i] if t >= 0]
            w = b = None
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = torch.from_numpy(g.float_view(ins[1]).copy())
                w = w.permute(0, 3, 1, 2) if kind == "CONV_2D" else w.permute(3, 0, 1, 2)
                b = torch.from_numpy(g.float_view(ins[2]).copy())
            axes = _axes(g, ins[1]) if kind == "MEAN" else None
            self.ops.append((kind, ins, g.outputs[i][0], _options(g, i, kind), w, b, axes))


def compute(kind: str, xs, options: dict, w, b, axes):
    """One op in float on NCHW tensors: a convolution with TFLite's SAME padding (the
    lesser half before) and fused activation, or an elementwise op, or a MEAN over NHWC
    ``axes``."""
    import torch
    import torch.nn.functional as F

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        x = xs[0]
        kh, kw = w.shape[2], w.shape[3]
        (sh, sw), (dh, dw) = options["stride"], options["dilation"]
        if options["same"]:
            oh, ow = -(-x.shape[2] // sh), -(-x.shape[3] // sw)
            ph = max((oh - 1) * sh + (kh - 1) * dh + 1 - x.shape[2], 0)
            pw = max((ow - 1) * sw + (kw - 1) * dw + 1 - x.shape[3], 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        groups = x.shape[1] if kind == "DEPTHWISE_CONV_2D" else 1
        y = F.conv2d(x, w, b, stride=(sh, sw), dilation=(dh, dw), groups=groups)
        act = options["activation"]
        if act == 1:
            return torch.relu(y)
        if act == 3:
            return torch.clamp(y, 0, 6)
        if act != 0:
            raise SystemExit(f"fused activation {act} is not simulated")
        return y
    if kind == "ADD":
        return xs[0] + xs[1]
    if kind == "MUL":
        return xs[0] * xs[1]
    if kind == "LOGISTIC":
        return torch.sigmoid(xs[0])
    nchw = {0: 0, 1: 2, 2: 3, 3: 1}
    return xs[0].mean(dim=[nchw[a] for a in axes], keepdim=True)


def blocks(sim: Simulation, cuts: dict[int, str]) -> list[tuple[int, int, str, str]]:
    """(first op, end op, input tensor, output tensor) of each block, in simulated ops.

    A block runs from one single-tensor cut to the next cut that ends a residual ADD or a
    convolution after a depthwise convolution of the block (an MBConv block: expansion,
    depthwise, squeeze-excitation, projection); the last takes every op left."""
    positions = sorted(cuts)
    ends = []
    seen_depthwise = False
    start = 0
    for p in positions[1:]:
        seen_depthwise |= any(o.kind == "DEPTHWISE_CONV_2D" for o in sim.ops[start:p])
        if seen_depthwise and sim.ops[p - 1].kind in ("ADD", "CONV_2D"):
            ends.append(p)
            start, seen_depthwise = p, False
    if not ends or ends[-1] != len(sim.ops):
        ends.append(len(sim.ops))
    out, a = [], 0
    for b in ends:
        out.append((a, b, cuts[a], sim.ops[b - 1].output))
        a = b
    return out


def delegate_nodes(model: bytes) -> int:
    """The XNNPACK nodes LiteRT makes of ``model`` (one for a plain full-integer file)."""
    from uvq_int8.runtime.interpreter import interpreter_class
    from uvq_int8.util import quiet_fd2

    with quiet_fd2():
        interp = interpreter_class()(model_content=bytes(model), num_threads=1)
        interp.allocate_tensors()
    return sum(1 for op in interp._get_ops_details() if op["op_name"] == "DELEGATE")


def check_ops(sim: Simulation, net: str, frame: np.ndarray, threads: int) -> dict:
    """Each simulated op fed the int8 file's own inputs (LiteRT, every tensor kept) against
    the file's output of that op: the worst SNR in dB, and how many ops agree to within
    one output step everywhere."""
    import torch

    x = net_input(net, frame)
    probe = T.TensorProbe(sim.data, threads, keep_all=True)
    probe.run(x)
    tensors = {o.name: a for o, a in probe.outputs()}
    tensors[sim.input_name] = probe.tensor(int(sim.graph.sg.Inputs(0)))
    worst, within = float("inf"), 0
    with torch.no_grad():
        for op in sim.ops:
            env = {n: torch.from_numpy(np.ascontiguousarray(
                tensors[n])).permute(0, 3, 1, 2) for n in op.inputs}
            y = sim.run_op(op, env).permute(0, 2, 3, 1).numpy()
            a = tensors[op.output]
            y = y.reshape(a.shape)
            worst = min(worst, T.snr_db(float((a.astype(np.float64) ** 2).sum()),
                                        float(((a - y).astype(np.float64) ** 2).sum())))
            within += bool(np.abs(a - y).max() <= op.out_q[0] * 1.001)
    return {"ops": len(sim.ops), "ops_within_one_step": within,
            "worst_op_snr_db": round(worst, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path,
                   help="dir with one weight set's float32 and int8-static files")
    p.add_argument("--net", choices=("content", "distortion"), default="content")
    p.add_argument("--int8", type=Path, help="the int8 file to start from (default: "
                                             "DIR/<net>_net_int8_static.tflite)")
    p.add_argument("--frames", type=int, default=16,
                   help="frames of each --calibration-splits split")
    p.add_argument("--calibration-splits", default="calibration",
                   help="the natural splits to reconstruct on, comma-separated (e.g. "
                        "calibration,confirmation: more images, to see whether the "
                        "calibration images' variety limits it; measure on another split)")
    p.add_argument("--iterations", type=int, default=300, help="Adam steps per block")
    p.add_argument("--batch", type=int, default=4, help="items per step")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam's step on the weights, in "
                                                          "int8 steps")
    p.add_argument("--scale-lr", type=float, default=0.0,
                   help="also learn the op outputs' scales (not LOGISTIC's), Adam's step on "
                        "their logarithm (0: keep the file's scales)")
    p.add_argument("--drop", type=float, default=0.5,
                   help="QDrop: the share of the block input's elements taken from the "
                        "float32 net instead of the int8 one (0: int8 input only)")
    p.add_argument("--eval-split", default="holdout", choices=("holdout", "search",
                                                               "confirmation"))
    p.add_argument("--eval-frames", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", type=Path, help="write the reconstructed int8 file here")
    p.add_argument("--check-ops", action="store_true",
                   help="instead: feed each simulated op the int8 file's own inputs on one "
                        "holdout frame and compare it with the file's output of that op")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    splits = args.calibration_splits.split(",")
    if args.eval_split in splits:
        p.error(f"--eval-split {args.eval_split} is one of the splits reconstructed on")

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    int8_path = args.int8 or args.models / f"{args.net}_net_int8_static.tflite"
    for path in (args.models / f"{args.net}_net.tflite", int8_path):
        if not path.is_file():
            p.error(f"{path} does not exist (build float32,int8-static into --models)")
    float_model = (args.models / f"{args.net}_net.tflite").read_bytes()
    int8_model = int8_path.read_bytes()
    started = time.perf_counter()
    sim = Simulation(int8_model, learn_scales=args.scale_lr > 0)
    if args.check_ops:
        row = {"net": args.net, "int8": str(int8_path),
               **check_ops(sim, args.net, natural.make_set("holdout", 1).frames[0],
                           args.threads), "machine": machine_info()}
        print(json.dumps(row))
        return 0
    ref = FloatNet(float_model)
    if len(ref.ops) != len(sim.ops) or any(
            k != o.kind for (k, *_), o in zip(ref.ops, sim.ops)):
        raise SystemExit("the float32 and int8 files' ops differ")
    fnames = {ref.g.name(op[2]): sim.ops[i].output for i, op in enumerate(ref.ops)}
    fnames[ref.g.name(int(ref.g.sg.Inputs(0)))] = sim.input_name

    def float_run(env: dict, lo: int, hi: int) -> dict:
        for kind, ins, out, *rest in ref.ops[lo:hi]:
            xs = [env[fnames[ref.g.name(t)]] for t in ins
                  if not ref.g.is_constant(t)]
            options, w, b, axes = rest
            env[fnames[ref.g.name(out)]] = compute(kind, xs, options, w, b, axes)
        return env

    float_cuts = T.single_cuts(float_model)
    cuts = {p: fnames[name] for p, name in float_cuts.items() if p < len(sim.ops)}
    cuts[0] = sim.input_name
    parts = blocks(sim, cuts)
    cals = [natural.make_set(s, args.frames) for s in splits]
    xs = [net_input(args.net, f) for cal in cals for f in cal.frames]
    inp = torch.cat([sim.nhwc_in(x) for x in xs])  # items: frames or patches
    hold = natural.make_set(args.eval_split, args.eval_frames)
    before = output_agreement(args.net, float_model, int8_model, hold.frames, args.threads)
    print(f"{args.net}: {len(parts)} blocks, {len(inp)} items; int8 file before: "
          f"{before[0]} dB", file=sys.stderr, flush=True)
    xq, xf = inp, inp.clone()
    rows = []
    n = len(inp)
    for bi, (lo, hi, name_in, name_out) in enumerate(parts):
        block_ops = sim.ops[lo:hi]
        with torch.no_grad():
            target = torch.cat([float_run({name_in: xf[i:i + 1]}, lo, hi)[name_out]
                                for i in range(n)])
        params = [t for op in block_ops if op.index in sim.params for t in sim.params[op.index]]
        scales = [sim.log_scales[op.output] for op in block_ops if op.output in sim.log_scales]

        def block_out(x):
            return sim.run({name_in: x}, block_ops)[name_out]

        def block_error() -> float:
            with torch.no_grad():
                err = sum(float(((block_out(xq[i:i + 1]) - target[i:i + 1]) ** 2).sum())
                          for i in range(n))
            return T.snr_db(float((target.double() ** 2).sum()), err)

        snr0 = block_error()
        if params:
            groups = [{"params": params, "lr": args.lr}]
            if scales:
                groups.append({"params": scales, "lr": args.scale_lr})
            opt = torch.optim.Adam(groups)
            start_scales = [float(t.detach()) for t in scales]
            for it in range(args.iterations):
                pick = torch.randint(0, n, (min(args.batch, n),))
                x = xq[pick]
                if args.drop > 0:
                    keep = torch.rand_like(x) < args.drop
                    x = torch.where(keep, xf[pick], x)
                loss = ((block_out(x) - target[pick]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for t in params:
                        t.clamp_(-2.0, 2.0)
        snr1 = block_error()
        if snr1 < snr0:  # keep the block's file weights as they were
            with torch.no_grad():
                for t in params:
                    t.zero_()
                for t, v in zip(scales, start_scales):
                    t.fill_(v)
            snr1 = block_error()
        with torch.no_grad():
            xq = torch.cat([block_out(xq[i:i + 1]) for i in range(n)])
            xf = target
        rows.append({"block": bi, "ops": [lo, hi], "sim_snr_before_db": round(snr0, 2),
                     "sim_snr_after_db": round(snr1, 2)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    model = sim.write()
    after = output_agreement(args.net, float_model, model, hold.frames, args.threads)
    # How closely the simulation mirrors the int8 kernels: its output against the file's
    # (where it simulates the whole net).
    from uvq_int8 import runtime
    import tempfile
    sums = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(model)
        runner = runtime.NetRunner(args.net, path, args.threads)
        with torch.no_grad():
            sums = T.PairSums() if sim.tail is None else None
            for f in hold.frames[:4] if sums is not None else ():
                x = net_input(args.net, f)
                s = sim.run({sim.input_name: sim.nhwc_in(x)}, sim.ops)
                y = s[sim.output_name].permute(0, 2, 3, 1).numpy()
                out = runner.run(x)[0]
                sums.add(out, y.reshape(out.shape))
    result = {"net": args.net, "models": str(args.models), "int8": str(int8_path),
              "eval_split": args.eval_split, "eval_frames": len(hold.frames),
              "calibration_splits": splits, "calibration_frames": len(xs),
              "iterations": args.iterations, "batch": args.batch, "lr": args.lr,
              "scale_lr": args.scale_lr, "drop": args.drop, "seed": args.seed,
              "snr_db_before": before[0], "cosine_before": before[1],
              "snr_db_after": after[0], "cosine_after": after[1],
              "simulation_vs_file_snr_db": None if sums is None else round(sums.snr_db, 2),
              "simulated_ops": len(sim.ops), "not_simulated_from": sim.tail,
              "delegate_nodes": delegate_nodes(model),
              "seconds": round(time.perf_counter() - started, 1),
              "machine": machine_info(), "blocks": rows}
    print(json.dumps({k: v for k, v in result.items() if k not in ("blocks", "machine")}))
    if args.save:
        args.save.write_bytes(model)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
