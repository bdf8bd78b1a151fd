"""``python -m edgeship.cli`` runs the command line."""

from edgeship._entry import main

main()
