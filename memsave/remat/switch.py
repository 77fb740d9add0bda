"""checkpointing(enabled): switch every checkpoint on or off, as a context manager or globally.

>>> import memsave as ms
>>> with checkpointing(False):
...     ms.config.checkpointing_enabled
False
"""
from __future__ import annotations

from memsave.config import config


class checkpointing:  # noqa: N801 - used like a function, as in `with checkpointing(False):`
    """``with checkpointing(False):`` runs every checkpoint as a plain call (debugging,
    inference); called without ``with`` it sets the switch for the current context.

    >>> _ = checkpointing(False); ms_enabled = config.checkpointing_enabled
    >>> _ = checkpointing(True)
    >>> ms_enabled
    False
    """

    def __init__(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"checkpointing(enabled) needs True or False, got {enabled!r}")
        self._previous = config.checkpointing_enabled
        config.checkpointing_enabled = enabled

    def __enter__(self) -> checkpointing:
        return self

    def __exit__(self, *exc: object) -> None:
        config.checkpointing_enabled = self._previous
