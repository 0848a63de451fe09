"""The one way an explanation is computed, whoever asks (REST, the V1 protocol, jobs): check the
request against the method and the server's caps before any work, resolve the target, run the
method (SmoothGrad included), and compute the trust scores it asked for."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mindscope.engine.explain.admission import Cost
from mindscope.engine.explain.evaluation import CURVES, Evaluate, Evaluation
from mindscope.engine.explain.explanation import Explanation
from mindscope.engine.explain.method import Context, Method, MethodParams, within
from mindscope.engine.work import current_work
from mindscope.errors import InvalidInput

if TYPE_CHECKING:
    from mindscope.engine.loaded_model import LoadedModel


@dataclass(frozen=True)
class Explained:
    """An explanation with what it was computed at: the class probabilities at the input, the trust
    scores asked for, and the seconds the method and its scores took."""

    explanation: Explanation
    probabilities: np.ndarray  # float32 (K,)
    evaluation: Evaluation | None
    seconds: float


def check(model: LoadedModel, method: Method, params: MethodParams, context: Context, evaluate: Evaluate) -> None:
    """Refuse, before any model work, what the method, this model or the server's caps do not allow."""
    if context.score not in method.scores:
        raise InvalidInput(
            f"{method.name} explains the target's {' or '.join(method.scores)} only; use score={method.scores[0]}",
            valid_scores=list(method.scores),
        )
    samples = context.smoothing.samples
    if samples and not method.smooths:
        raise InvalidInput(f"{method.name} takes no SmoothGrad samples", samples=samples)
    caps = context.caps
    within("samples", samples, 0, caps.max_samples, "MINDSCOPE_MAX_SAMPLES")
    method.check(model, params, context)
    rows = max(1, samples) * method.rows(model, params, context)
    if rows > caps.max_rows:
        raise InvalidInput(
            f"{method.what_rows()} = {rows} model rows; at most {caps.max_rows} (MINDSCOPE_MAX_ROWS) are computed "
            "for one explanation: ask for fewer",
            rows=rows,
            max_rows=caps.max_rows,
        )
    model.gradients_for(context.score)  # a score the model cannot give is refused here
    if evaluate.sanity:
        model.initial_model()  # 404 initial_weights_missing before any work


def explain(
    model: LoadedModel,
    method: Method,
    image: np.ndarray,
    params: MethodParams,
    target: str | int | None = None,
    context: Context | None = None,
    evaluate: Evaluate | None = None,
) -> Explained:
    """float32 (H, W, C) `image` in [0, 1], the model's input -> the method's map for `target`
    (a class index or name; default the predicted class)."""
    context = context or Context()
    evaluate = evaluate or Evaluate()
    check(model, method, params, context, evaluate)
    cost = cost_of(model, method, params, context, evaluate)
    seconds = cost.seconds(model.gradient_batcher.stats, model.forward_batcher.stats)
    work = current_work()
    remaining = None if work.background else work.remaining()
    what = f"this {method.name} explanation ({cost.rows} rows)"
    with model.admission.admit(method.name, seconds, remaining, what):
        probabilities = model.predict(image[None])[0]
        index = int(np.argmax(probabilities)) if target is None else model.class_index(target)
        started = time.perf_counter()
        explanation = method.run(model, image, index, params, context)
        untrained = model.initial_model() if evaluate.sanity else None
        evaluation = evaluate.run(
            model.predict,
            image,
            index,
            explanation.attributions,
            None if untrained is None else (lambda: method.run(untrained, image, index, params, context).attributions),
            context.caps.rows_per_chunk,
        )
    return Explained(explanation, probabilities, evaluation, time.perf_counter() - started)


def cost_of(model: LoadedModel, method: Method, params: MethodParams, context: Context, evaluate: Evaluate) -> Cost:
    """What the explanation asks of the model, for admission."""
    samples = max(1, context.smoothing.samples)
    curves = sum(1 for kind in evaluate.asked if kind in CURVES)
    return Cost(
        rows=samples * method.rows(model, params, context),
        depth=method.depth(model, params, context),
        lane=method.lane,
        forward_rows=curves * (evaluate.steps + 1),
        repeats=2 if evaluate.sanity else 1,
    )
