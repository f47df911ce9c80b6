"""Errors that carry their own exit status."""

from __future__ import annotations


class CLIError(Exception):
    exit_code = 1


class NotFound(CLIError):
    exit_code = 1


class BadUsage(CLIError):
    exit_code = 2
