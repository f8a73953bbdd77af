"""The ``trustlab`` command line (typer). Lab sub-apps are thin layers over the labs' verbs.

Help is rendered by click's plain formatter unless TYPER_USE_RICH=1: typer's rich help costs ~0.15 s of imports
on every call, which would put ``trustlab --help`` above 10x a bare ``python -c pass`` (benchmarks/cli_startup.py).
Tables and progress bars still use rich.
"""

import os

os.environ.setdefault("TYPER_USE_RICH", "0")
# No telemetry or update checks from the libraries we drive.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
