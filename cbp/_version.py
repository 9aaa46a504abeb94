"""The single place where cbp's version is set."""

__version__ = "0.1.0"
