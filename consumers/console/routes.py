"""The console's routes in one router (``create_api`` includes it) and its static files."""

from __future__ import annotations

from fastapi import APIRouter

from consumers.console import docs, pages, record, signin
from consumers.console.web import STATIC_DIR, STATIC_PATH

router = APIRouter()
router.include_router(signin.router)
router.include_router(pages.router)
router.include_router(record.router)
router.include_router(docs.router)

__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
