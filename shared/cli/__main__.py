"""``python -m shared.cli``: the same as the ``entra-sync`` command."""

import sys

from shared.cli import main

sys.exit(main())
