"""HTTP to Ringback, with every failure turned into one readable line (never a traceback).

Each API family has its own error body (house ``{"error","message"}``, the notification
envelope ``{"errorCode","detail"}``, the scheduled API's ``{"success":0,"error"}``); the CLI
reads whichever it gets. A wrong URL or a refused key is said as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from ringback_cli import __version__
from ringback_cli.config import Target
from ringback_cli.errors import CliError

TIMEOUT = 30.0


def _error_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    code = body.get("error") or body.get("errorCode") or body.get("title") or ""
    message = body.get("message") or body.get("detail") or body.get("Message") or ""
    if isinstance(code, dict):  # never expected, but never a traceback either
        code = ""
    parts = [str(code), str(message)] if code and message and code != message else [code or message]
    text = ": ".join(str(p) for p in parts if p)
    if body.get("field"):
        text += f" (field {body['field']})"
    return text


class Client:
    """``client.get("/deliveries", params=...)`` -> the decoded JSON body, or ``CliError``."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ringback-cli/{__version__}"

    def _headers(self, needs_key: bool, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if needs_key:
            if not self.target.key:
                raise CliError(
                    "no API key: pass --key, set RINGBACK_KEY, or save one in a profile "
                    "(ringback profile save --key ...)"
                )
            headers["Authorization"] = f"Bearer {self.target.key}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        needs_key: bool = True,
    ) -> Any:
        url = self.target.url + path
        sent_headers = self._headers(needs_key, headers)
        try:
            response = self.session.request(
                method,
                url,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=json,
                headers=sent_headers,
                timeout=TIMEOUT,
            )
        except (
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL,
        ) as exc:
            raise CliError(
                f"{self.target.url!r} (from {self.target.url_from}) is not a URL; "
                "expected something like http://127.0.0.1:8000"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise CliError(
                f"cannot connect to Ringback at {self.target.url} (from "
                f"{self.target.url_from}): is it running (make run), and is the URL right?"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise CliError(f"{self.target.url} did not answer within {TIMEOUT:.0f} s") from exc
        except requests.exceptions.RequestException as exc:
            raise CliError(f"request to {url} failed: {exc}") from exc
        return self._decode(method, path, response)

    def _decode(self, method: str, path: str, response: requests.Response) -> Any:
        status = response.status_code
        if status == 204 or not response.content:
            if status >= 400:
                raise CliError(f"HTTP {status} from {method} {path}")
            return None
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise CliError(
                f"HTTP {status} ({kind}) from {self.target.url}: that is not a Ringback API "
                f"answer; check --url (from {self.target.url_from})"
            ) from None
        if status < 400:
            return body
        if status == 403 and isinstance(body, dict) and set(body) == {"message"}:
            # API Gateway's (and chalice local's) answer for a path with no route; it may quote
            # the Authorization header back, so its text is never shown.
            raise CliError(
                f"HTTP 403: {self.target.url} has no route {method} {path}; check --url "
                f"(from {self.target.url_from}), or the server predates this command"
            )
        text = self._masked(_error_text(body) or response.reason or "error")
        if status == 401:
            text += f"; the API key was refused: check --key (from {self.target.key_from})"
        if status == 405:
            text += f" ({self.target.url} has no {method} {path}: it may predate this command)"
        raise CliError(f"HTTP {status} {text}")

    def _masked(self, text: str) -> str:
        """Never echo the key, whatever a server quotes back."""
        key = self.target.key
        return text.replace(key, key[:8] + "...") if key and len(key) > 8 else text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)
