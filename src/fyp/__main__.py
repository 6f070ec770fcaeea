"""``python -m fyp`` is the ``fyp`` command."""

from fyp.cli import main

main()
