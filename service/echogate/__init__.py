"""echogate: the quality gate between transcript logging and training storage."""

__version__ = "0.1.0"
