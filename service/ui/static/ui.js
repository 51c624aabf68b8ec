// Small DOM helpers shared by the views: elements, messages, the file drop zone, downloads.

import { readFile } from "./data.js";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

let ids = 0;
export const uid = (stem) => `${stem}-${++ids}`;

// A labelled input: returns [wrapper, input].
export function field(label, attrs) {
  const id = uid("f");
  const input = h("input", { id, ...attrs });
  return [h("div", { class: "field" }, h("label", { for: id }, label), input), input];
}

export function select(label, options, value) {
  const id = uid("s");
  const node = h("select", { id }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return [h("div", { class: "field" }, h("label", { for: id }, label), node), node];
}

export const ui = {
  // The service's {"error"} text as it came, with its status; or a problem the page found itself.
  error(e) {
    const status = e && e.status ? h("strong", {}, `${e.status} `) : e && e.status === 0 ? h("strong", {}, "offline ") : null;
    return h("p", { class: "error", role: "alert" }, status, e && e.message ? e.message : String(e));
  },
  note: (text) => h("p", { class: "note" }, text),
};

// A message area: show(node) replaces what it holds.
export function messages() {
  const node = h("div", { class: "messages" });
  return { node, show: (...items) => node.replaceChildren(...items.filter((i) => i)), clear: () => node.replaceChildren() };
}

// A drop zone around a file input (which keeps keyboard and screen-reader use): calls onData(parsed).
export function dropZone(text, onData, onError) {
  const id = uid("file");
  const input = h("input", { id, type: "file", accept: ".csv,.npy,.txt,text/csv", class: "file" });
  const zone = h("div", { class: "drop" }, h("label", { for: id }, text), input, h("p", { class: "hint" }, "CSV (header row optional) or .npy; drop it here or pick it."));
  const take = async (file) => {
    if (!file) return;
    try {
      onData(await readFile(file));
    } catch (e) {
      onError(e);
    }
  };
  input.addEventListener("change", () => take(input.files[0]));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });
  return zone;
}

export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function table(head, rows, caption) {
  return h(
    "div",
    { class: "scroll" },
    h("table", {}, caption ? h("caption", {}, caption) : null, h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))),
  );
}

export function featureNames(model) {
  return model.feature_names || Array.from({ length: model.n_features }, (_, i) => `x${i}`);
}

// Views that need a capability say so instead of failing.
export function needs(model, capability) {
  if (!model) return ui.note("No model is ready: see the Models view.");
  if (!model.capabilities.includes(capability)) {
    return ui.note(`${model.name} is a ${model.kind}, which supports ${model.capabilities.join(", ")}; not ${capability}. Pick another model above.`);
  }
  return null;
}
