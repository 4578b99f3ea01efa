"""A small HTTP client of the staff API, for ``leadhub view --api URL --token T``."""

from __future__ import annotations

from typing import Any

import httpx2

from consumers.api.caseload import parse_instant
from consumers.api.errors import ApiError


class ApiClientError(ApiError):
    """The staff API answered with an error, or could not be reached."""


class StaffClient:
    """Reads the caller's view rows through the staff API (with the partner's purpose)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.http = httpx2.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                  headers={"Authorization": f"Bearer {token}"})
        self.purpose: str | None = None

    def __enter__(self) -> StaffClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` and return its JSON; raise :class:`ApiClientError` on an error."""
        headers = {"X-Purpose": self.purpose} if self.purpose else {}
        try:
            response = self.http.get(path, params=params, headers=headers)
        except httpx2.HTTPError as exc:
            raise ApiClientError(f"cannot reach the API at {self.http.base_url} "
                                 f"({type(exc).__name__})") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiClientError(f"the API answered {response.status_code} without JSON") \
                from exc
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiClientError(f"the API answered {response.status_code} "
                                 f"{error.get('code', '')}: {error.get('message', '')}")
        return body

    def me(self) -> dict[str, Any]:
        """``GET /v1/me``; also picks the purpose to declare on later reads."""
        me: dict[str, Any] = self.get("/v1/me")
        self.purpose = me["purposes"][0]
        return me

    def pages(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paginated listing."""
        items: list[Any] = []
        query = dict(params or {}, limit=200)
        while True:
            page = self.get(path, query)
            items.extend(page["items"])
            if not page.get("next_cursor"):
                return items
            query["cursor"] = page["next_cursor"]

    def view_rows(self, partner: str, participant: str | None) -> list[dict[str, Any]]:
        """The rows ``leadhub view`` prints, read through the API as the token's partner."""
        me = self.me()
        if me["partner"] != partner:
            raise ApiClientError(f"the token belongs to partner {me['partner']}, not {partner}")
        if participant is not None:
            ids = [participant]
        else:
            ids = [entry["participant_id"] for entry in self.pages("/v1/participants")]
        rows: list[dict[str, Any]] = []
        for participant_id in ids:
            try:
                rows.extend(self.pages(f"/v1/participants/{participant_id}/timeline"))
            except ApiClientError as exc:
                if " 404 " not in str(exc) or participant is None:
                    raise
        rows.sort(key=lambda r: (parse_instant(r["occurred_at"]), r["event_id"]))
        return rows
