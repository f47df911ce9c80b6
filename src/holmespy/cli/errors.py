"""Errors that carry their own exit status, so `main` turns any of them into one line."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """Something failed: the message is the whole line the user sees."""

    exit_code = EXIT_FAILED


class NotFound(CLIError):
    exit_code = EXIT_FAILED


class BadUsage(CLIError):
    exit_code = EXIT_USAGE


class UnsafePath(CLIError):
    """A bundle or key names a place outside the folder it is written to."""

    exit_code = EXIT_FAILED
