"""Every explanation method the service offers, by name: routes, GET /explain, the OpenAPI schema,
the explorer, the CLI and the V1 explain path are all generated from this list. Adding a method is
its module and one line here."""

from __future__ import annotations

from mindscope.engine.explain.blur_ig import BlurIG
from mindscope.engine.explain.grad_cam import GradCam
from mindscope.engine.explain.gradients import GradientXInput, VanillaGradients
from mindscope.engine.explain.guided_ig import GuidedIG
from mindscope.engine.explain.integrated_gradients import IntegratedGradients
from mindscope.engine.explain.method import Method
from mindscope.engine.explain.occlusion import Occlusion
from mindscope.engine.explain.partition_shap import PartitionShap
from mindscope.engine.explain.xrai import Xrai
from mindscope.errors import UnknownMethod

METHODS: tuple[Method, ...] = (
    IntegratedGradients(),
    VanillaGradients(),
    GradientXInput(),
    GradCam(),
    Occlusion(),
    BlurIG(),
    GuidedIG(),
    Xrai(),
    PartitionShap(),
)
BY_NAME = {method.name: method for method in METHODS}


def method_named(name: str) -> Method:
    """The method called `name`, or 404 listing them."""
    method = BY_NAME.get(name)
    if method is None:
        raise UnknownMethod(
            f"no explanation method {name!r}; GET /explain lists them: {', '.join(BY_NAME)}",
            valid_methods=list(BY_NAME),
        )
    return method
