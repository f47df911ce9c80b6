"""Secrets never shown: URLs and error text as they may appear in a log, a status or a payload.

Two places hold secrets holmespy is given: the S3 endpoint URL
(`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, which may carry
`user:password@` or a token in its query) with the AWS credentials, and the
webhook URL (user info, a token in the query, or a token as the path, as
Slack's and Discord's hooks do). Whatever holmespy logs, counts in
`status()`, prints in the CLI or `doctor`, shows in a `repr`, or sends in the
webhook's payload goes through `public_url` or `redact` first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["SECRET_VARIABLES", "address", "public_url", "redact"]

SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
HIDDEN = "***"

# A URL inside free text: its user info and its query are what hide secrets.
_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^\s/?#@\"'<>]*@)?"
    r"(?P<rest>[^\s?#\"'<>]*)"
    r"(?P<query>\?[^\s#\"'<>]*)?"
)


def public_url(url: str, *, path: bool = True) -> str:
    """`url` with `***@` for its user info and `?***` for its query; without its path
    too (`https://host/…`) when `path` is False, for URLs whose path is a token."""
    try:
        parts = urlsplit(url)
        netloc = _host_port(parts.hostname, parts.port)
    except ValueError:
        return f"(a malformed URL, {len(url)} characters)"
    if parts.username is not None:
        netloc = f"{HIDDEN}@{netloc}"
    if not path:
        rest = "/…" if parts.path.strip("/") or parts.query else ""
        return f"{parts.scheme}://{netloc}{rest}"
    query = f"?{HIDDEN}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def address(url: str) -> str:
    """`scheme://host:port/path` of `url`: where it points, and nothing that may be secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{_host_port(parts.hostname, parts.port)}{parts.path}"


def _host_port(host: str | None, port: int | None) -> str:
    host = host or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return host + (f":{port}" if port is not None else "")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known credential value replaced by `***`, and every URL in it
    without its user info and query.

    Error text can come from a store or a library that echoes what it was
    sent (botocore names the endpoint URL it could not reach); the AWS
    credential variables are always among the values hidden.
    """
    values = [*secrets, *(os.environ.get(name, "") for name in SECRET_VARIABLES)]
    for value in sorted({v for v in values if len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return _URL.sub(_hide_url_parts, text)


def _hide_url_parts(match: re.Match[str]) -> str:
    userinfo = f"{HIDDEN}@" if match.group("userinfo") else ""
    query = f"?{HIDDEN}" if match.group("query") else ""
    return f"{match.group('scheme')}{userinfo}{match.group('rest')}{query}"
