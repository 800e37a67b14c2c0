"""Assembling the panel: pages, the JSON API under /api/v1, static files, errors, the sampler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

from ..cluster.agent import start_thread
from ..home import Home
from ..settings.types import SettingError
from ..store.outage import StoreUnavailable
from . import (
    api_accounts,
    api_cluster,
    api_limits,  # issue 19
    api_mailauth,
    api_queue,
    api_services,
    api_settings,
    api_spam,
    api_tls,
    api_virus,
    pages,
    problems,
)
from .api_trail import page_router as trail_page_router  # the delivery trail (issue 19)
from .api_trail import router as trail_router
from .sampler import run_sampler
from .security import SecurityHeaders
from .sessions import SessionStore
from .throttle import PasswordCheckGate, SigninThrottle

API_PREFIX = "/api/v1"
HERE = Path(__file__).parent

API_DESCRIPTION = """The JSON API of a mailyard node: everything the panel's pages do.

Scripts send `Authorization: Bearer TOKEN` with a token made by `mailyard api-token create NAME`.
The pages use the signed-in session and send its CSRF token in the `X-CSRF-Token` header.
A refused value answers 422 with `{"field", "value", "reason"}`.
"""


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (api_settings, api_services, api_queue, api_accounts, api_spam, api_virus,
                   api_cluster, api_mailauth):
        router.include_router(module.router)
    router.include_router(trail_router)  # the delivery trail (issue 19)
    router.include_router(api_limits.router)  # issue 19: outbound rate limits
    router.include_router(api_tls.router)  # TLS certificates through the root helper
    return router


def create_app(home: Home, *, sample: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(run_sampler(home)) if sample else None
        # The cluster agent (heartbeat, cascaded changes) runs here: see mailyard.cluster.agent.
        agent = None
        if sample and home.db_url.startswith(("postgresql", "postgres")):
            agent = start_thread(home)
        try:
            yield
        finally:
            if agent is not None:
                agent[1].set()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="mailyard", version=version("mailyard"), description=API_DESCRIPTION,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.home = home
    app.state.sessions = SessionStore()
    app.state.throttle = SigninThrottle()
    app.state.password_checks = PasswordCheckGate()
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(RequestValidationError, problems.validation_error_handler)
    app.add_exception_handler(SettingError, problems.setting_error_handler)
    app.add_exception_handler(problems.Refused, problems.refused_handler)
    app.add_exception_handler(OperationalError, problems.store_away_handler)
    app.add_exception_handler(StoreUnavailable, problems.store_away_handler)
    app.include_router(api_router())
    app.include_router(pages.router)
    app.include_router(trail_page_router)  # the Trail page (issue 19)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages.install(app)
    return app
