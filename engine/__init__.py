"""What runs in the worker's process: models, the dataset and its pipeline, training, evaluation,
prediction and the worker itself; each module uses torch or serves one that does (the run config,
the dataset's CSVs and images, the metrics). Queueing and scheduling are ``runner``'s.

Importing the package itself is light; torch loads with the modules that need it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leuktui")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
