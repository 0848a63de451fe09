"""Testing with Concept Activation Vectors (TCAV; Kim et al. 2018, "Interpretability Beyond Feature
Attribution").

At a layer, a concept activation vector (CAV) is the unit normal of a linear classifier that separates
the layer's activations of the concept's images from those of a random image set (scikit-learn's
SGDClassifier, a linear SVM as the paper's reference code trains, on the flattened activations).
A class's TCAV score for a CAV is the fraction of the class's images whose score's directional
derivative along the CAV (the gradient of the class's logit, or probability where the model has no
logits, with respect to the layer's activations, dotted with the CAV) is positive.

As the paper does, the concept is tested against `runs` random sets (at least 10), giving `runs`
scores; the same is done for a random set in the concept's place (random-vs-random CAVs: what scores
a meaningless direction gets). A two-sided Welch t-test of the concept's scores against the random
ones decides: a concept whose p-value is not below `alpha` divided by the number of layers tested
(Bonferroni) is reported as not significant, and its score is not given as a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.linear_model import SGDClassifier

MIN_RUNS = 10
ALPHA = 0.05


def cav(concept: np.ndarray, counter: np.ndarray, seed: int) -> np.ndarray:
    """(n, ...) activations of the concept and (m, ...) of the counterexamples -> the unit vector,
    flattened, pointing from the counterexamples toward the concept."""
    features = np.concatenate([concept.reshape(len(concept), -1), counter.reshape(len(counter), -1)])
    labels = np.concatenate([np.ones(len(concept)), np.zeros(len(counter))])
    classifier = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)
    classifier.fit(features.astype(np.float64), labels)
    normal = classifier.coef_[0]
    return (normal / max(float(np.linalg.norm(normal)), 1e-12)).astype(np.float32)


def directional_derivatives(gradients: np.ndarray, cavs: np.ndarray) -> np.ndarray:
    """(N, ...) gradients at a layer and (R, D) CAVs -> (N, R) derivatives along each CAV."""
    return gradients.reshape(len(gradients), -1).astype(np.float32) @ cavs.T


@dataclass(frozen=True)
class LayerScore:
    layer: str
    scores: list[float]  # the concept's TCAV score against each random set
    random_scores: list[float]  # a random set's, in the concept's place
    mean: float
    std: float
    random_mean: float
    random_std: float
    p_value: float
    significant: bool


def layer_score(layer: str, concept: np.ndarray, random: np.ndarray, alpha: float) -> LayerScore:
    """concept, random: (N, R) directional derivatives of the class's N images along the concept's R
    CAVs and the R random-vs-random ones -> the scores and the t-test (see the module's text)."""
    scores = (concept > 0).mean(axis=0)
    random_scores = (random > 0).mean(axis=0)
    p_value = welch_p_value(scores, random_scores)
    return LayerScore(
        layer,
        [float(s) for s in scores],
        [float(s) for s in random_scores],
        float(scores.mean()),
        float(scores.std(ddof=1)),
        float(random_scores.mean()),
        float(random_scores.std(ddof=1)),
        p_value,
        bool(p_value < alpha),
    )


def welch_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test of equal means. Written out, not scipy's ttest_ind, since
    a side with no spread (every image positive along every CAV: scores all 1.0) is common here and
    ttest_ind warns of precision loss on it; with no spread on either side the means decide (0 or 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    spread = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
    difference = float(a.mean() - b.mean())
    if spread == 0:
        return 1.0 if difference == 0 else 0.0
    t = difference / np.sqrt(spread)
    freedom = spread**2 / ((a.var(ddof=1) / len(a)) ** 2 / (len(a) - 1) + (b.var(ddof=1) / len(b)) ** 2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), freedom))
