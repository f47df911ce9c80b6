"""The one error root of holmespy, and its few subclasses."""

from __future__ import annotations


class HolmesError(Exception):
    """Base class of every error holmespy raises on purpose."""


class ConfigError(HolmesError, ValueError):
    """A setting is malformed: the message names the variable, the value and the accepted form."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        # (redact imports re and urllib.parse: only once a setting is wrong, not at start())
        from holmespy.redact import redact

        self.name = name
        # A malformed URL may still carry a password or a token: the message never does.
        self.value = redact(value) if isinstance(value, str) else value
        self.expected = expected
        super().__init__(f"{name}={self.value!r} is invalid: expected {expected}")


class ConfigWarning(UserWarning):
    """A setting looks wrong but holmespy can still run (e.g. an unknown HOLMES_* variable)."""
