"""The library's version, in one place below everything that records it (configs, manifests)."""

__version__ = "0.1.0"
