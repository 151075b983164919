"""Pretraining methods: one small LightningModule per method on top of ``SSLMethod``.

Every ``SSLMethod`` subclass defined in a module of this package is importable from here by its
class name (``from sslkit.methods import SimCLR``): the names are found in the package's modules
on first use, so a new method is its own file and no list here names it.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from sslkit.methods.base import NonFiniteLossError, SSLMethod


@functools.cache
def method_classes() -> dict[str, type[SSLMethod]]:
    """Every ``SSLMethod`` subclass defined in a module of this package, by class name."""
    classes: dict[str, type[SSLMethod]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, SSLMethod)
                and value.__module__ == module.__name__
                and value is not SSLMethod
            ):
                classes[name] = value
    return classes


def __getattr__(name: str) -> type[SSLMethod]:
    classes = method_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *method_classes()})


__all__ = ["NonFiniteLossError", "SSLMethod", "method_classes"]
