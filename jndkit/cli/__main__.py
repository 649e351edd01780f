"""``python -m jndkit.cli``: the ``jndkit`` command."""

from . import main

main()
