"""Command-line layer: parse arguments, call the library, print.

``uvq-int8 SUBCOMMAND`` is dispatched to one module per subcommand in this
package; ``uvq`` (the upstream-compatible scorer) lives in ``score_cmd.py``, its batch
mode and ``uvq-int8 batch`` in ``batch_cmd.py``.
"""

from uvq_int8.cli.main import main, uvq_main

__all__ = ["main", "uvq_main"]
