// Latent space: an interpolation between two encoded rows (or two seeds) decoded in n steps, and a
// 2-D PCA of the codes of the loaded rows, coloured by their anomaly percentile.

import { post } from "../api.js";
import { DataError, checkWidth } from "../data.js";
import { colour, fmt, image, imageSize, range, scatter } from "../draw.js";
import { featureNames, field, h, messages, select, table, ui } from "../ui.js";
import { rowsSource } from "./reconstruct.js";
import { chunkRows } from "./score.js";

export const title = "Latent space";
const MAX_STEPS = 64;

// N(0, I) latents from a seed, drawn in the page (mulberry32 + Box-Muller): the same seed, the same z.
export function gaussian(seed, dim) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: dim }, () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()));
}

async function endpoints(mode, model, ctx, a, b) {
  if (mode === "seeds") return [gaussian(a, model.latent_dim), gaussian(b, model.latent_dim)];
  if (!ctx.data) throw new DataError("no rows loaded: pick a file or paste rows first");
  checkWidth(ctx.data, model);
  for (const i of [a, b]) if (!(i >= 0 && i < ctx.data.rows.length)) throw new DataError(`row ${i} does not exist: the data has rows 0 to ${ctx.data.rows.length - 1}`);
  const r = await post("encode", { model: model.name, version: model.version, inputs: [ctx.data.rows[a], ctx.data.rows[b]] });
  return r.mu || r.latents;
}

function interpolation(root, ctx, model) {
  const canEncode = model.capabilities.includes("encode");
  // ae/rae draw from a Gaussian fitted to their codes, which the page does not know: rows only.
  const canSeed = model.kind === "vae" || model.kind === "gan";
  const modes = [...(canEncode ? [["rows", "two rows of the loaded data"]] : []), ...(canSeed ? [["seeds", "two seeds (z ~ N(0, I))"]] : [])];
  if (!modes.length) return root.append(ui.note(`${model.name} can neither encode rows nor draw N(0, I) latents.`));
  const [modeField, mode] = select("Between", modes, modes[0][0]);
  const [aField, a] = field("From (row or seed)", { type: "number", min: 0, step: 1, value: 0, required: true });
  const [bField, b] = field("To (row or seed)", { type: "number", min: 0, step: 1, value: 1, required: true });
  const [nField, n] = field("Steps", { type: "number", min: 2, max: MAX_STEPS, step: 1, value: 8, required: true });
  const form = h("form", { class: "controls", id: "interpolate" }, modeField, aField, bField, nField, h("button", { type: "submit" }, "Interpolate"));
  const msg = messages();
  const out = h("div", { id: "frames" });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    msg.clear();
    if (!form.reportValidity()) return;
    const steps = Number(n.value);
    try {
      const [za, zb] = await endpoints(mode.value, model, ctx, Number(a.value), Number(b.value));
      const latents = Array.from({ length: steps }, (_, k) => za.map((v, j) => v + ((zb[j] - v) * k) / (steps - 1)));
      const r = await post("sample", { model: model.name, version: model.version, latents });
      const size = imageSize(model);
      if (size) {
        const rg = range(r.samples);
        out.replaceChildren(h("div", { class: "strip", role: "list", "aria-label": `${steps} decoded steps` }, r.samples.map((s, k) => h("figure", { class: "frame", role: "listitem" }, image(s, size, rg, `step ${k + 1} of ${steps}`), h("figcaption", {}, `${k + 1}`)))));
      } else {
        const t = table(["step", ...featureNames(model)], r.samples.map((s, k) => [String(k + 1), ...s.map(fmt)]), `${steps} decoded steps`);
        t.querySelectorAll("tbody tr").forEach((tr) => tr.classList.add("frame"));
        out.replaceChildren(t);
      }
    } catch (err) {
      msg.show(ui.error(err), err instanceof DataError ? ui.note("Nothing was sent.") : null);
    }
  });
  root.append(h("h3", {}, "Interpolation"), form, msg.node, out);
}

