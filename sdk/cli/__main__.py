"""``python -m edgeship.cli`` runs the command line."""

from edgeship.cli import main

main()
