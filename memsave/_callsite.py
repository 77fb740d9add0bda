"""The user's line: the innermost stack frame outside memsave (and wrapt), for messages and reports.

>>> user_frame() is not None
True
"""
from __future__ import annotations

import os
import sys
from types import FrameType

_PACKAGE_DIR = os.path.dirname(__file__)


def _internal(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    return filename.startswith(_PACKAGE_DIR) or "wrapt" in filename


def user_frame(skip: int = 1) -> tuple[FrameType | None, int]:
    """The first frame outside memsave, and how many frames up it is from the caller.

    >>> frame, level = user_frame()
    >>> level >= 1
    True
    """
    frame: FrameType | None = sys._getframe(skip)
    level = skip
    while frame is not None and _internal(frame):
        frame, level = frame.f_back, level + 1
    return frame, level


def user_site() -> str:
    """``file:line`` of the user's code that called into memsave.

    >>> ":" in user_site()
    True
    """
    frame, _ = user_frame(2)
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
