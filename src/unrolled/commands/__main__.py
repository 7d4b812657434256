"""``python -m unrolled.commands``: the ``unrolled`` command line."""

import sys

from unrolled.commands.main import main

sys.exit(main())
