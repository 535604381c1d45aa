"""A backend's three nets, loaded once per process: ``load_models`` and ``Models``.

``Models.features`` and ``Models.aggregate`` are the runtime path every score takes
(``uvq``, ``uvq_int8.score``, verify's speed figures and the benchmarks).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from uvq_int8.backends import NETS, BackendLike, get_backend
from uvq_int8.errors import ModelFilesError
from uvq_int8.runtime import frames as F
from uvq_int8.runtime.interpreter import NetRunner
from uvq_int8.runtime.manifest import MANIFEST_NAME
from uvq_int8.runtime.manifest import entries as manifest_entries

log = logging.getLogger(__name__)


@dataclass
class Models:
    """The three nets of one backend, loaded once."""

    backend: str
    model_dir: Path
    threads: int
    runners: Mapping[str, NetRunner] = field(default_factory=dict)

    @property
    def paths(self) -> dict[str, Path]:
        return {net: r.path for net, r in self.runners.items()}

    @property
    def sha256(self) -> dict[str, str]:
        return {net: r.sha256 for net, r in self.runners.items()}

    def inputs_for(self, frame_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ContentNet input, DistortionNet patches) for one frame, as ``features`` feeds them."""
        distortion = self.runners["distortion"]
        if not distortion.inputs[0].quantized:
            return F.net_inputs(frame_uint8)
        # A full-integer DistortionNet: map uint8 pixels straight to its int8 input
        # through a table (the same numbers as quantizing the [-1,1] frame, without a
        # float pass over every pixel of the frame).
        return (F.content_input(frame_uint8),
                distortion.quantize_pixels(F.cut_patches(frame_uint8)))

    def run_net(self, net: str, *arrays: np.ndarray) -> list[np.ndarray]:
        """One net on its inputs (float32 or already quantized); float32 outputs."""
        return self.runners[net].run(*arrays)

    def features(self, frame_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.features_from_inputs(*self.inputs_for(frame_uint8))

    def features_from_inputs(self, content_in: np.ndarray,
                             patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        content = self.run_net("content", content_in)[0]
        distortion = self.run_net("distortion", patches)[0]
        return content, distortion

    def aggregate(self, content: np.ndarray, distortion: np.ndarray) -> tuple[float, float]:
        """(logit, score) for one frame's features."""
        runner = self.runners["aggregation"]
        outs = dict(zip(runner.roles, runner.run(content, distortion)))
        score = float(outs["score"].reshape(-1)[0])
        if "logit" in outs:
            logit = float(outs["logit"].reshape(-1)[0])
        else:  # an older single-output file
            logit = F.score_to_logit(score)
        return logit, score


_CACHE: dict[tuple, Models] = {}
_CACHE_LOCK = threading.Lock()


def load_models(backend: str | BackendLike, model_dir: str | Path, threads: int,
                check_manifest: bool = True) -> Models:
    """Load (once per process) the three nets of a backend from ``model_dir``."""
    spec = backend if isinstance(backend, BackendLike) else get_backend(str(backend))
    model_dir = Path(model_dir).expanduser()
    paths = {net: Path(p) for net, p in spec.model_paths(model_dir).items()}
    key = (spec.name, tuple(str(paths[n]) for n in NETS), threads)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and all(
                r.path.stat().st_mtime_ns == r.mtime_ns for r in cached.runners.values()):
            return cached
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise ModelFilesError(
                f"backend {spec.name!r} has no model files in {model_dir} (missing "
                f"{', '.join(Path(m).name for m in missing)}); build them with "
                f"'uvq-int8 build --backend {spec.name} --out {model_dir}' (with your "
                f"checkpoints), or point --model-dir / UVQ_MODEL_DIR at a built set")
        hashes: dict[Path, dict[str, dict] | None] = {}
        runners = {}
        for net in NETS:
            directory = paths[net].parent
            if directory not in hashes:
                hashes[directory] = manifest_entries(directory) if check_manifest else None
                if check_manifest and hashes[directory] is None:
                    log.warning("no %s in %s: model files cannot be checked", MANIFEST_NAME,
                                directory)
            entry = (hashes[directory] or {}).get(paths[net].name)
            expected = entry.get("sha256") if entry else None
            if check_manifest and hashes[directory] is not None and expected is None:
                # A plugin's own file next to ours: usable, but nothing to check it against.
                log.warning("%s is not listed in %s; its sha256 cannot be checked",
                            paths[net], directory / MANIFEST_NAME)
            runners[net] = NetRunner(net, paths[net], threads, expected, entry)
        models = Models(spec.name, model_dir, threads, runners)
        _CACHE[key] = models
        return models
