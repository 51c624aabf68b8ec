// Reading a user's file in the page: CSV (header row optional) or .npy, into rows of numbers.
// Each problem is reported as a DataError naming the row, column or limit, before anything is sent.

export class DataError extends Error {}

const FLOAT32_MAX = 3.4028234663852886e38;
const MAX_FILE_BYTES = 512 * 1024 * 1024; // what a browser tab can parse without trouble

export async function readFile(file) {
  if (file.size === 0) throw new DataError(`${file.name} is empty`);
  if (file.size > MAX_FILE_BYTES) {
    throw new DataError(`${file.name} is ${mib(file.size)}; the page reads files up to ${mib(MAX_FILE_BYTES)}`);
  }
  if (file.name.toLowerCase().endsWith(".npy")) return parseNpy(await file.arrayBuffer(), file.name);
  return parseCsv(await file.text(), file.name);
}

const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

function number(cell) {
  const s = cell.trim().replace(/^"(.*)"$/, "$1").trim();
  if (s === "") return { ok: false, why: "is empty" };
  const v = Number(s);
  if (Number.isNaN(v) && !/^[+-]?nan$/i.test(s)) return { ok: false, why: `is ${JSON.stringify(s)}, not a number` };
  if (!Number.isFinite(v)) return { ok: false, why: `is ${JSON.stringify(s)}, not a finite number` };
  if (Math.abs(v) > FLOAT32_MAX) return { ok: false, why: `is ${s}, beyond float32's range (±3.4e38) that the models compute in` };
  return { ok: true, v };
}

function delimiter(line) {
  for (const d of [",", ";", "\t"]) if (line.includes(d)) return d;
  return /\s/.test(line.trim()) ? /\s+/ : ",";
}

export function parseCsv(text, name = "the text") {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  if (lines.length === 0) throw new DataError(`${name} is empty`);
  const d = delimiter(lines[0]);
  const split = (l) => (d instanceof RegExp ? l.trim().split(d) : l.split(d));
  let header = null;
  let start = 0;
  const first = split(lines[0]);
  if (first.every((c) => !number(c).ok && c.trim() !== "")) {
    header = first.map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
    start = 1;
  }
  const width = header ? header.length : first.length;
  const rows = [];
  for (let i = start; i < lines.length; i++) {
    const cells = split(lines[i]);
    if (cells.length !== width) {
      throw new DataError(`line ${i + 1} of ${name} has ${cells.length} columns, the ${header ? "header" : "first line"} has ${width}`);
    }
    const row = new Array(width);
    for (let j = 0; j < width; j++) {
      const r = number(cells[j]);
      if (!r.ok) throw new DataError(`line ${i + 1}, column ${j + 1} of ${name} ${r.why}`);
      row[j] = r.v;
    }
    rows.push(row);
  }
  if (rows.length === 0) throw new DataError(`${name} has a header but no rows`);
  return { name, rows, width, header };
}

const DTYPES = { f: { 4: "Float32", 8: "Float64" }, i: { 1: "Int8", 2: "Int16", 4: "Int32", 8: "BigInt64" }, u: { 1: "Uint8", 2: "Uint16", 4: "Uint32", 8: "BigUint64" } };

export function parseNpy(buffer, name = "the file") {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || !magic.every((b, i) => bytes[i] === b)) throw new DataError(`${name} is not an .npy file (no \\x93NUMPY magic)`);
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const offset = major === 1 ? 10 : 12;
  const header = new TextDecoder("latin1").decode(bytes.subarray(offset, offset + headerLength));
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeMatch = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeMatch) throw new DataError(`${name} has an .npy header the page cannot read`);
  const shape = shapeMatch[1].split(",").map((s) => s.trim()).filter((s) => s).map(Number);
  const m = /^([<>|=])([fiub])(\d+)$/.exec(descr[1]);
  const type = m && (m[2] === "b" ? (m[3] === "1" ? "Uint8" : null) : DTYPES[m[2]][m[3]]);
  if (!type) throw new DataError(`${name} holds ${descr[1]} values; numeric dtypes only (float, int, uint, bool)`);
  if (shape.length === 0 || shape.length > 2) throw new DataError(`${name} has shape (${shape.join(", ")}); a table of rows, (rows, features), is expected`);
  const [n, width] = shape.length === 1 ? [1, shape[0]] : shape;
  if (n === 0 || width === 0) throw new DataError(`${name} is empty (shape ${shape.join(" x ")})`);
  const size = Number(m[3]);
  const little = m[1] !== ">";
  const start = offset + headerLength;
  if (buffer.byteLength < start + n * width * size) throw new DataError(`${name} is truncated: shape (${shape.join(", ")}) needs ${n * width * size} bytes of data`);
  const read = (k) => Number(view[`get${type}`](start + k * size, little));
  const rows = [];
  for (let i = 0; i < n; i++) {
    const row = new Array(width);
    for (let j = 0; j < width; j++) {
      const v = read(fortran[1] === "True" ? j * n + i : i * width + j);
      if (!Number.isFinite(v) || Math.abs(v) > FLOAT32_MAX) throw new DataError(`row ${i}, column ${j} of ${name} is ${v}, not a finite float32 number`);
      row[j] = v;
    }
    rows.push(row);
  }
  return { name, rows, width, header: null };
}

// The rows fit the model: same width, and the page tells which model wants how many features.
export function checkWidth(data, model) {
  if (data.width !== model.n_features) {
    throw new DataError(`${data.name} has ${data.width} columns; ${model.name} version ${model.version} expects ${model.n_features} features`);
  }
}

// Row indices like "0-7, 12": every index checked against the table's length.
export function parseIndices(text, n, limit) {
  const out = [];
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s)) {
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
    if (!m) throw new DataError(`${JSON.stringify(part)} is not a row number or a range like 0-7`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new DataError(`range ${part} runs backwards`);
    if (b >= n) throw new DataError(`row ${b} does not exist: the data has rows 0 to ${n - 1}`);
    for (let i = a; i <= b; i++) out.push(i);
    if (out.length > limit) throw new DataError(`more than ${limit} rows picked; pick at most ${limit}`);
  }
  if (out.length === 0) throw new DataError("no rows picked: give row numbers such as 0-7");
  return out;
}
