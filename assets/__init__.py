"""What SynthGap ships besides code, installed as the package ``synthgap_assets``
(``pyproject.toml`` maps it to this folder): read with ``importlib.resources``,
never by a path relative to the source tree, so a regular install works too."""

from importlib.resources import files
from pathlib import Path


def path(name: str) -> Path:
    """A shipped file or folder on disk (pip installs packages as plain files)."""
    return Path(str(files(__name__) / name))
