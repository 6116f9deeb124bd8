"""From gradients to per-target scores (Eq. 3 and 10, first order).

``p[i, t] = <g_i, g_t>`` on unit-normalised (and, for training samples, Adam-preconditioned)
projected gradients; landmarks get their exact scores, every other sample the KRR propagation.
"""

from __future__ import annotations

import numpy as np

from infdist_core.data.validation import as_numpy
from infdist_core.maths.landmarks import KRRModel


def landmark_scores(G_landmarks: np.ndarray, G_targets: np.ndarray) -> np.ndarray:
    """Exact first-order influence of each landmark on each target, shape (l, t)."""
    GL = as_numpy(G_landmarks, "G_landmarks", 2)
    GT = as_numpy(G_targets, "G_targets", 2)
    if GL.shape[1] != GT.shape[1]:
        raise ValueError(f"landmark gradients have {GL.shape[1]} dims, target gradients {GT.shape[1]}: "
                         "they must come from the same projection")
    return GL @ GT.T


def propagate_scores(model: KRRModel, E_pool: np.ndarray, landmark_index: np.ndarray, P_landmarks: np.ndarray,
                     chunk: int = 8192) -> np.ndarray:
    """Scores of every pool sample, shape (n, t): propagated (Eq. 10), exact on the landmarks."""
    scores = model.predict(np.asarray(E_pool), chunk)
    scores[np.asarray(landmark_index)] = np.asarray(P_landmarks, dtype=np.float64)
    return scores
