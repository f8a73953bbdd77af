"""``python -m trustlab`` (and ``accelerate launch -m trustlab ...``) runs the CLI."""

from trustlab.cli.main import main

main()
