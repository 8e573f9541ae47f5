"""fabric: entity-centric data preparation for machine-learning teams."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fabric-entities")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
