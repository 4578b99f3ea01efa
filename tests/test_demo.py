"""The demo, headless for a bounded time: the hub comes up and the printed queries answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FLOOR = {"SUD_TREATMENT", "MENTAL_HEALTH", "MEDICAL"}


def test_demo_runs_headless_and_the_view_answers(hub: Any, tmp_path: Path) -> None:
    hub.env["LEADHUB_DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    demo = hub.leadhub("demo", "--participants", "80", "--days", "90", "--rate", "3000",
                       "--duration", "8", timeout=240)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "published" in demo.stdout and "leadhub view --as county-pao" in demo.stdout

    def rows(partner: str) -> list[dict[str, Any]]:
        result = hub.leadhub("view", "--as", partner, "--json")
        assert result.returncode == 0, result.stderr
        parsed: list[dict[str, Any]] = json.loads(result.stdout)
        return parsed

    police, case_manager, treatment = rows("evergreen-pd"), rows("harbor-cm"), rows(
        "riverbend-sud")
    assert police and case_manager and treatment
    assert not any(FLOOR & set(row["categories"]) for row in police)
    assert len(case_manager) > len(police)
    part2 = [row for row in treatment if "SUD_TREATMENT" in row["categories"]]
    assert part2 and all(row["notice"] and "42 CFR part 2" in row["notice"] for row in part2)
