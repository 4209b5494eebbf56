"""Credentials in URLs: refused where they would leak, masked wherever a URL is shown or recorded.

Why one module: a server URL travels from a flag or a YAML file into a backend, a manifest
(`command`, `models.*.base_url`, `backend_stats.server`), refusal messages and error lines.
Each of those used to mask (or forget to mask) on its own; here is the one rule, imported by
the run manifest writer, the HTTP transport, the CLI options and the backend options alike. A
leaf module (standard library only) so that anything may use it.

The rule for which credential a request carries (also in the `--base-url` help):

- An API key lives in an environment variable, named by `--api-key-env` (default:
  `OPENAI_API_KEY` when set), and is sent as `Authorization: Bearer`. A key in the URL's
  query string (`?api_key=`, `?key=`, `?token=`, ...) is refused: it would be written into
  manifests and logs, and it breaks the request path the backend appends.
- `user:password@` in the URL is HTTP Basic auth (a server behind a proxy that wants it). It
  is used only when `--api-key-env` is not given, and then `OPENAI_API_KEY` is not sent; both
  together are refused, since one request carries one `Authorization` header.
"""

from __future__ import annotations

import re
from typing import Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

# Query parameters that carry a credential (case-insensitive, - and _ alike).
_SECRET_PARAM = re.compile(r"^(api[-_]?key|key|(access[-_]?|auth[-_]?|id[-_]?)?token|auth|password|passwd|secret|"
                           r"client[-_]?secret|sig|signature)$", re.IGNORECASE)
# No comma: several server URLs are written comma-separated (a fleet), each masked on its own.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\",<>]+")
MASK = "***"


def secret_params(url: str) -> list[str]:
    """Names of the query parameters of `url` that carry a credential."""
    return [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True) if _SECRET_PARAM.match(name)]


def check_url(url: str | None, key_option: str = "--api-key-env") -> None:
    """Refuse a server URL that carries a key in its query string (ValueError, never showing
    the key). `key_option` is how the caller's user names the key's variable (a flag or a key).
    Several comma-separated URLs (a fleet) are checked one by one."""
    if url and len(split_urls(url)) > 1:
        for one in split_urls(url):
            check_url(one, key_option)
        return
    if not url:
        return
    names = secret_params(url)
    if names:
        raise ValueError(f"the server URL carries a credential in its query string ('{names[0]}=...'), which "
                         f"would be recorded in manifests and logs; put the key in an environment variable and "
                         f"name that variable with {key_option}")
    if urlsplit(url).query:
        raise ValueError(f"the server URL {mask_url(url)} has a query string; a base URL takes none "
                         f"(e.g. http://127.0.0.1:8000/v1)")


def check_auth(url: str | None, api_key_env: str | None, key_option: str = "--api-key-env") -> None:
    """Refuse `user:password@` in the URL together with a key variable (see the module's rule)."""
    if url and api_key_env and any(urlsplit(one).password is not None for one in split_urls(url)):
        raise ValueError(f"the server URL has user:password@ credentials and {key_option} names a key; "
                         f"a request carries one of them: drop one")


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without `user:password@`, and the (decoded) user and password when present."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.password is None:
        return bare, (unquote(parts.username or ""), "")
    return bare, (unquote(parts.username or ""), unquote(parts.password))


def mask_url(url: str) -> str:
    """`url` with a userinfo password and credential query values replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. a malformed port: mask the whole userinfo by hand
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username}:{MASK}@{netloc.rpartition('@')[2]}"
    query = re.sub(r"(^|&)([^=&]*)=([^&]*)",
                   lambda m: f"{m[1]}{m[2]}={MASK}" if _SECRET_PARAM.match(unquote(m[2])) else m[0], parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


def mask_text(text: str) -> str:
    """`text` (a command line, a message, a config value) with every URL in it masked."""
    return _URL.sub(lambda m: mask_url(m[0]), text) if "://" in text else text


def split_urls(value: str | Sequence[str] | None) -> list[str]:
    """The server URLs in an option value: a list (a repeated option), and/or comma-separated."""
    if not value:
        return []
    parts = [value] if isinstance(value, str) else list(value)
    urls = [u.strip() for part in parts for u in part.split(",") if u.strip()]
    seen = set()
    for url in urls:
        if url in seen:
            raise ValueError(f"server URL {mask_url(url)} is listed twice")
        seen.add(url)
    return urls
