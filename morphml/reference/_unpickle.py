"""Reading PCNtoolkit 0.x pickles without PCNtoolkit and without trusting them.

A pickle is a program: ``pickle.load`` runs whatever callable its ``GLOBAL`` opcodes name. The
braincharts archives are pickles of a few PCNtoolkit classes and numpy arrays, so this reader
admits exactly those globals, each mapped to something harmless of morphml's own: the
PCNtoolkit classes become plain attribute records (no PCNtoolkit code runs, none is needed),
numpy arrays are rebuilt from their raw bytes with a numeric dtype. Any other global
(``os.system``, ``builtins.eval``, another class) is refused before anything is called, with
its name in the message.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from morphml.exceptions import UntrustedPickleError

__all__ = ["PickleRecord", "read_pickle"]


class PickleRecord:
    """The attributes of one pickled PCNtoolkit object, nothing else (no methods run).

    ``kind`` is the class name it was pickled as (``"NormBLR"``, ``"BLR"``,
    ``"WarpSinArcsinh"``); ``state`` holds its attributes as stored.
    """

    kind = "record"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UntrustedPickleError(
                f"a pickled {self.kind} holds a {type(state).__name__} state; expected its "
                "attribute dictionary"
            )
        self.state = dict(state)

    def __repr__(self) -> str:
        return f"PickleRecord({self.kind}, {sorted(self.state)})"


class _NormBLR(PickleRecord):
    kind = "NormBLR"


class _BLR(PickleRecord):
    kind = "BLR"


class _WarpSinArcsinh(PickleRecord):
    kind = "WarpSinArcsinh"


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` as the class argument of ``_reconstruct`` only."""


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    if not isinstance(spec, str):
        raise UntrustedPickleError(f"a pickled dtype is {spec!r}; expected a type code like 'f8'")
    dtype = np.dtype(spec)
    if dtype.kind not in "biuf":  # object, string, record and void dtypes are never needed
        raise UntrustedPickleError(f"a pickled array has dtype {spec!r}; expected a number type")
    return dtype


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    if cls is not _NdarrayMarker:
        raise UntrustedPickleError(
            f"numpy _reconstruct is asked for {cls!r}; only numpy.ndarray is admitted"
        )
    # BUILD then calls ndarray.__setstate__ with (version, shape, dtype, fortran, bytes); the
    # dtype there can only come from _dtype above, so the bytes are read as numbers
    return np.empty(0, dtype=np.uint8)


def _scalar(dtype: Any, data: Any) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise UntrustedPickleError("a pickled numpy scalar is not (dtype, bytes)")
    if len(data) != dtype.itemsize:
        raise UntrustedPickleError(
            f"a pickled numpy scalar has {len(data)} bytes; its dtype needs {dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype)[0].item()


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")

#: (module, name) -> what it becomes; nothing outside this table is ever resolved
_ADMITTED: dict[tuple[str, str], Any] = {
    **{(mod, "_reconstruct"): _reconstruct for mod in _NUMPY_CORE},
    **{(mod, "scalar"): _scalar for mod in _NUMPY_CORE},
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _dtype,
    ("norm_blr", "NormBLR"): _NormBLR,
    ("pcntoolkit.normative_model.norm_blr", "NormBLR"): _NormBLR,
    ("pcntoolkit.model.bayesreg", "BLR"): _BLR,
    ("pcntoolkit.util.utils", "WarpSinArcsinh"): _WarpSinArcsinh,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        target = _ADMITTED.get((module, name))
        if target is None:
            admitted = ", ".join(sorted({f"{m}.{n}" for m, n in _ADMITTED}))
            raise UntrustedPickleError(
                f"{self.where}: the pickle names the global {module}.{name}, which a "
                f"braincharts model never holds; refused without loading it (admitted: "
                f"{admitted}). Use the archive as published."
            )
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UntrustedPickleError(f"{self.where}: the pickle uses a persistent id; refused")


def read_pickle(data: bytes, where: str) -> Any:
    """Rebuild a PCNtoolkit 0.x pickle from ``data`` with only the admitted globals.

    Parameters
    ----------
    data : bytes
        The pickle's bytes.
    where : str
        Names the file in error messages (``archive.zip:feature/Models/NM_0_0_estimate.pkl``).

    Returns
    -------
    object
        Dicts, lists, numbers, numpy arrays and :class:`PickleRecord` objects.

    Raises
    ------
    UntrustedPickleError
        A global outside the admitted table, a non-numeric array, or a malformed pickle.
    """
    try:
        return _RestrictedUnpickler(data, where).load()
    except UntrustedPickleError:
        raise
    except Exception as err:  # a damaged stream: any unpickling error, said in one line
        raise UntrustedPickleError(
            f"{where}: not a readable PCNtoolkit pickle ({type(err).__name__}: {err})"
        ) from None
