"""Command-line layer: parse arguments, call the library, print.

``uvq-int8 SUBCOMMAND`` is dispatched to one module per subcommand in this
package; ``uvq`` (the upstream-compatible scorer) is ``main.uvq_main``, which sends one
video to ``score_cmd.py`` and a list, directory or stdin (and ``uvq-int8 batch``) to
``batch_cmd.py``. Both import what they share from ``common.py``, not each other.
"""

from uvq_int8.cli.main import main, uvq_main

__all__ = ["main", "uvq_main"]
