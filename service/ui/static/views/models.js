// Models: every model and version with its state (refused: why), kind, features, calibration, metrics.

import { fmt } from "../draw.js";
import { h, table, ui } from "../ui.js";

export const title = "Models";

const value = (v) => (typeof v === "number" ? fmt(v) : Array.isArray(v) ? v.join(" × ") : v === null || v === undefined ? "—" : String(v));

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, value(v))]));
}

function version(name, v, isDefault) {
  const head = h("h3", {}, `${name} `, h("span", { class: "muted" }, `version ${v.version}`), " ", h("span", { class: `state ${v.state}` }, v.state), isDefault ? h("span", { class: "muted" }, " (default)") : null);
  if (v.state !== "ready") {
    return h("article", { class: "card" }, head, v.reason ? h("p", { class: "error" }, `Refused: ${v.reason}`) : ui.note("Loading…"));
  }
  const a = v.anomaly_score || {};
  const metrics = Object.entries(v.metrics || {}).filter(([, x]) => typeof x === "number");
  const evaluation = v.evaluation && typeof v.evaluation === "object" ? Object.entries(v.evaluation).filter(([, x]) => typeof x === "number") : [];
  return h(
    "article",
    { class: "card" },
    head,
    facts([
      ["kind", v.kind],
      ["capabilities", (v.capabilities || []).join(", ")],
      ["features", v.n_features],
      ["latent dimensions", v.latent_dim],
      ["image shape", v.image_shape || undefined],
      ["likelihood", v.likelihood],
      ["preprocessing", v.preprocessing],
      ["runtime", v.runtime ? `${v.runtime.runtime} on ${v.runtime.device}` : undefined],
      ["trained on", v.data ? `${v.data.source ?? "?"} (${Object.entries(v.data).filter(([k]) => k !== "source").map(([k, x]) => `${k} ${x}`).join(", ")})` : undefined],
      ["created", v.created_at],
    ]),
    h("h4", {}, "Anomaly score and calibration"),
    facts([
      ["method", a.method],
      ["threshold", a.threshold],
      ["contamination", a.contamination !== undefined ? `${fmt(a.contamination * 100)} % flagged on held-out rows` : undefined],
      ["calibration rows", a.calibration_rows],
    ]),
    a.description ? h("p", { class: "muted" }, a.description) : null,
    metrics.length ? h("details", {}, h("summary", {}, `Training metrics (${metrics.length})`), table(["metric", "value"], metrics.map(([k, x]) => [k, fmt(x)]))) : null,
    evaluation.length ? [h("h4", {}, "Evaluation report"), table(["figure", "value"], evaluation.map(([k, x]) => [k, fmt(x)]))] : ui.note("No evaluation report for this version (latentserve evaluate writes one)."),
  );
}

export function render(root, ctx) {
  const { models, ignored } = ctx.listing;
  root.append(h("h2", {}, "Models"));
  if (!models.length) root.append(ui.note("The repository holds no models: train one with latentserve train."));
  for (const m of models) root.append(h("section", { class: "model" }, m.versions.map((v) => version(m.name, v, v.version === m.default_version))));
  if (ignored && ignored.length) {
    root.append(h("h3", {}, "Ignored folders"), table(["folder", "why"], ignored.map((i) => [i.path, i.reason])));
  }
}
