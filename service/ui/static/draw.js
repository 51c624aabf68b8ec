// Canvas drawing for the views: images, the score histogram, per-feature bars, the PCA scatter.
// No library: a few dozen lines each, and every canvas has a text alternative in the page.

export const INK = "#1f2933";
export const ACCENT = "#1358c4"; // 7:1 on white
export const FLAG = "#b3261e";
export const MUTED = "#c9ced6";

// An image model's (height, width): image_shape [H, W], [1, H, W] or [H, W, 1].
export function imageSize(model) {
  const s = (model.image_shape || []).filter((d) => d !== 1);
  if (s.length !== 2 || s[0] * s[1] !== model.n_features) return null;
  return s;
}

// One row as a grey image, dark ink on white, scaled into [lo, hi] (fixed per grid, so grids compare).
export function image(values, [h, w], [lo, hi], label) {
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.className = "pixels";
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const span = hi - lo || 1;
  for (let k = 0; k < h * w; k++) {
    const t = Math.min(1, Math.max(0, (values[k] - lo) / span));
    const g = Math.round(255 * (1 - t));
    img.data.set([g, g, g, 255], 4 * k);
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

export function range(rows) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of rows) for (const v of r) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  return [Math.min(lo, 0), hi];
}

// Share of calibration rows between a and b, from the 101 percentile scores (linear between them).
export function cdf(quantiles, x) {
  const q = quantiles;
  if (x <= q[0]) return 0;
  if (x >= q[q.length - 1]) return 1;
  let i = 1;
  while (q[i] < x) i++;
  const f = q[i] === q[i - 1] ? 1 : (x - q[i - 1]) / (q[i] - q[i - 1]);
  return (i - 1 + f) / (q.length - 1);
}

export function histogramRange(scores, quantiles) {
  const sorted = Float64Array.from(scores).sort();
  const p99 = sorted[Math.floor(0.99 * (sorted.length - 1))];
  const lo = Math.min(sorted[0], quantiles[0]);
  let hi = Math.max(quantiles[quantiles.length - 1], p99);
  if (hi <= lo) hi = lo + 1;
  return [lo, hi];
}

// The file's scores (bars) over the calibration distribution (grey), both as shares of their rows.
export function histogram(canvas, { scores, quantiles, lo, hi, threshold, bins = 40 }) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  const pad = { l: 44, r: 12, t: 12, b: 30 };
  const w = (W - pad.l - pad.r) / bins;
  const counts = new Array(bins).fill(0);
  for (const s of scores) counts[Math.max(0, Math.min(bins - 1, Math.floor(((s - lo) / (hi - lo)) * bins)))]++;
  const file = counts.map((c) => c / scores.length);
  const calib = counts.map((_, i) => {
    const a = lo + ((hi - lo) * i) / bins;
    const b = lo + ((hi - lo) * (i + 1)) / bins;
    return (i === bins - 1 ? 1 : cdf(quantiles, b)) - (i === 0 ? 0 : cdf(quantiles, a));
  });
  const top = Math.max(...file, ...calib, 1e-9);
  const y = (v) => H - pad.b - (v / top) * (H - pad.t - pad.b);
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  ctx.fillStyle = MUTED;
  calib.forEach((v, i) => ctx.fillRect(pad.l + i * w, y(v), w - 1, H - pad.b - y(v)));
  counts.forEach((_, i) => {
    const x0 = lo + ((hi - lo) * i) / bins;
    ctx.fillStyle = x0 + (hi - lo) / bins > threshold ? FLAG : ACCENT;
    ctx.globalAlpha = 0.75;
    ctx.fillRect(pad.l + i * w + 2, y(file[i]), w - 5, H - pad.b - y(file[i]));
    ctx.globalAlpha = 1;
  });
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.font = "12px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad.l, pad.t);
  ctx.lineTo(pad.l, H - pad.b);
  ctx.lineTo(W - pad.r, H - pad.b);
  ctx.stroke();
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    ctx.textAlign = k === 0 ? "left" : k === 4 ? "right" : "center";
    ctx.fillText(fmt(v), pad.l + ((W - pad.l - pad.r) * k) / 4, H - 10);
  }
  ctx.textAlign = "right";
  ctx.fillText(`${(top * 100).toFixed(0)}%`, pad.l - 4, pad.t + 10);
  const tx = xOf(canvas, lo, hi, threshold);
  ctx.strokeStyle = FLAG;
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.moveTo(tx, pad.t - 4);
  ctx.lineTo(tx, H - pad.b);
  ctx.stroke();
  ctx.lineWidth = 1;
}

export function xOf(canvas, lo, hi, v) {
  const t = Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
  return 44 + t * (canvas.width - 44 - 12);
}

export function valueAt(canvas, lo, hi, clientX) {
  const box = canvas.getBoundingClientRect();
  const x = ((clientX - box.left) / box.width) * canvas.width;
  const t = Math.min(1, Math.max(0, (x - 44) / (canvas.width - 44 - 12)));
  return lo + t * (hi - lo);
}

// Per-feature bars: the original (outline) beside its reconstruction (filled).
export function bars(canvas, original, reconstruction, names) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  const n = original.length;
  const all = [...original, ...reconstruction];
  const lo = Math.min(0, ...all);
  const hi = Math.max(0, ...all) || 1;
  const pad = { l: 44, r: 8, t: 8, b: 22 };
  const w = (W - pad.l - pad.r) / n;
  const y = (v) => pad.t + ((hi - v) / (hi - lo)) * (H - pad.t - pad.b);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = MUTED;
    ctx.fillRect(pad.l + i * w, Math.min(y(0), y(original[i])), Math.max(1, w * 0.45), Math.abs(y(original[i]) - y(0)));
    ctx.fillStyle = ACCENT;
    ctx.fillRect(pad.l + i * w + w * 0.45, Math.min(y(0), y(reconstruction[i])), Math.max(1, w * 0.45), Math.abs(y(reconstruction[i]) - y(0)));
  }
  ctx.fillStyle = INK;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(fmt(hi), pad.l - 4, pad.t + 9);
  ctx.fillText(fmt(lo), pad.l - 4, H - pad.b);
  ctx.textAlign = "left";
  const step = Math.ceil(n / 12);
  for (let i = 0; i < n; i += step) ctx.fillText(names[i], pad.l + i * w, H - 6);
}

// Viridis, five stops: readable on white and by most colour-blind readers.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
export function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = STOPS[i].map((a, k) => Math.round(a + f * (STOPS[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export function scatter(canvas, points, shades) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = 16;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  points.forEach((p, i) => {
    ctx.fillStyle = colour(shades[i]);
    const px = pad + ((p[0] - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
    const py = H - pad - ((p[1] - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
    ctx.beginPath();
    ctx.arc(px, py, 3, 0, 2 * Math.PI);
    ctx.fill();
  });
}

export function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}
