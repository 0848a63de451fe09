"""The same FastAPI app on Ray Serve: `pip install '.[ray]'`, then

    serve run mindscope.deploy.ray_serve:app        (or build_app(...) from Python)

Each replica builds the app (and so loads the model once) in its own process; Ray's HTTP proxy
spreads requests over the replicas. MINDSCOPE_RAY_* variables set the replica count, autoscaling
and CPUs per replica; every other MINDSCOPE_* setting reaches the replicas' apps as usual.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mindscope.config import Settings


class RaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINDSCOPE_RAY_", frozen=True)

    num_replicas: int = Field(2, ge=1, description="fixed replica count when autoscaling is off")
    min_replicas: int | None = Field(None, ge=0, description="set with max_replicas to autoscale")
    max_replicas: int | None = Field(None, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0, description="autoscaling target per replica")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each replica")


def build_app(settings: Settings | None = None, ray_settings: RaySettings | None = None) -> Any:
    """A Ray Serve application serving `create_app(settings)` on each replica."""
    from fastapi import FastAPI
    from ray import serve

    from mindscope.app import create_app, load_default_model

    settings = settings or Settings()
    ray_settings = ray_settings or RaySettings()
    scaling: dict[str, Any]
    if ray_settings.min_replicas is not None and ray_settings.max_replicas is not None:
        scaling = {
            "autoscaling_config": {
                "min_replicas": ray_settings.min_replicas,
                "max_replicas": ray_settings.max_replicas,
                "target_ongoing_requests": ray_settings.target_ongoing_requests,
            }
        }
    else:
        scaling = {"num_replicas": ray_settings.num_replicas}

    def build_replica_app() -> FastAPI:
        # Each replica calls this in its own process, so each loads the model once; and since Ray
        # routes to a replica as soon as it is constructed, the model loads here, not in the background.
        app = create_app(settings)
        load_default_model(app)
        return app

    @serve.deployment(name="mindscope", ray_actor_options={"num_cpus": ray_settings.num_cpus}, **scaling)
    @serve.ingress(build_replica_app)
    class Mindscope:
        pass

    return Mindscope.bind()  # type: ignore[attr-defined]  # serve.deployment returns a Deployment


def __getattr__(name: str) -> Any:
    # `serve run mindscope.deploy.ray_serve:app` imports `app`; build it only then.
    if name == "app":
        return build_app()
    raise AttributeError(name)
