from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["explorer"])
_PAGE = resources.files("mindscope.api").joinpath("static/index.html")


@router.get("/", response_class=HTMLResponse, summary="The explorer: a page that looks inside the network")
def read_explorer() -> HTMLResponse:
    return HTMLResponse(_PAGE.read_text(encoding="utf-8"))
