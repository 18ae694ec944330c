"""Passwords out of everything Lamina prints, logs or records: the one home for redaction.

Two kinds of secret are masked as `***`:
- the password of any `scheme://user:password@host` URI in a text (tracking servers, Ray
  addresses, storage paths, proxies), however the password is spelled;
- the secrets this process was given in its environment (the passwords of the URIs there, and
  variables such as `MLFLOW_TRACKING_PASSWORD`), wherever they appear: a library may quote one
  decoded, inside a URL it rebuilt, or in an exception's text.

`redact_standard_streams` puts every line the process writes to stdout/stderr (prints, log
records, MLflow's own "View run ... at: URL" line, tracebacks) through `redacted`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO
from urllib.parse import quote, unquote

MASK = "***"

# The password runs to the last `@` of the token: an unencoded `@`, `#` or `/` in it does not
# end it early (a parser would, and leave the rest of the password in the text).
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<password>[^\s'\"<>]*)@"
)
# Environment variables that hold a secret as their whole value.
_SECRET_VARIABLE = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|SECRET_ACCESS_KEY)$", re.IGNORECASE)
# A shorter secret would mask ordinary words and numbers everywhere; no password is that short.
MIN_SECRET_LENGTH = 4


def redacted(text: str) -> str:
    """`text` with every URI's password and every secret of the environment shown as `***`."""
    text = _URI_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    for secret in _environment_secrets():
        text = text.replace(secret, MASK)
    return text


def _environment_secrets() -> list[str]:
    """The secrets in this process's environment, each also percent-encoded and decoded
    (a URI carries one encoded, an HTTP library decodes it), longest first."""
    found: set[str] = set()
    for name, value in _environment_items():
        raw = [match["password"] for match in _URI_PASSWORD.finditer(value)]
        if _SECRET_VARIABLE.search(name):
            raw.append(value)
        for secret in raw:
            found.update({secret, unquote(secret), quote(secret, safe="")})
    return sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def _environment_items() -> list[tuple[str, str]]:
    while True:
        try:
            return list(os.environ.items())
        except KeyError:  # another thread (MLflow's telemetry) changed it while it was read
            continue


class _RedactingStream:
    """A text stream that redacts what is written and passes everything else through."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(redacted(text))
        return len(text)  # what the caller wrote, as `TextIO.write` answers

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


def redact_standard_streams() -> None:
    """From now on, everything this process writes to stdout and stderr is redacted,
    including through log handlers made before (they hold the stream they were given)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _RedactingStream):
            continue
        guarded = _RedactingStream(stream)
        setattr(sys, name, guarded)
        for handler in _stream_handlers():
            if handler.stream is stream:
                handler.setStream(guarded)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        handler
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
    ]
