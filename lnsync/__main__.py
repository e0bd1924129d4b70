"""``python -m lnsync`` is the ``lnsync`` command."""

import sys

from lnsync.cli import main

sys.exit(main())
