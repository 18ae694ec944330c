"""Reading pickled numpy arrays without letting the pickle run code.

A pickle names the callables that rebuild its objects, and `pickle.load` calls them: a file
from elsewhere can run anything. Some data sets still ship as pickles (MNIST's classic
`mnist.pkl.gz`); this unpickler rebuilds numpy arrays, and tuples and lists of them, and refuses
every other callable before it is called.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import DataError

# The callables a pickled ndarray needs (numpy 1.x and 2.x spell the module differently).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays are read")
        if name == "_reconstruct":
            from numpy._core import multiarray

            return multiarray._reconstruct
        return getattr(np, name)


def load_arrays(path: Path) -> Any:
    """The arrays pickled in `path` (gzip-compressed when it ends in .gz), in their tuples and
    lists. Python 2 pickles (bytes as latin-1) are read too."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return ArraysOnlyUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable pickle ({exc})") from None
