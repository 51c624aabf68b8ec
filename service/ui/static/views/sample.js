// Sample: n draws at a temperature and a seed (the same seed draws the same grid), as images or a
// table; and a box that decodes latents typed or pasted in.

import { post } from "../api.js";
import { DataError, parseCsv } from "../data.js";
import { fmt, image, imageSize, range } from "../draw.js";
import { featureNames, field, h, messages, needs, table, ui } from "../ui.js";

export const title = "Sample";
const MAX_GRID = 256;

export function showSamples(root, model, samples, caption) {
  const size = imageSize(model);
  if (size) {
    const r = range(samples);
    root.replaceChildren(h("div", { class: "grid", role: "list", "aria-label": caption }, samples.map((s, i) => h("figure", { role: "listitem" }, image(s, size, r, `sample ${i}`)))));
  } else {
    const names = featureNames(model);
    root.replaceChildren(table(["#", ...names], samples.map((s, i) => [String(i), ...s.map(fmt)]), caption));
  }
}

export function render(root, ctx) {
  const model = ctx.model();
  root.append(h("h2", {}, title));
  const missing = needs(model, "sample");
  if (missing) return root.append(missing);
  const p = ctx.params;
  const [nField, n] = field("How many", { type: "number", min: 1, max: Math.min(MAX_GRID, ctx.limits.max_rows), value: p.get("n") || 16, required: true });
  const [tField, temperature] = field("Temperature", { type: "number", min: 0, step: "any", value: p.get("temperature") || 1, required: true });
  const [sField, seed] = field("Seed", { type: "number", min: 0, step: 1, value: p.get("seed") || 0, required: true });
  const msg = messages();
  const grid = h("div", { id: "samples" });
  const form = h("form", { class: "controls" }, nField, tField, sField, h("button", { type: "submit" }, "Draw"));
  const draw = async () => {
    msg.clear();
    const body = { model: model.name, version: model.version, n: Number(n.value), temperature: Number(temperature.value), seed: Number(seed.value) };
    if (!form.reportValidity()) return;
    // Keep the draw in the address: a reload (or a shared link) draws the same grid again.
    const params = new URLSearchParams({ model: `${model.name}@${model.version}`, n: body.n, temperature: body.temperature, seed: body.seed });
    history.replaceState(null, "", `#sample?${params}`);
    try {
      const r = await post("sample", body);
      showSamples(grid, model, r.samples, `${body.n} samples, seed ${body.seed}, temperature ${body.temperature}`);
    } catch (e) {
      msg.show(ui.error(e));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    draw();
  });

  const boxId = "latents-box";
  const box = h("textarea", { id: boxId, rows: 3, spellcheck: "false", placeholder: `${model.latent_dim} numbers per line, one line per latent vector` });
  const decoded = h("div", { id: "decoded" });
  const decodeMsg = messages();
  const decode = h("form", { class: "stack" }, h("label", { for: boxId }, `Decode these latents (${model.latent_dim} values each)`), box, h("button", { type: "submit" }, "Decode"));
  decode.addEventListener("submit", async (e) => {
    e.preventDefault();
    decodeMsg.clear();
    let latents;
    try {
      latents = parseCsv(box.value, "the latents box").rows;
      if (latents[0].length !== model.latent_dim) throw new DataError(`the latents box has ${latents[0].length} values per line; ${model.name} has ${model.latent_dim} latent dimensions`);
      if (latents.length > ctx.limits.max_rows) throw new DataError(`the latents box has ${latents.length} lines; the service takes at most ${ctx.limits.max_rows} rows per request`);
    } catch (err) {
      return decodeMsg.show(ui.error(err), ui.note("Nothing was sent."));
    }
    try {
      const r = await post("sample", { model: model.name, version: model.version, latents });
      showSamples(decoded, model, r.samples, `${latents.length} decoded latents`);
    } catch (err) {
      decodeMsg.show(ui.error(err));
    }
  });
  root.append(form, msg.node, grid, h("h3", {}, "Decode latents"), decode, decodeMsg.node, decoded);
  if (p.has("seed")) draw();
}
