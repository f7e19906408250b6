"""A tiny name -> factory registry shared by models, frontends and dataset recipes."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from clipwise.errors import RegistryError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Maps names to callables, with helpful errors for unknown names.

    Args:
        kind: what is registered ("model", "frontend", "dataset recipe"), used in error messages.
        list_command: the CLI command that lists the entries, named in error messages.
    """

    def __init__(self, kind: str, *, list_command: str | None = None):
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that registers a callable under ``name`` (default: its ``__name__``)."""

        def wrap(fn: T) -> T:
            key = name or fn.__name__
            if key in self._entries:
                raise RegistryError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = fn
            return fn

        return wrap

    def get(self, name: str) -> T:
        """Return the callable registered as ``name``.

        Raises:
            RegistryError: ``name`` is unknown; the message lists close matches.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = f" Run `{self.list_command}` to list them." if self.list_command else ""
        return f"unknown {self.kind} {name!r}.{hint}{listing} Known: {', '.join(sorted(self._entries))}."

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
