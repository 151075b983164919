"""How a class or function is offered as a config option.

Every ``conf/<group>/<option>.yaml`` names what it builds in ``_target_``; its schema (the keys
it may set, with their types and defaults) is derived from that target's signature when the
configs are registered (:func:`sslkit.config.register_configs`). What the signature alone does
not say is declared here, on the target itself, so that no central list has to follow it:

.. code-block:: python

    @configurable(runtime=("in_channels",))
    class Backbone(nn.Module): ...

Subclasses inherit the declaration of their base (every method is an ``SSLMethod``, every
backbone a ``Backbone``). A target without a declaration (a torch optimiser, a third-party
class) is offered with all its keyword parameters; an option that offers only some of them
says which in a ``# schema keys: a, b, c`` comment line of its YAML file (``conf/optim/sgd.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

ATTRIBUTE = "__sslkit_config__"

T = TypeVar("T")


def configurable(
    *,
    runtime: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shared: str | None = None,
) -> Callable[[T], T]:
    """Declare how ``target`` is offered as a config option.

    Args:
        runtime: parameters the builders pass at run time (the backbone of a method, the
            image size of a view factory); never set in a config.
        exclude: parameters deliberately not offered (a recipe's fixed choice).
        shared: dotted path of the function a ``**kwargs`` parameter hands its keys to; that
            function's optional parameters become keys of the option too (the view keys every
            recipe shares, :func:`~sslkit.augment.views.view_spec`).
    """
    declaration = {
        "exclude": (*runtime, *exclude),
        "shared": shared,
    }

    def mark(target: T) -> T:
        setattr(target, ATTRIBUTE, declaration)
        return target

    return mark


def declaration(target: Any) -> dict[str, Any] | None:
    """What :func:`configurable` declared for ``target`` (or a base class of it); None if
    nothing."""
    return getattr(target, ATTRIBUTE, None)
