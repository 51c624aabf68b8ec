"""The feature extractor for Fréchet distances: a small classifier trained on the evaluation data itself.

Image FIDs use Inception features, which need downloaded weights and know nothing of tabular rows.
Here the features come from a scikit-learn MLP that `latentserve evaluate` trains, offline and in a few
seconds, on the real rows it evaluates against: it learns to tell apart the data's k-means clusters
(pseudo-classes: no labels needed), and its last hidden layer is the feature space. Distances in it
weigh what separates the data's modes, as a classifier's features do for FID.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

N_CLUSTERS = 10  # pseudo-classes: the digits have ten; for other data, the modes k-means finds
HIDDEN = (128, 64)  # the last layer (64) is the feature space


@dataclass
class FeatureClassifier:
    """`fit(real)` once, then `features(rows)`: (N, F) model-space rows -> (N, 64) features."""

    seed: int = 0
    accuracy: float = float("nan")  # held-out accuracy on the pseudo-classes, reported beside the FD

    def fit(self, x: np.ndarray) -> FeatureClassifier:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        x = np.asarray(x, np.float64)
        std = x.std(0)
        self._mean, self._std = x.mean(0), np.where(std > 1e-8, std, 1.0)  # constant columns stay unscaled
        xs = (x - self._mean) / self._std
        k = min(N_CLUSTERS, max(2, len(x) // 20))
        y = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit_predict(xs)
        x_tr, x_te, y_tr, y_te = train_test_split(xs, y, test_size=0.2, random_state=self.seed)
        self._mlp = MLPClassifier(HIDDEN, max_iter=300, early_stopping=False, random_state=self.seed)
        with warnings.catch_warnings():  # 300 epochs are enough for features; full convergence is not needed
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._mlp.fit(x_tr, y_tr)
        self.accuracy = float(self._mlp.score(x_te, y_te))
        return self

    def features(self, x: np.ndarray) -> np.ndarray:
        """Activations of the last hidden layer (ReLU), the classifier's penultimate representation."""
        h = (np.asarray(x, np.float64) - self._mean) / self._std
        for w, b in zip(self._mlp.coefs_[:-1], self._mlp.intercepts_[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return h
