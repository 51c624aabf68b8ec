// Reconstruct: rows from a file or pasted in, each original beside its reconstruction (images), or
// per-feature bars (tabular).

import { post } from "../api.js";
import { DataError, checkWidth, parseCsv, parseIndices } from "../data.js";
import { bars, fmt, image, imageSize, range } from "../draw.js";
import { dropZone, featureNames, h, messages, needs, ui, uid } from "../ui.js";

export const title = "Reconstruct";
const MAX_SHOWN = 64;

export function rowsSource(ctx, model, onChange) {
  const msg = messages();
  const loaded = h("p", { class: "muted", "aria-live": "polite" });
  const show = () => (loaded.textContent = ctx.data ? `Loaded: ${ctx.data.name}, ${ctx.data.rows.length} rows of ${ctx.data.width} values.` : "No rows loaded yet.");
  const take = (data) => {
    msg.clear();
    try {
      checkWidth(data, model);
    } catch (e) {
      return msg.show(ui.error(e), ui.note("Nothing was sent."));
    }
    ctx.data = data;
    show();
    onChange();
  };
  const pasteId = uid("paste");
  const paste = h("textarea", { id: pasteId, rows: 3, spellcheck: "false", placeholder: `${model.n_features} numbers per line` });
  const use = h("button", { type: "button" }, "Use pasted rows");
  use.addEventListener("click", () => {
    try {
      take(parseCsv(paste.value, "the pasted rows"));
    } catch (e) {
      msg.show(ui.error(e), ui.note("Nothing was sent."));
    }
  });
  show();
  const node = h("div", { class: "source" }, dropZone("Pick or drop a file of rows", take, (e) => msg.show(ui.error(e), ui.note("Nothing was sent."))), h("div", { class: "stack" }, h("label", { for: pasteId }, "…or paste rows (CSV)"), paste, use), loaded, msg.node);
  return { node, msg };
}

export function render(root, ctx) {
  const model = ctx.model();
  root.append(h("h2", {}, title));
  const missing = needs(model, "reconstruct");
  if (missing) return root.append(missing);
  const pickId = uid("rows");
  const pick = h("input", { id: pickId, value: "0-7", spellcheck: "false" });
  const go = h("button", { type: "submit" }, "Reconstruct");
  const form = h("form", { class: "controls" }, h("div", { class: "field" }, h("label", { for: pickId }, "Rows (e.g. 0-7, 12)"), pick), go);
  const out = h("div", { id: "reconstructions" });
  const msg = messages();
  const source = rowsSource(ctx, model, () => form.requestSubmit());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    msg.clear();
    let idx;
    try {
      if (!ctx.data) throw new DataError("no rows loaded: pick a file or paste rows first");
      checkWidth(ctx.data, model);
      idx = parseIndices(pick.value, ctx.data.rows.length, Math.min(MAX_SHOWN, ctx.limits.max_rows));
    } catch (err) {
      return msg.show(ui.error(err), ui.note("Nothing was sent."));
    }
    const inputs = idx.map((i) => ctx.data.rows[i]);
    try {
      const r = await post("reconstruct", { model: model.name, version: model.version, inputs });
      show(out, model, idx, inputs, r.reconstructions);
    } catch (err) {
      msg.show(ui.error(err));
    }
  });
  root.append(source.node, form, msg.node, out);
}

function show(root, model, idx, inputs, outputs) {
  const size = imageSize(model);
  const mse = (a, b) => a.reduce((s, v, j) => s + (v - b[j]) ** 2, 0) / a.length;
  if (size) {
    const r = range([...inputs, ...outputs]);
    root.replaceChildren(
      h("p", { class: "muted" }, "Each pair: the original (left) and its reconstruction (right)."),
      h("div", { class: "pairs" }, idx.map((i, k) => h("figure", { class: "pair" }, image(inputs[k], size, r, `row ${i}, original`), image(outputs[k], size, r, `row ${i}, reconstruction`), h("figcaption", {}, `row ${i} · MSE ${fmt(mse(inputs[k], outputs[k]))}`)))),
    );
    return;
  }
  const names = featureNames(model);
  root.replaceChildren(
    h("p", { class: "muted" }, "Grey: the original values; blue: the reconstruction."),
    ...idx.map((i, k) => {
      const canvas = h("canvas", { width: 720, height: 160, class: "chart", role: "img", "aria-label": `row ${i}: original and reconstruction per feature` });
      bars(canvas, inputs[k], outputs[k], names);
      return h("figure", { class: "bars" }, canvas, h("figcaption", {}, `row ${i} · MSE ${fmt(mse(inputs[k], outputs[k]))}`));
    }),
  );
}
