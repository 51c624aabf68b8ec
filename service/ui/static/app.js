// The page's shell: the API key, the list of models, the model picker and the views (#models, #score, ...).

import { apiKey, get, whenUnauthorized } from "./api.js";
import { ui } from "./ui.js";
import * as models from "./views/models.js";
import * as score from "./views/score.js";
import * as sample from "./views/sample.js";
import * as reconstruct from "./views/reconstruct.js";
import * as latent from "./views/latent.js";

const VIEWS = { models, score, sample, reconstruct, latent };
const $ = (id) => document.getElementById(id);

// What every view reads: the models, the one picked, the limits, and the last file loaded (shared).
const ctx = {
  listing: null,
  versions: [],
  limits: { max_rows: 10000, max_body_bytes: 16 * 1048576, auth: false },
  data: null,
  model() {
    const [name, version] = ($("model").value || "").split("@");
    return this.versions.find((v) => v.name === name && String(v.version) === version) || null;
  },
  params: new URLSearchParams(),
};

function route() {
  const [name, query] = location.hash.slice(1).split("?");
  return { name: VIEWS[name] ? name : "models", params: new URLSearchParams(query || "") };
}

function render() {
  const { name, params } = route();
  ctx.params = params;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = $("view");
  view.replaceChildren();
  document.title = `${VIEWS[name].title} · latentserve`;
  if (ctx.listing === null) return;
  VIEWS[name].render(view, ctx);
}

function fillPicker() {
  const select = $("model");
  const before = select.value;
  const wanted = ctx.params.get("model");
  select.replaceChildren();
  for (const v of ctx.versions.filter((v) => v.state === "ready")) {
    const option = document.createElement("option");
    option.value = `${v.name}@${v.version}`;
    option.textContent = `${v.name} v${v.version} (${v.kind})`;
    select.append(option);
  }
  const values = [...select.options].map((o) => o.value);
  select.value = [wanted, before].find((v) => v && values.includes(v)) || values[0] || "";
}

async function loadModels() {
  try {
    ctx.listing = await get("models");
  } catch (e) {
    if (e.status === 401) return; // the key panel is open and says why
    $("view").replaceChildren(ui.error(e));
    return;
  }
  ctx.versions = ctx.listing.models.flatMap((m) => m.versions.map((v) => ({ ...v, name: m.name, default: v.version === m.default_version })));
  try {
    ctx.limits = await get("ui/limits.json");
  } catch {
    /* the defaults above */
  }
  $("key-panel").hidden = true;
  const key = apiKey.get();
  $("key-status").textContent = key ? "API key: set for this tab" : "";
  $("forget-key").hidden = !key;
  route();
  ctx.params = route().params;
  fillPicker();
  render();
}

function askForKey(message) {
  const panel = $("key-panel");
  panel.hidden = false;
  $("key-message").textContent = apiKey.get() ? `The key was refused: ${message}` : message;
  $("key").focus();
}

whenUnauthorized(askForKey);
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey.set($("key").value.trim());
  $("key").value = "";
  $("key-message").textContent = "";
  loadModels();
});
$("forget-key").addEventListener("click", () => {
  apiKey.clear();
  location.reload();
});
$("model").addEventListener("change", () => {
  // The model picked goes into the address, so that a reload or a shared link shows the same view.
  const { name, params } = route();
  params.set("model", $("model").value);
  history.replaceState(null, "", `#${name}?${params}`);
  render();
});
window.addEventListener("hashchange", () => {
  ctx.params = route().params;
  if (ctx.params.get("model")) fillPicker();
  render();
});
loadModels();
