"""DeepProbLog imported without its PySwip warning (the one place that filter is written).

``deepproblog.engines`` warns on its first import when PySwip (which its ``ApproximateEngine``
needs) is missing; this project never uses that engine. Call :func:`import_deepproblog` before
importing anything of DeepProbLog: the warning is silenced for that first import only, and later
imports find the module loaded and warn no more.
"""

from __future__ import annotations

import warnings


def import_deepproblog() -> None:
    """Import ``deepproblog.engines`` once, silencing its warning that PySwip is missing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ApproximateEngine is not available", category=UserWarning)
        import deepproblog.engines  # noqa: F401
