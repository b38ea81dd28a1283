"""CEEMS in Python: a Compute Energy & Emissions Monitoring Stack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ceems")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
