"""The demo moves its own view aside when an older projection version built it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from consumers.store import PROJECTION_VERSION, ViewStore, view_meta
from leadhub.demo import set_aside_stale_view
from leadhub.settings import load_settings


def _view_of_version(path: Path, version: str) -> None:
    store = ViewStore(f"sqlite:///{path}")
    store.create_schema()
    with store.engine.begin() as connection:
        connection.execute(update(view_meta).where(view_meta.c.key == "projection_version")
                           .values(value=version))
    store.close()


def test_an_older_demo_view_is_moved_aside_and_a_current_one_is_kept(tmp_path: Path) -> None:
    settings = load_settings({"LEADHUB_STATE_DIR": str(tmp_path)})
    view = tmp_path / "view.sqlite"
    _view_of_version(view, "4")
    set_aside_stale_view(settings)
    assert not view.exists()
    assert (tmp_path / f"view.sqlite.before-v{PROJECTION_VERSION}").exists()
    _view_of_version(view, PROJECTION_VERSION)
    set_aside_stale_view(settings)
    assert view.exists()


def test_a_view_named_by_the_operator_is_never_moved(tmp_path: Path) -> None:
    view = tmp_path / "view.sqlite"
    _view_of_version(view, "4")
    settings = load_settings({"LEADHUB_STATE_DIR": str(tmp_path),
                              "LEADHUB_DATABASE_URL": f"sqlite:///{view}"})
    set_aside_stale_view(settings)
    assert view.exists()
