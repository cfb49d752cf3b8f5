"""``python -m driftloader``: the same as the ``driftloader`` command."""

import sys

from .cli import main

sys.exit(main())
