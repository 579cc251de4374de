"""The one error type for a user's mistake (bad config, missing corpus, unusable data table).

The CLI prints ``str(error)`` as a single line and exits with status 2; anything else is a bug and
keeps its traceback. Each stage subclasses it (``ConfigError``, ``DataError``, ``FitDataError``)
so that library users can catch one family.
"""


class UserError(Exception):
    """A mistake in the user's input; ``str(e)`` is one line naming the problem and the remedy."""


class FitDataError(UserError):
    """A table a law cannot be fitted to: too few points, non-positive or missing values."""


class DataError(UserError):
    """A user-facing data problem; ``str(e)`` is one clear line (the CLI prints it, exits 2)."""
