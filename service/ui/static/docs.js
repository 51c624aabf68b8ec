// /docs and /redoc: fetch the OpenAPI document with the tab's API key (asking for it on a 401),
// then hand it to the bundled Swagger UI or ReDoc. Swagger UI's calls carry the key too.

const KEY = "latentserve.apiKey"; // the same entry as the /ui page's (api.js)
const $ = (id) => document.getElementById(id);

async function schema() {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(new URL("../openapi.json", import.meta.url), { headers: key ? { "X-API-Key": key } : {} });
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    $("docs-key").hidden = false;
    $("docs-key-message").textContent = key ? `The key was refused: ${body.error || ""}` : body.error || "";
    $("docs-key-input").focus();
    return null;
  }
  if (!response.ok) throw new Error(`/openapi.json answered ${response.status}`);
  $("docs-key").hidden = !key; // with a key set, keep the box to change it
  return response.json();
}

function show(spec) {
  const key = sessionStorage.getItem(KEY);
  if (document.body.dataset.docs === "redoc") {
    window.Redoc.init(spec, { hideDownloadButton: false }, $("docs"));
    return;
  }
  window.SwaggerUIBundle({
    spec,
    domNode: $("docs"),
    validatorUrl: null, // the default would call validator.swagger.io
    deepLinking: true,
    tryItOutEnabled: true,
    persistAuthorization: false,
    requestInterceptor: (request) => {
      if (key && !request.headers["Authorization"]) request.headers["X-API-Key"] = key;
      return request;
    },
  });
}

async function start() {
  const spec = await schema();
  if (spec) show(spec);
}

$("docs-key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("docs-key-input").value.trim());
  $("docs-key-input").value = "";
  $("docs").replaceChildren();
  start();
});
start();