// The top two principal axes of the codes (power iteration with deflation: L is small).
export function pca2(codes) {
  const n = codes.length;
  const d = codes[0].length;
  const mean = new Array(d).fill(0);
  for (const c of codes) for (let j = 0; j < d; j++) mean[j] += c[j] / n;
  const x = codes.map((c) => c.map((v, j) => v - mean[j]));
  const cov = Array.from({ length: d }, () => new Array(d).fill(0));
  for (const r of x) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) cov[i][j] += (r[i] * r[j]) / Math.max(1, n - 1);
  const total = cov.reduce((s, r, i) => s + r[i], 0) || 1;
  const axes = [];
  const shares = [];
  for (let k = 0; k < 2; k++) {
    let v = Array.from({ length: d }, (_, j) => 1 + j * 0.01);
    let lambda = 0;
    for (let it = 0; it < 200; it++) {
      const w = cov.map((r) => r.reduce((s, c, j) => s + c * v[j], 0));
      lambda = Math.hypot(...w);
      if (lambda === 0) break;
      v = w.map((c) => c / lambda);
    }
    axes.push(v);
    shares.push(lambda / total);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) cov[i][j] -= lambda * v[i] * v[j];
  }
  return { points: x.map((r) => axes.map((v) => r.reduce((s, c, j) => s + c * v[j], 0))), shares };
}

async function chunked(endpoint, ctx, model, pick) {
  const step = chunkRows(ctx.data, model, ctx.limits, false);
  const out = [];
  for (let i = 0; i < ctx.data.rows.length; i += step) {
    const r = await post(endpoint, { model: model.name, version: model.version, inputs: ctx.data.rows.slice(i, i + step) });
    out.push(...pick(r));
  }
  return out;
}

function map(root, ctx, model) {
  root.append(h("h3", {}, "PCA of the codes"));
  if (!model.capabilities.includes("encode")) return root.append(ui.note(`${model.name} is a ${model.kind}: it has no encoder, so there are no codes to map.`));
  const msg = messages();
  const out = h("div", { id: "pca" });
  const go = h("button", { type: "button" }, "Map the loaded rows");
  go.addEventListener("click", async () => {
    msg.clear();
    try {
      if (!ctx.data) throw new DataError("no rows loaded: pick a file or paste rows first");
      checkWidth(ctx.data, model);
      if (ctx.data.rows.length < 3) throw new DataError(`a map needs at least 3 rows; ${ctx.data.name} has ${ctx.data.rows.length}`);
    } catch (err) {
      return msg.show(ui.error(err), ui.note("Nothing was sent."));
    }
    try {
      const codes = await chunked("encode", ctx, model, (r) => r.mu || r.latents);
      const pct = model.capabilities.includes("anomaly-score") ? await chunked("anomaly-score", ctx, model, (r) => r.percentiles) : codes.map(() => 50);
      const { points, shares } = pca2(codes);
      const canvas = h("canvas", { width: 560, height: 400, class: "chart square", role: "img", "aria-label": `PCA of ${codes.length} codes, coloured by anomaly percentile` });
      scatter(canvas, points, pct.map((p) => p / 100));
      const legend = h("canvas", { width: 200, height: 12, class: "legend", role: "presentation" });
      const lctx = legend.getContext("2d");
      for (let x = 0; x < 200; x++) (lctx.fillStyle = colour(x / 199)), lctx.fillRect(x, 0, 1, 12);
      out.replaceChildren(canvas, h("p", { class: "muted" }, `${codes.length} rows; axis 1 holds ${fmt(100 * shares[0])} % of the codes' variance, axis 2 ${fmt(100 * shares[1])} %. Colour: anomaly percentile `, "0 ", legend, " 100."));
    } catch (err) {
      msg.show(ui.error(err));
    }
  });
  root.append(go, msg.node, out);
}

export function render(root, ctx) {
  const model = ctx.model();
  root.append(h("h2", {}, title));
  if (!model) return root.append(ui.note("No model is ready: see the Models view."));
  if (!model.capabilities.includes("sample") && !model.capabilities.includes("encode")) return root.append(ui.note(`${model.name} has no latent space to show.`));
  if (model.capabilities.includes("encode")) root.append(rowsSource(ctx, model, () => {}).node);
  if (model.capabilities.includes("sample")) interpolation(root, ctx, model);
  map(root, ctx, model);
}
