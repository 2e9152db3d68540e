"""Teacher pseudo-labels (METHOD.md A): teacher -> thresholds -> run -> store -> student.

`PseudoLabelError` is shared by every step here, so it lives with the package.
"""


class PseudoLabelError(ValueError):
    """A teacher checkpoint or pseudo-label folder is unusable; the message names it and the fix."""
