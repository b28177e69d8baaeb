"""The exceptions raised for user-facing problems: :class:`GediError` and its one subclass
:class:`NonFiniteError` (training diverged)."""


class GediError(Exception):
    """A problem with the user's input: config, flags, data, program or shapes.

    The message names what is at fault (file, line, flag, predicate or shape);
    the command-line tools print it as one line and exit with status 2.
    """


class NonFiniteError(GediError):
    """A loss, a gradient or an SGLD sample became NaN or infinite."""
