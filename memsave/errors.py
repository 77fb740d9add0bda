"""Exception and warning classes; each message says what was expected, what was found, where."""


class ShapeError(ValueError):
    """Operands have incompatible shapes (the message names both)."""


class DTypeError(TypeError):
    """An operand has a dtype the operation cannot use."""


class CheckpointError(RuntimeError):
    """A checkpointed function did not recompute what it computed the first time."""


class StateDictError(ValueError):
    """A state dict does not fit a module (the message lists every key that is wrong and why)."""


class UselessCheckpointWarning(UserWarning):
    """A checkpoint keeps at least as many bytes as it lets go: it costs time, saves nothing."""


class DistributedError(RuntimeError):
    """Ranks of a data-parallel run disagree (e.g. their models differ); raised on every rank."""


class InPlaceError(RuntimeError):
    """An array kept for backward was written in place before backward read it."""
