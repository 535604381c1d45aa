"""The runtime: everything ``uvq VIDEO`` needs, and nothing that imports torch.

- ``frames``: a 1080p RGB frame -> net inputs, and the score scaling;
- ``decode``: probing, and upstream's frames from one of two decoders (``decode.uvq_frames``
  is the one source of decoded frames): PyAV packet by packet (the default, with ffmpeg
  5.1's ``-r`` frame choice from timestamps) or ffmpeg's command line;
- ``interpreter``: one .tflite file on LiteRT, checked at load;
- ``models``: a backend's three nets (``load_models``, ``Models``);
- ``manifest``: the manifest schema and its one reader;
- ``tflite_info``: what a .tflite holds;
- ``scoring``: a video end to end, as upstream's result dict.
"""

from uvq_int8.runtime.interpreter import BUILD_HINT, EXPECTED_SHAPES, NetRunner
from uvq_int8.runtime.manifest import MANIFEST_NAME
from uvq_int8.runtime.manifest import entries as manifest_entries
from uvq_int8.runtime.models import Models, load_models

__all__ = ["BUILD_HINT", "EXPECTED_SHAPES", "MANIFEST_NAME", "Models", "NetRunner",
           "load_models", "manifest_entries"]
