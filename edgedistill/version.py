"""The release: recorded in every run directory and report, and part of every stage fingerprint."""

__version__ = "0.1.0"
