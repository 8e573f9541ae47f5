"""Project configuration: ``fabric.yaml`` models and loading."""

from fabric.config.loader import DEFAULT_CONFIG, load_config
from fabric.config.models import ProjectConfig

__all__ = ["DEFAULT_CONFIG", "ProjectConfig", "load_config"]
