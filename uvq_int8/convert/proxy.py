"""Seeded proxy checkpoints, so the tool can be tried without the official weights.

They have the official layout and realistic activation ranges (BatchNorm
statistics are calibrated on synthetic frames), but they are random networks:
every score they give is meaningless as a quality judgement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uvq_int8.runtime import frames as F
from uvq_int8.backends import NETS
from uvq_int8.convert import CHECKPOINT_NAMES
from uvq_int8.util import atomic_writer



def _calibrate_batchnorm(model, batches) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
            module.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    model.eval()


def make_proxy_checkpoints(out_dir: str | Path, seed: int = 1234,
                           calibration_frames: int = 4) -> dict[str, Path]:
    """Write content/distortion/aggregation ``*.pth`` proxies; returns their paths."""
    import torch

    from uvq_int8.convert import nets
    from uvq_int8.synthetic import calibration_frames as synth

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = synth(calibration_frames)
    unit = [F.to_unit_range(f) for f in frames]
    paths: dict[str, Path] = {}
    for i, net in enumerate(NETS):
        torch.manual_seed(seed + i)
        model = nets.CORES[net]()
        if net == "content":
            batch = torch.from_numpy(np.stack([F.resize_for_content(u) for u in unit]))
            _calibrate_batchnorm(model, [batch.permute(0, 3, 1, 2)])
        elif net == "distortion":
            batches = [torch.from_numpy(F.cut_patches(u)).permute(0, 3, 1, 2) for u in unit]
            _calibrate_batchnorm(model, batches)
        path = out / CHECKPOINT_NAMES[net]
        with atomic_writer(path) as fh:
            torch.save(model.state_dict(), fh)
        paths[net] = path
    return paths
