"""ClinVault: backup and restore for regulated clinical platforms."""

# The one place the version is written: the package build reads it from here
# (pyproject.toml, [tool.hatch.version]), so an installed ClinVault and its source agree
# without asking the package metadata at every start (importlib.metadata costs a CLI call
# about 50 ms).
__version__ = "0.1.0"

__all__ = ["__version__"]
