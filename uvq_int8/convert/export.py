"""PyTorch checkpoint -> float32 .tflite with litert-torch, one net per process.

``convert_in_subprocess`` runs ``python -m uvq_int8.convert.export`` so each conversion
starts with a fresh heap and gives its memory back when it ends (the build records
each worker's peak RSS in the manifest's ``conversions``). The worker also checks the
file it wrote: every output
against the PyTorch net on the same inputs, in the export's order, so a file
whose outputs came out swapped (score and logit) is refused, not shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from uvq_int8.errors import UserError
from uvq_int8.runtime.interpreter import OUTPUT_ROLES  # noqa: F401  (re-exported)

INPUT_ROLES = {
    "content": ("frame",),
    "distortion": ("patches",),
    "aggregation": ("content_features", "distortion_features"),
}
# float32 TFLite vs PyTorch on the same inputs; the build records the measured largest
# difference per net in the manifest (builds[].conversions).
CHECK_ATOL = 2e-3
CHECK_RTOL = 1e-3
LOG_TAIL_LINES = 15


class ConversionError(UserError):
    """litert-torch could not convert a net, or the file it wrote is wrong."""


@dataclass(frozen=True)
class ConversionResult:
    net: str
    path: str
    seconds: float
    peak_rss_bytes: int
    # Largest |tflite - torch| per output, in the export's output order.
    max_abs_diff: list[float]


def convert_net(net: str, checkpoint: str | Path, out_path: str | Path,
                threads: int | None = None) -> ConversionResult:
    """Convert in this process (imports torch and litert-torch) and check the result."""
    started = time.perf_counter()
    import numpy as np
    import torch

    import litert_torch
    from uvq_int8.convert import nets

    if threads:
        torch.set_num_threads(threads)
    module = nets.export_module(net, nets.load_core(net, checkpoint))
    sample = nets.example_inputs(net)
    with torch.inference_mode():
        expected = module(*sample)  # the nets as written, before the rewrite below
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    rewrite_for_export(module)
    edge_model = litert_torch.convert(module, sample)
    out_path = Path(out_path)
    edge_model.export(str(out_path))
    del edge_model, module

    got = _run_tflite(out_path, [s.numpy() for s in sample], threads or 1)
    diffs = _check_outputs(net, expected, got, np)
    return ConversionResult(net, str(out_path), time.perf_counter() - started,
                            peak_rss_bytes(), diffs)


def rewrite_for_export(module) -> int:
    """Swap each squeeze-excitation block for one whose spatial mean is two short means.

    Same maths. TFLite's MEAN adds a whole 180x320 map into one float32 accumulator;
    the rows-then-columns form keeps each sum short. Measured on golden frame 0, the
    float32 DistortionNet's largest feature error fell from 1.7e-3 to 1.3e-4 (PyTorch's
    own batch-size noise is 1.2e-4), at the same speed. Returns the number of blocks swapped.
    """
    from uvq_int8.convert import nets

    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nets.SqueezeExcite):
                setattr(parent, name, _two_step_mean_se(child))
                swapped += 1
    return swapped


def _two_step_mean_se(se):
    import torch
    import torch.nn.functional as F

    class TwoStepMeanSqueezeExcite(torch.nn.Module):
        def __init__(self, original) -> None:
            super().__init__()
            self.fc1, self.fc2 = original.fc1, original.fc2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
            return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))

    return TwoStepMeanSqueezeExcite(se)


def _run_tflite(path: Path, inputs: list, threads: int) -> list:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    # Subgraph order is what hosts see through get_input/output_details().
    for detail, value in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def _check_outputs(net: str, expected: list, got: list, np) -> list[float]:
    roles = OUTPUT_ROLES[net]
    if len(got) != len(expected):
        raise ConversionError(f"converted {net} net has {len(got)} outputs, expected "
                              f"{len(expected)} ({', '.join(roles)})")

    def close(a, b) -> bool:
        return a.shape == b.shape and bool(np.allclose(a, b, atol=CHECK_ATOL, rtol=CHECK_RTOL))

    if all(close(g, e) for g, e in zip(got, expected)):
        return [float(np.max(np.abs(g - e))) for g, e in zip(got, expected)]
    if len(got) == 2 and close(got[0], expected[1]) and close(got[1], expected[0]):
        raise ConversionError(
            f"litert-torch put the {net} net's outputs in the wrong order ({roles[1]} first); "
            f"hosts read output 0 as the {roles[0]}")
    worst = [float(np.max(np.abs(g - e))) if g.shape == e.shape else float("inf")
             for g, e in zip(got, expected)]
    raise ConversionError(f"converted {net} net does not match PyTorch: max abs difference "
                          f"per output {worst} (allowed {CHECK_ATOL})")


def peak_rss_bytes(children: bool = False) -> int:
    """getrusage's peak RSS of this process (or of its largest waited-for child); 0 if unknown."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; Linux: KiB


def convert_in_subprocess(net: str, checkpoint: str | Path, out_path: str | Path,
                          log_path: str | Path, threads: int = 1,
                          timeout: float | None = None,
                          on_start: Callable[[int], None] | None = None,
                          on_exit: Callable[[int], None] | None = None) -> ConversionResult:
    """Run ``convert_net`` in a fresh Python process; its chatter goes to ``log_path``.

    ``on_start``/``on_exit`` get the worker's pid (the build samples its memory).
    """
    out_path, log_path = Path(out_path), Path(log_path)
    result_path = out_path.with_suffix(".result.json")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TQDM_DISABLE", "1")
    cmd = [sys.executable, "-m", "uvq_int8.convert.export", net, str(checkpoint), str(out_path),
           "--result", str(result_path), "--threads", str(threads)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        if on_start:
            on_start(proc.pid)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ConversionError(f"converting the {net} net took longer than {timeout:.0f} s; "
                                  f"log: {log_path}") from None
        except BaseException:  # interrupted: do not leave the worker running
            proc.kill()
            proc.wait()
            raise
        finally:
            if on_exit:
                on_exit(proc.pid)
    if proc.returncode != 0 or not result_path.is_file():
        raise ConversionError(f"converting the {net} net failed (exit code {proc.returncode}):\n"
                              + _tail(log_path))
    data = json.loads(result_path.read_text())
    if "error" in data:
        raise ConversionError(data["error"])
    return ConversionResult(**data)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point: ``python -m uvq_int8.convert.export NET CHECKPOINT OUT --result JSON``."""
    parser = argparse.ArgumentParser(prog="python -m uvq_int8.convert.export")
    parser.add_argument("net", choices=sorted(OUTPUT_ROLES))
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        result = asdict(convert_net(args.net, args.checkpoint, args.out, args.threads))
        code = 0
    except UserError as exc:  # a known failure: the parent shows this one line
        result, code = {"error": str(exc)}, 0
    Path(args.result).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
