"""``python -m uvq_int8`` is ``uvq-int8``."""

import sys

from uvq_int8.cli.main import main

sys.exit(main())
