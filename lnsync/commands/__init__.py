"""Sub-commands of the ``lnsync`` CLI, one module each (see :mod:`lnsync.cli`)."""
