// Score a file: the scores over the calibration distribution, a threshold to drag, the top flagged
// rows with their per-feature contributions, and the scored rows as CSV. Large files go in chunks.

import { ApiError, bodyBytes, post } from "../api.js";
import { DataError, checkWidth } from "../data.js";
import { cdf, fmt, histogram, histogramRange, image, imageSize, range, valueAt } from "../draw.js";
import { download, dropZone, featureNames, h, messages, needs, table, ui } from "../ui.js";

export const title = "Score a file";
const CHUNK_ROWS = 1000; // progress granularity; never more than the service's max_rows
const TOP = 20;

// Rows per request under both limits: max_rows, and max_body_bytes for the JSON body.
export function chunkRows(data, model, limits, explain) {
  let rows = Math.min(CHUNK_ROWS, limits.max_rows);
  const body = (n) => ({ model: model.name, version: model.version, explain, inputs: data.rows.slice(0, n) });
  while (rows > 1 && bodyBytes(body(rows)) > limits.max_body_bytes * 0.9) rows = Math.floor(rows / 2);
  const one = bodyBytes(body(1));
  if (one > limits.max_body_bytes) {
    throw new DataError(`one row of ${data.name} takes ${one} bytes as JSON; the service takes bodies up to ${limits.max_body_bytes} bytes`);
  }
  return rows;
}

async function scoreAll(data, model, limits, progress, notes) {
  let explain = true;
  const out = { scores: [], percentiles: [], is_anomaly: [], contributions: [], threshold: null };
  let step = chunkRows(data, model, limits, explain);
  for (let start = 0; start < data.rows.length; ) {
    const inputs = data.rows.slice(start, start + step);
    let r;
    try {
      r = await post("anomaly-score", { model: model.name, version: model.version, inputs, explain });
    } catch (e) {
      if (explain && e instanceof ApiError && e.status === 400) {
        explain = false; // this kind has no per-feature contributions: score without them
        out.contributions = null;
        notes.push(`No per-feature contributions: ${e.message}`);
        continue;
      }
      throw e;
    }
    out.scores.push(...r.scores);
    out.percentiles.push(...r.percentiles);
    out.is_anomaly.push(...r.is_anomaly);
    if (explain) out.contributions.push(...r.contributions);
    out.threshold = r.threshold;
    start += inputs.length;
    progress(start, data.rows.length);
  }
  return out;
}

function results(root, data, model, res) {
  const q = model.anomaly_score.quantiles;
  const [lo, hi] = histogramRange(res.scores, q);
  const sorted = Float64Array.from(res.scores).sort();
  // The chart stops at the 99th percentile (a few huge scores would squash it); the slider goes on.
  const top = Math.max(hi, sorted[sorted.length - 1]);
  const order = res.scores.map((_, i) => i).sort((a, b) => res.scores[b] - res.scores[a]);
  const names = featureNames(model);
  const size = imageSize(model);
  const pixels = size ? range(data.rows) : null;
  let t = res.threshold;

  const canvas = h("canvas", { width: 720, height: 260, class: "chart", role: "img", "aria-label": "Histogram of the file's scores over the calibration distribution, with the threshold" });
  canvas.dataset.lo = lo; // the chart's score range, for scripts and tests
  canvas.dataset.hi = hi;
  const slider = h("input", { id: "threshold", type: "range", min: lo, max: top, step: (top - lo) / 1000, value: t });
  const exact = h("input", { id: "threshold-value", type: "number", step: "any", value: t, "aria-label": "Threshold value" });
  const flagged = h("output", { id: "flagged", for: "threshold", "aria-live": "polite" });
  const flaggedRows = h("div", { class: "top" });

  const flaggedCount = () => sorted.length - upperBound(sorted, t);
  const update = () => {
    histogram(canvas, { scores: res.scores, quantiles: q, lo, hi, threshold: t });
    const n = flaggedCount();
    const share = (100 * n) / sorted.length;
    const expected = 100 * (1 - cdf(q, t));
    flagged.textContent = `${n} of ${sorted.length} rows flagged (${fmt(share)} %) at threshold ${fmt(t)}; rows like the calibration data: ${fmt(expected)} % flagged.`;
    const rows = order.filter((i) => res.scores[i] > t).slice(0, TOP);
    flaggedRows.replaceChildren(
      rows.length
        ? table(
            ["row", ...(size ? ["image"] : []), "score", "percentile", "largest contributions"],
            rows.map((i) => [String(i), ...(size ? [image(data.rows[i], size, pixels, `row ${i}`)] : []), fmt(res.scores[i]), fmt(res.percentiles[i]), contributions(res, i, names)]),
            `Top ${rows.length} flagged rows, highest score first`,
          )
        : ui.note("No row is over the threshold."),
    );
  };
  let queued = false;
  const set = (v, from) => {
    t = Math.min(top, Math.max(lo, v));
    if (from !== slider) slider.value = t;
    if (from !== exact) exact.value = Number(t.toPrecision(6));
    if (!queued) {
      queued = true;
      requestAnimationFrame(() => ((queued = false), update()));
    }
  };
  // The slider's steps need not land on the highest score: its end means "flag nothing".
  const fromSlider = () => (Number(slider.value) >= Number(slider.max) - (top - lo) / 2000 ? top : Number(slider.value));
  slider.addEventListener("input", () => set(fromSlider(), slider));
  exact.addEventListener("change", () => Number.isFinite(Number(exact.value)) && exact.value !== "" && set(Number(exact.value), exact));
  let dragging = false;
  canvas.addEventListener("pointerdown", (e) => {
    dragging = true;
    canvas.setPointerCapture(e.pointerId);
    set(valueAt(canvas, lo, hi, e.clientX));
  });
  canvas.addEventListener("pointermove", (e) => dragging && set(valueAt(canvas, lo, hi, e.clientX)));
  canvas.addEventListener("pointerup", () => (dragging = false));
  const served = h("button", { type: "button", onclick: () => set(res.threshold) }, "Back to the served threshold");
  const csv = h("button", { type: "button", onclick: () => download(`${data.name.replace(/\.[^.]*$/, "")}-scores.csv`, toCsv(res, t)) }, "Download scored rows (CSV)");

  root.replaceChildren(
    h("p", {}, `${data.name}: ${res.scores.length} rows scored by ${model.name} v${model.version} (${model.anomaly_score.method}). Grey: the calibration rows' scores; bars: this file's (red past the threshold).`),
    canvas,
    h("div", { class: "controls" }, h("div", { class: "field wide" }, h("label", { for: "threshold" }, "Threshold (drag the red line or use the arrow keys)"), slider), h("div", { class: "field" }, exact), served, csv),
    flagged,
    flaggedRows,
  );
  update();
}

