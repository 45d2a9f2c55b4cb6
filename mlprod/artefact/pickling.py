"""Pickling the pipeline so that it loads wherever training code lives, and runs nothing else.

A pickle can call any importable function while it loads. This one is read with an
unpickler that resolves only: mlprod classes, by their stable name through
:data:`~mlprod.artefact.classes.CLASSES` (whatever module the pickle recorded, so moving a
class breaks no saved model); and the classes and reconstructors of the libraries a model is
made of (numpy, scikit-learn, LightGBM, SciPy's sparse matrices, Python's containers and
times). Anything else is refused by name. Saving checks the same rule on every name the pickle
holds, so an unregistered class fails when the model is saved, not when it is served.
"""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
from typing import Any

from mlprod.artefact.classes import CLASSES
from mlprod.errors import ArtefactError

PROTOCOL = 5
TABLE = "mlprod/artefact/classes.py"

# Exact (module, name) pairs allowed from the standard library and numpy.
_NAMES = {
    "builtins": {
        "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
        "object", "range", "set", "slice", "str", "tuple",
    },
    "collections": {"Counter", "OrderedDict", "defaultdict", "deque"},
    "copyreg": {"_reconstructor"},
    "datetime": {"date", "datetime", "time", "timedelta", "timezone"},
    "numpy": {"dtype", "ndarray"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.numeric": {"_frombuffer"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy.random._pickle": {"__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor"},
}  # fmt: skip
# Packages whose classes (not functions) a model may hold: a class called while loading
# only stores its arguments. Cython's unpickle helpers are the one kind of function allowed.
_CLASS_PACKAGES = ("sklearn", "lightgbm", "scipy.sparse", "numpy.random", "numpy.dtypes")
_NEVER = ("test", "datasets", "externals")  # parts of those packages no model needs


def dumps(pipeline: Any) -> bytes:
    """The pickle of ``pipeline``, checked to hold only names that :func:`loads` resolves."""
    data = pickle.dumps(pipeline, protocol=PROTOCOL)
    for module, name in sorted(pickled_names(data)):
        if _is_mlprod(module):
            _check_registered(module, name)
        else:
            _third_party(module, name, "save")
    return data


def loads(data: bytes) -> Any:
    """Unpickle ``data``, resolving only the names this module allows."""
    return _Unpickler(io.BytesIO(data)).load()


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if _is_mlprod(module):
            return stable_class(name, f"{module}.{name}")
        return _third_party(module, name, "load")


def stable_class(name: str, recorded: str) -> Any:
    """The mlprod class whose stable name is ``name`` (``recorded``: what the pickle says)."""
    target = CLASSES.get(name)
    if target is None:
        raise ArtefactError(
            f"the model refers to the mlprod class '{recorded}', which is not one an artefact "
            f"may hold ({TABLE} lists them); it was made by another mlprod, so load it with "
            "that one or retrain the model"
        )
    module, _, qualname = target.partition(":")
    try:
        return _resolve(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise ArtefactError(
            f"the artefact class '{name}' is listed as '{target}', which cannot be imported "
            f"({exc}); correct its line in {TABLE}"
        ) from None


def _check_registered(module: str, name: str) -> None:
    """Saving: the class the pickle names must be the one its stable name resolves to."""
    if name not in CLASSES:
        raise ArtefactError(
            f"cannot save the model: it holds the mlprod class '{module}.{name}', which is not "
            f"in the artefact class table; add '{name}': '{module}:{name}' to {TABLE}"
        )
    if stable_class(name, f"{module}.{name}") is not _resolve(module, name):
        raise ArtefactError(
            f"cannot save the model: the class '{module}.{name}' shares its stable name with "
            f"'{CLASSES[name]}' in {TABLE}; give one of them another name"
        )


def _third_party(module: str, name: str, doing: str) -> Any:
    allowed = name in _NAMES.get(module, ())
    found: Any = None
    if allowed or _in_class_package(module):
        try:
            found = _resolve(module, name)
        except (ImportError, AttributeError) as exc:
            raise ArtefactError(
                f"the model refers to '{module}.{name}', which cannot be imported here ({exc}); "
                "install the libraries it was made with (its manifest lists them)"
            ) from None
        allowed = allowed or isinstance(found, type) or name.startswith("__pyx_unpickle_")
    if not allowed:
        refused = f"'{module}.{name}', which is not one a model is made of"
        if doing == "save":
            raise ArtefactError(f"cannot save the model: it refers to {refused}")
        raise ArtefactError(
            f"the model refers to {refused}; refusing to load it (only model classes load, "
            "so that an artefact cannot run code)"
        )
    return found


def _resolve(module: str, qualname: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _in_class_package(module: str) -> bool:
    inside = any(module == p or module.startswith(f"{p}.") for p in _CLASS_PACKAGES)
    return inside and not any(word in module for word in _NEVER)


def _is_mlprod(module: str) -> bool:
    return module == "mlprod" or module.startswith("mlprod.")


def pickled_names(data: bytes) -> set[tuple[str, str]]:
    """Every (module, name) a pickle refers to, read from its opcodes without loading it."""
    found: set[tuple[str, str]] = set()
    pushed: list[Any] = []  # what each opcode pushed, strings only (None for anything else)
    memo: dict[int, Any] = {}
    for opcode, argument, _ in pickletools.genops(data):
        kind = opcode.name
        if kind in ("FRAME", "PROTO"):
            continue  # framing, not the stack: a frame may start between a module and its name
        if kind == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(str(argument))] = pushed[-1] if pushed else None
        elif kind in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(str(argument))))
        elif kind in ("GLOBAL", "STACK_GLOBAL"):
            pair = str(argument).split(" ", 1) if kind == "GLOBAL" else pushed[-2:]
            if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
                raise ArtefactError("cannot save the model: its pickle names a class indirectly")
            found.add((pair[0], pair[1]))
            pushed.append(None)
        elif kind in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            pushed.append(argument)
        else:
            pushed.append(None)
    return found
