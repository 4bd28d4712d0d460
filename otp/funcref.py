"""Functions named so that another process can import them: ``[module, path, qualname]``.

A function of the program's ``__main__`` script is named by the script's path, and loaded in a
new process under another module name, so that its ``if __name__ == "__main__":`` block does
not run again (as multiprocessing does).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable


def function_reference(func: Callable) -> list:
    """``[module, path_or_None, qualname]`` naming an importable function; ``TypeError`` if not."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not callable(func) or not module or not qualname or "<" in qualname:
        raise TypeError(f"otp spawns importable functions (defined at module level); got {func!r}")
    mod = sys.modules.get(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not func:
        raise TypeError(f"otp spawns importable functions; {module}.{qualname} is not {func!r}")
    if module in ("__main__", _MAIN_ALIAS):
        path = getattr(mod, "__file__", None)
        if not path:
            raise TypeError(f"{func!r} lives in an interactive __main__ that a new process cannot import")
        return [module, os.path.abspath(path), qualname]
    return [module, None, qualname]


_MAIN_ALIAS = "__otp_main__"


def load_function(funcref: list) -> Callable:
    """The function named by ``function_reference``, imported in this process."""
    module, path, qualname = funcref
    if path:
        mod = sys.modules.get(_MAIN_ALIAS)
        if mod is None:
            spec = importlib.util.spec_from_file_location(_MAIN_ALIAS, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[_MAIN_ALIAS] = mod
            spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
