"""The score sections of `latentserve evaluate`: anomaly detection (with labels), the threshold check
(with or without), and per-feature contributions of the top flagged rows (tabular). All from the scores
the service itself serves for these rows (`ctx.scores()`), at the served threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from artifact.errors import NotSupported
from training import metrics as M
from training import report_plots as plots
from training.evaluation import Context, _f
from training.predictor import raw_scores
from training.report import Section

DISAGREEMENT_POINTS = 5.0  # warn when the served calibration and this data disagree by more


def anomaly_detection(ctx: Context, bar) -> Section:
    sec = Section("Anomaly detection")
    if ctx.labels is None:
        sec.skipped = "no labels given (--labels COLUMN|FILE): ROC AUC, AP, F1 and the curves need them"
        return sec
    y, served = ctx.labels, ctx.scores()
    s, thr = served.scores.astype(np.float64), served.threshold
    base = float(y.mean())
    f1m, f1m_thr = M.f1_max(y, s)
    point: dict[str, float] = {
        "roc_auc": M.roc_auc(y, s),
        "average_precision": M.average_precision(y, s),
        "f1_at_threshold": M.precision_recall_f1(y, s, thr)[2],
        "precision_at_threshold": M.precision_recall_f1(y, s, thr)[0],
        "recall_at_threshold": M.precision_recall_f1(y, s, thr)[1],
        "f1_max": f1m,
        "tpr_at_1pct_fpr": M.tpr_at_fpr(y, s, 0.01),
        "tpr_at_5pct_fpr": M.tpr_at_fpr(y, s, 0.05),
    }
    fns = {
        "roc_auc": M.roc_auc,
        "average_precision": M.average_precision,
        "f1_at_threshold": lambda yy, ss: M.precision_recall_f1(yy, ss, thr)[2],
        "precision_at_threshold": lambda yy, ss: M.precision_recall_f1(yy, ss, thr)[0],
        "recall_at_threshold": lambda yy, ss: M.precision_recall_f1(yy, ss, thr)[1],
        "f1_max": lambda yy, ss: M.f1_max(yy, ss)[0],
        "tpr_at_1pct_fpr": lambda yy, ss: M.tpr_at_fpr(yy, ss, 0.01),
        "tpr_at_5pct_fpr": lambda yy, ss: M.tpr_at_fpr(yy, ss, 0.05),
    }
    ci = {}
    for key, fn in fns.items():
        ci[key] = M.bootstrap_ci(fn, y, s, n_boot=ctx.n_boot, seed=ctx.seed)
        bar.update(1)
    ctx.metrics["anomaly_detection"] = {
        **point,
        "base_rate": base,
        "n_anomalies": int(y.sum()),
        "n_rows": len(y),
        "threshold": thr,
        "f1_max_threshold": f1m_thr,
        "bootstrap_95": {k: list(v) for k, v in ci.items()},
        "n_boot": ctx.n_boot,
    }
    label = {
        "roc_auc": "ROC AUC",
        "average_precision": f"average precision (base rate {base:.3f})",
        "f1_at_threshold": f"F1 at the served threshold {_f(thr)}",
        "precision_at_threshold": "precision at it",
        "recall_at_threshold": "recall at it",
        "f1_max": f"F1-max (threshold {_f(f1m_thr)})",
        "tpr_at_1pct_fpr": "TPR at 1 % FPR",
        "tpr_at_5pct_fpr": "TPR at 5 % FPR",
    }
    sec.text(
        f"{len(y)} rows, {int(y.sum())} labelled anomalous (base rate {base:.3f}). A row is flagged when its "
        f"score exceeds the threshold, as /anomaly-score's is_anomaly. Intervals: stratified bootstrap, "
        f"{ctx.n_boot} resamples."
    )
    sec.table(
        ["metric", "value", "95 % interval"],
        [[label[k], f"{point[k]:.3f}", f"{ci[k][0]:.3f} – {ci[k][1]:.3f}"] for k in fns],
    )
    fpr, tpr, _ = M.roc_curve(y, s)
    precision, recall, _ = M.pr_curve(y, s)
    plots.roc_pr(ctx.out / "roc_pr.png", fpr, tpr, precision, recall, base)
    sec.figure("roc_pr.png", "ROC and precision-recall curves")
    plots.score_histogram(ctx.out / "score_histogram.png", s, y, thr)
    sec.figure("score_histogram.png", "Score distribution by label, served threshold dashed")
    return sec


def threshold_check(ctx: Context) -> Section:
    sec = Section("Threshold check")
    served = ctx.scores()
    cal = ctx.manifest.calibration
    share = M.flagged_share(served.scores, served.threshold)
    worst, at = M.percentile_agreement(served.scores, served.percentiles)
    res: dict[str, Any] = {
        "threshold": served.threshold,
        "contamination": cal.contamination,
        "flagged_share": share,
        "percentile_max_disagreement_points": worst,
        "served_percentile_at_empirical": {str(q): p for q, p in at},
    }
    sec.text(
        f"The served threshold {_f(served.threshold)} (score method {cal.method}) is the "
        f"{100 * (1 - cal.contamination):.0f}th percentile of the calibration scores (contamination "
        f"{cal.contamination}); it flags {100 * share:.1f} % of these {len(served.scores)} rows."
    )
    if ctx.labels is not None:
        normal = ctx.labels == 0
        res["flagged_share_label0"] = M.flagged_share(served.scores[normal], served.threshold)
        sec.text(f"Among the rows labelled 0: {100 * res['flagged_share_label0']:.1f} % flagged (false positives).")
    sec.table(
        ["empirical rank on this data", *[f"{q:g}" for q, _ in at]],
        [["served percentile", *[f"{p:.1f}" for _, p in at]]],
    )
    sec.text(f"Largest gap between a row's served percentile and its rank on this data: {worst:.1f} points.")
    gap = abs(100 * (share - cal.contamination))
    if gap > DISAGREEMENT_POINTS:
        sec.warnings.append(
            f"the threshold flags {100 * share:.1f} % of rows, {gap:.1f} points from the "
            f"contamination {100 * cal.contamination:g} %: recalibrate or expect that share"
        )
    if worst > DISAGREEMENT_POINTS:
        sec.warnings.append(
            f"served percentiles differ from the ranks on this data by up to {worst:.1f} points: "
            "this data is not distributed like the calibration rows"
        )
    ctx.metrics["threshold_check"] = {**res, "warnings": list(sec.warnings)}
    if ctx.labels is None:
        plots.score_histogram(ctx.out / "score_histogram.png", served.scores, None, served.threshold)
        sec.figure("score_histogram.png", "Score distribution, served threshold dashed")
    return sec


def contributions(ctx: Context) -> Section:
    sec = Section("Per-feature contributions")
    if ctx.image:
        sec.skipped = "image data: per-pixel contributions are not shown; see the worst reconstructions"
        return sec
    served = ctx.scores()
    top = np.argsort(-served.scores)[: min(10, len(served.scores))]
    try:
        explained = raw_scores(ctx.predictor, ctx.x[top], explain=True)
    except NotSupported as e:
        sec.skipped = e.message
        return sec
    c = np.asarray(explained.contributions, np.float64)  # (T, F), model space
    names, rows, records = ctx.names(), [], []
    for i, row in enumerate(top):
        share = c[i] / max(c[i].sum(), 1e-12)
        best = np.argsort(-c[i])[:5]
        rows.append(
            [
                str(row + 1),
                _f(served.scores[row]),
                f"{served.percentiles[row]:.1f}",
                ", ".join(f"{names[j]} {100 * share[j]:.0f} %" for j in best),
            ]
        )
        records.append(
            {
                "row": int(row) + 1,
                "score": float(served.scores[row]),
                "top_features": [{"feature": names[j], "share": float(share[j])} for j in best],
            }
        )
    ctx.metrics["contributions"] = records
    sec.text(
        "The highest-scoring rows (1-based row numbers) and the features that carry most of their "
        "reconstruction term, as /anomaly-score with explain: true returns them (the latent and KL terms "
        "belong to no single feature)."
    )
    sec.table(["row", "score", "percentile", "top features (share of the reconstruction term)"], rows)
    return sec
