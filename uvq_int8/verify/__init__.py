"""``uvq-int8 verify``: size, speed and accuracy of each backend against float32 and PyTorch.

- ``metrics``: errors, cosine, SNR and correlations (numpy);
- ``inputs``: clips (synthetic, .npz, videos decoded as ``uvq`` does), random inputs,
  the PyTorch reference (torch is imported only when checkpoints are given);
- ``run``: one pass over the frames through every backend's runtime path;
- ``thresholds``: the limits (the backend table's "verify" column) and the checks;
- ``results``: the report as data; ``report``: JSON, Markdown and the plot;
- ``guide``: the old INT8 guide's claims next to our measurements.
"""

from uvq_int8.backends import backends_with_files  # what "all" means to verify
from uvq_int8.verify.guide import GUIDE_CLAIMS, guide_comparison
from uvq_int8.verify.inputs import (Clip, TorchReference, checkpoint_paths, manifest_checkpoints,
                                    npz_clips, random_inputs, synthetic_clips, video_clip)
from uvq_int8.verify.metrics import StatsAccumulator, TensorStats, compare, plcc, srcc
from uvq_int8.verify.results import BASELINE, OUTPUTS, SCHEMA_VERSION, BackendReport, VerifyReport
from uvq_int8.verify.run import VerifySettings, load_backends, run_verify, select_backends
from uvq_int8.verify.thresholds import (EXIT_THRESHOLD, Check, Threshold, check_thresholds,
                                        default_thresholds, thresholds_for)

__all__ = ["backends_with_files", "BASELINE", "EXIT_THRESHOLD", "GUIDE_CLAIMS", "OUTPUTS", "SCHEMA_VERSION",
           "BackendReport", "Check", "Clip", "StatsAccumulator", "TensorStats", "Threshold",
           "TorchReference", "VerifyReport", "VerifySettings", "check_thresholds",
           "checkpoint_paths", "compare", "default_thresholds", "guide_comparison",
           "load_backends", "manifest_checkpoints", "npz_clips", "plcc", "random_inputs",
           "run_verify", "select_backends", "srcc", "synthetic_clips", "thresholds_for",
           "video_clip"]
