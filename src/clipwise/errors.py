"""The package's own exceptions.

Every error a user can cause (a bad file, a bad manifest, a bad config key, an unknown name) is raised as a
:class:`ClipwiseError` whose message says what was wrong, where, and how to fix it. The CLI prints the
message and exits non-zero without a traceback; library users can catch the specific subclass.
"""

from __future__ import annotations


class ClipwiseError(Exception):
    """Base class of every error clipwise raises on purpose."""

    exit_code = 2


class ConfigError(ClipwiseError, ValueError):
    """A config file, a ``key=value`` override or a function argument is invalid."""


class ManifestError(ClipwiseError, ValueError):
    """A manifest is missing columns, has bad rows or unknown labels."""


class AudioError(ClipwiseError, OSError):
    """An audio file is missing, unreadable or empty."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class RegistryError(ClipwiseError, KeyError):
    """A name (model, frontend, recipe) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunError(ClipwiseError):
    """A run folder is missing, incomplete or from an incompatible version."""


class UnsafeFileError(RunError):
    """A file clipwise reads is not what clipwise writes, or holds content that only running code could rebuild
    (a pickled object): it is refused, never executed."""


class LeakageError(ClipwiseError):
    """Training and test data share audio or groups."""