function contributions(res, i, names) {
  if (!res.contributions) return "—";
  const c = res.contributions[i];
  return c.map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]).slice(0, 4).map(([v, j]) => `${names[j]} ${fmt(v)}`).join(", ");
}

function toCsv(res, t) {
  const lines = ["row,score,percentile,is_anomaly_served,flagged_at_threshold"];
  res.scores.forEach((s, i) => lines.push(`${i},${s},${res.percentiles[i]},${res.is_anomaly[i]},${s > t}`));
  lines.push("");
  return `# threshold ${t} (served ${res.threshold})\n${lines.join("\n")}`;
}

function upperBound(sorted, t) {
  let a = 0;
  let b = sorted.length;
  while (a < b) {
    const m = (a + b) >> 1;
    if (sorted[m] <= t) a = m + 1;
    else b = m;
  }
  return a;
}

export function render(root, ctx) {
  const model = ctx.model();
  root.append(h("h2", {}, title));
  const missing = needs(model, "anomaly-score");
  if (missing) return root.append(missing);
  const msg = messages();
  const progress = h("progress", { id: "score-progress", max: 1, value: 0, hidden: true, "aria-label": "Rows scored" });
  const status = h("p", { class: "muted", "aria-live": "polite" });
  const out = h("div", { id: "score-results" });
  const run = async (data) => {
    msg.clear();
    out.replaceChildren();
    try {
      checkWidth(data, model);
    } catch (e) {
      return msg.show(ui.error(e), ui.note("Nothing was sent."));
    }
    ctx.data = data;
    const notes = [];
    progress.hidden = false;
    progress.value = 0;
    try {
      const res = await scoreAll(data, model, ctx.limits, (done, n) => {
        progress.value = done / n;
        status.textContent = `Scored ${done} of ${n} rows`;
      }, notes);
      msg.show(...notes.map((n) => ui.note(n)));
      results(out, data, model, res);
    } catch (e) {
      msg.show(ui.error(e), e instanceof DataError ? ui.note("Nothing was sent.") : null);
    }
  };
  root.append(dropZone("Pick or drop a file of rows to score", run, (e) => msg.show(ui.error(e), ui.note("Nothing was sent."))), msg.node, progress, status, out);
  if (ctx.data && ctx.data.width === model.n_features) {
    root.insertBefore(h("p", {}, h("button", { type: "button", onclick: () => run(ctx.data) }, `Score ${ctx.data.name} (${ctx.data.rows.length} rows, loaded earlier)`)), msg.node);
  }
}
