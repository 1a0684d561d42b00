"""What every route depends on: the services the lifespan loaded (`Services`), found
with `services(request)` (503 while loading), and their feature lookup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from errors import ServiceError
from identifiers.features import parse_feature, unknown_feature

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from api.server_runs import RunManager
    from runtime.agent import AgentSetup


@dataclass
class Services:
    """What the lifespan loaded: shared by every request."""

    setup: AgentSetup
    graph: Any  # the compiled agent graph, checkpointed in Redis
    runs: RunManager
    aredis: AsyncRedis

    @property
    def names(self) -> list[str] | None:
        return self.setup.feature_names

    def feature(self, given: str) -> int:
        """A path's feature (an index, or a planted feature's id) -> its index; 404 when
        there is no such feature."""
        n = self.setup.deps.store.n_features
        try:
            index: int | None = parse_feature(given, self.names)
        except ValueError:
            index = None
        if index is not None and unknown_feature([index], n) is None:
            return index
        planted = " or a planted feature id" if self.names is not None else ""
        raise HTTPException(404, f"unknown feature {given!r}: give an index 0..{n - 1}{planted}")

    def name(self, index: int) -> str:
        return str(index) if self.names is None else self.names[index]


class NotReady(ServiceError):
    """The services are still loading (`loading` True), or failed to load."""

    def __init__(self, message: str, loading: bool) -> None:
        super().__init__(message)
        self.loading = loading


def loaded_services(state: Any) -> Services:
    """What the lifespan loaded (`app.state`); NotReady while loading or after a failure."""
    if state.services is None:
        if state.load_error is not None:
            raise NotReady(f"the service failed to load: {state.load_error}", loading=False)
        raise NotReady("the service is still loading the model and evidence", loading=True)
    loaded: Services = state.services
    return loaded


def services(request: Request) -> Services:
    """The loaded services; 503 while they are loading or when loading failed."""
    try:
        return loaded_services(request.app.state)
    except NotReady as error:
        raise HTTPException(503, str(error)) from error
