"""Load the data pickles of StackGAN / AttnGAN / DF-GAN without running code from them.

Those releases ship ``filenames.pickle``, ``class_info.pickle``, ``captions.pickle`` and
``char-CNN-RNN-embeddings.pickle``: lists, dicts, strings, numbers and numpy arrays, most
written by Python 2. An ordinary ``pickle.load`` would also import and call anything the
file names (``os.system`` ...), so :func:`load_pickle` uses an unpickler whose
``find_class`` admits only the few globals such data needs:

* plain builtins: ``list dict tuple set frozenset str bytes bytearray int float complex bool``
  (Python 2 spellings such as ``__builtin__.set`` / ``__builtin__.unicode`` included);
* ``collections.OrderedDict`` and ``collections.defaultdict``;
* ``_codecs.encode`` (how protocol-2 pickles store ``bytes``);
* numpy arrays and scalars: ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy.core.multiarray._reconstruct`` / ``.scalar``, ``numpy.core.numeric._frombuffer``
  and the same under ``numpy._core`` (numpy >= 2).

Everything else is refused before it is imported. Python 2 pickles are read with
``encoding="latin1"`` (byte strings become ``str``; numpy array buffers come back intact),
which is also harmless for Python 3 pickles.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from t2igan import T2IError

_BUILTINS = frozenset({"list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                       "int", "float", "complex", "bool", "unicode", "long"})


def _numpy_global(module: str, name: str):
    import numpy as np

    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    try:  # numpy >= 2 keeps these in numpy._core; numpy 1.x in numpy.core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(multiarray, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return getattr(numeric, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return super().find_class(module, name)  # maps py2 names (unicode -> str, long -> int)
        if module == "collections" and name in ("OrderedDict", "defaultdict"):
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy":
            obj = _numpy_global(module, name)
            if obj is not None:
                return obj
        raise T2IError(f"refusing to load {self._path}: it references {module}.{name}, "
                       "which a data pickle must not contain")


def load_pickle(path: str | os.PathLike):
    """Unpickle a data file (lists, dicts, strings, numbers, numpy arrays) safely; T2IError otherwise."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise T2IError(f"pickle file missing: {path}") from None
    except OSError as e:
        raise T2IError(f"cannot read {path}: {e.strerror or e.__class__.__name__}") from None
    with f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except T2IError:
            raise
        except MemoryError:
            raise T2IError(f"{path}: too large to unpickle in memory") from None
        except Exception as e:  # corrupt or truncated data raises a zoo of exception types
            raise T2IError(f"{path} is not a readable pickle ({e.__class__.__name__}: {str(e)[:80]})") from None
