"""Ensembles of the best candidates: a plain average, or a stacked logistic regression.

Members are fitted on training rows only (under cross-validation each member is itself the
average of its fold models, and the validation scores are out-of-fold). A stack's own weights
are learned on validation scores, so its validation AUC is measured by cross-fitting (each
fold scored by a stacker that never saw it); the final stacker is then fitted on all
validation rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from mlprod.train.encoders import RecordRows, SmallBatch, TabularEncoder, is_small
from mlprod.train.linear import RowSums, row_sums
from mlprod.train.models import FittedModel, linear_terms, positive_probability
from mlprod.train.single_row import SingleRowBooster, single_row_booster

FOLDS = 5
_FAST = "_single_row_booster"  # where an EncodedModel keeps its fast predictor (not pickled)
_SUMS = "_linear_row_sums"  # where it keeps a linear model's row sums (not pickled)


@dataclass
class EncodedModel:
    """A model with the encoder that feeds it: scores Arrow feature rows directly.

    A LightGBM model scores a single row through its booster's fast single-row predictor
    (:mod:`mlprod.train.single_row`): the same score, without ~30 µs of wrapper per call. A
    linear model scores a large table from its encoder's values, without the one-hot matrix
    (:mod:`mlprod.train.linear`): the same scores, at a fraction of the cost.
    """

    encoder: TabularEncoder
    model: FittedModel

    def __getstate__(self) -> dict[str, Any]:
        """The fitted state only: the fast predictors are made again after loading."""
        state = self.__dict__.copy()
        state.pop(_FAST, None)
        state.pop(_SUMS, None)
        return state

    def predict_table(self, table: pa.Table) -> np.ndarray:
        if is_small(table.num_rows):
            return self.predict_batch(SmallBatch(table))
        sums = self._row_sums()
        if sums is not None:
            scores = sums.probabilities(self.encoder.dense_columns(table))
            if scores is not None:
                return scores
        return self.model.predict_proba(self.encoder.transform(table))

    def predict_rows(
        self, records: Sequence[Mapping[str, Any]], schema: pa.Schema
    ) -> np.ndarray | None:
        """``predict_table`` of ``pa.Table.from_pylist(records, schema=schema)`` without the
        table, for a few rows (None for more: score the table)."""
        return self.predict_batch(RecordRows(records, schema)) if is_small(len(records)) else None

    def predict_batch(self, batch: SmallBatch) -> np.ndarray:
        """``predict_table`` for a few rows already read out of Arrow (shared by members)."""
        x = self.encoder.transform_batch(batch)
        if batch.rows == 1:
            fast = self._fast_predictor()
            scores = fast.predict(x) if fast is not None else None
            if scores is not None:
                return scores
        return self.model.predict_proba(x)

    def _fast_predictor(self) -> SingleRowBooster | None:
        """The model's fast single-row predictor, made on first use (None: there is none)."""
        if _FAST not in self.__dict__:
            self.__dict__[_FAST] = single_row_booster(self.model)
        found: SingleRowBooster | None = self.__dict__[_FAST]
        return found

    def _row_sums(self) -> RowSums | None:
        """A linear model's scores without its one-hot matrix, made on first use (None: not
        a linear model, or one whose sums would not be NumPy's)."""
        if _SUMS not in self.__dict__:
            terms = linear_terms(self.model.estimator) if self.encoder.encoding == "dense" else None
            self.__dict__[_SUMS] = (
                None if terms is None else row_sums(self.encoder.dense_layout(), *terms)
            )
        found: RowSums | None = self.__dict__[_SUMS]
        return found

    def importance(self) -> list[tuple[str, float]]:
        return self.model.importance(self.encoder.columns_)


class Member(Protocol):
    """What an ensemble combines: an encoded model, or (under cross-validation) the average
    of a candidate's fold models."""

    def predict_table(self, table: pa.Table) -> np.ndarray: ...

    def predict_batch(self, batch: SmallBatch) -> np.ndarray: ...

    def importance(self) -> list[tuple[str, float]]: ...


@dataclass
class Ensemble:
    """Several models combined into one score."""

    members: Sequence[Member]
    method: Literal["average", "stacking"]
    stacker: LogisticRegression | None = None

    def combine(self, member_scores: np.ndarray) -> np.ndarray:
        """Combine a (rows x members) matrix of member scores."""
        if self.method == "average" or self.stacker is None:
            combined: np.ndarray = member_scores.mean(axis=1)
            return combined
        return positive_probability(self.stacker, _logit(member_scores))

    def predict_table(self, table: pa.Table) -> np.ndarray:
        if is_small(table.num_rows):  # read the rows out of Arrow once for all members
            return self.predict_batch(SmallBatch(table))
        return self.combine(np.column_stack([m.predict_table(table) for m in self.members]))

    def predict_rows(
        self, records: Sequence[Mapping[str, Any]], schema: pa.Schema
    ) -> np.ndarray | None:
        """As :meth:`EncodedModel.predict_rows`: the rows read once for all members."""
        return self.predict_batch(RecordRows(records, schema)) if is_small(len(records)) else None

    def predict_batch(self, batch: SmallBatch) -> np.ndarray:
        """``predict_table`` for a few rows already read out of Arrow."""
        return self.combine(np.column_stack([m.predict_batch(batch) for m in self.members]))

    def importance(self) -> list[tuple[str, float]]:
        """The members' importances, each normalised to sum to 1, then averaged."""
        totals: dict[str, float] = {}
        for member in self.members:
            pairs = member.importance()
            scale = sum(v for _, v in pairs) or 1.0
            for name, v in pairs:
                base = name.split("=")[0].removesuffix("__missing")
                totals[base] = totals.get(base, 0.0) + v / scale / len(self.members)
        return sorted(totals.items(), key=lambda p: -p[1])


def fit_ensemble(
    members: Sequence[Member],
    valid_scores: list[np.ndarray],
    y_valid: np.ndarray,
    method: Literal["average", "stacking"],
    seed: int,
) -> tuple[Ensemble, np.ndarray]:
    """The ensemble and its honest validation scores (cross-fitted for stacking)."""
    scores = np.column_stack(valid_scores)
    if method == "average":
        ensemble = Ensemble(members, "average")
        return ensemble, ensemble.combine(scores)
    features = _logit(scores)
    honest = np.zeros(len(y_valid))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for fit_rows, score_rows in folds.split(features, y_valid):
        stacker = LogisticRegression(C=1.0).fit(features[fit_rows], y_valid[fit_rows])
        honest[score_rows] = stacker.predict_proba(features[score_rows])[:, 1]
    final = LogisticRegression(C=1.0).fit(features, y_valid)
    return Ensemble(members, "stacking", final), honest


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.minimum(np.maximum(p, 1e-6), 1 - 1e-6)  # np.clip, without its wrapper
    result: np.ndarray = np.log(clipped / (1 - clipped))
    return result


def describe(ensemble: Ensemble, names: list[str]) -> dict[str, Any]:
    weights = ensemble.stacker.coef_.ravel().tolist() if ensemble.stacker is not None else None
    return {"method": ensemble.method, "members": names, "weights": weights}
