"""Conversion: UVQ 1.5 checkpoints -> each backend's .tflite files and manifest.json.

This is what ``uvq-int8 build`` runs (the package was ``uvq_int8.build`` before 0.2.0: a
folder named ``build`` is skipped by ruff's, black's and pytest's defaults). Importing it
imports no torch; the modules that need the ``build`` extra (``nets``, ``export``,
``proxy``) import it when they run.

- ``options``: what a build is asked to do and what it reports (plain data);
- ``sources``: checkpoints and calibration/validation frames;
- ``plan``: cheap checks, and per file: build or skip;
- ``stages``: the build itself (``build``): conversion workers, recipes, auto, writing;
- ``export``: PyTorch -> float32 TFLite (litert-torch), one process per net;
- ``quantize``: the recipes (ai-edge-quantizer); ``calibration``: per-frame ranges;
- ``sensitivity``, ``auto``: the search behind ``--backend auto``;
- ``nets``: the three nets in PyTorch; ``proxy``: seeded proxy checkpoints for the demo.
"""

from uvq_int8.convert.options import (CALIBRATION_CONTENTS, DEFAULT_CALIBRATION_CONTENT,
                                      DEFAULT_CALIBRATION_FRAMES, DEFAULT_CONFIRMATION_FRAMES,
                                      DEFAULT_CONFIRMATION_LOOKS, DEFAULT_VALIDATION_FRAMES,
                                      MEMORY_BOUND_BYTES, BuildError, BuildOptions, BuildPlan,
                                      BuildSummary, CheckpointMissingError, FileJob, FileResult,
                                      Int8Settings, NullReporter, Reporter)
from uvq_int8.backends import buildable_backends  # what "all" means to build
from uvq_int8.convert.plan import (check_budget, plan_build, require_budget,
                                   require_build_tools, resolve_backends)
from uvq_int8.convert.sources import CHECKPOINT_NAMES, default_out_dir, resolve_checkpoints
from uvq_int8.convert.stages import build

__all__ = ["CALIBRATION_CONTENTS", "CHECKPOINT_NAMES", "DEFAULT_CALIBRATION_CONTENT",
           "DEFAULT_CALIBRATION_FRAMES", "DEFAULT_CONFIRMATION_FRAMES",
           "DEFAULT_CONFIRMATION_LOOKS", "DEFAULT_VALIDATION_FRAMES", "MEMORY_BOUND_BYTES",
           "BuildError", "BuildOptions", "BuildPlan", "BuildSummary", "CheckpointMissingError",
           "FileJob", "FileResult", "Int8Settings", "NullReporter", "Reporter", "build",
           "buildable_backends", "check_budget", "default_out_dir", "plan_build",
           "require_budget", "require_build_tools", "resolve_backends", "resolve_checkpoints"]
