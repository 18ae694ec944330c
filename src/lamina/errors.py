"""Lamina's exception types.

Every error a user can cause (bad config, bad data, an unreachable service) is raised as a
`LaminaError` whose message says what is wrong and what to do. Entry points turn it into one
line on stderr and a non-zero exit; anything else is a bug and keeps its traceback.
"""


class LaminaError(Exception):
    """A problem the user can fix; the message names the file / key / URI and the remedy."""


class ConfigError(LaminaError):
    """Configuration that does not compose or does not validate."""


class DataError(LaminaError):
    """Raw or intermediate data that is missing, unreadable or violates its contract."""


class TrackingError(LaminaError):
    """The MLflow tracking server or registry cannot be used."""


class ClusterError(LaminaError):
    """A Ray cluster that cannot be reached or cannot hold what the config asks of it."""


class SearchError(LaminaError):
    """A hyperparameter search that produced no usable trial."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line, to quote inside a `LaminaError`'s message."""
    return " ".join(str(error).split())
