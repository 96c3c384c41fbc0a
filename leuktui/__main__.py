"""``python -m leuktui``: the same as the ``leuktui`` command."""

import sys

from leuktui.cli import main

sys.exit(main())
