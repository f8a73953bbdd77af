"""trustlab: security of machine-learning systems, four labs behind one CLI."""

__version__ = "0.1.0"
