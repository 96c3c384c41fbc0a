"""Everything that touches torch: models, data pipeline, training, evaluation and prediction.

Importing the package itself is light; torch loads with the modules that need it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leuktui")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
