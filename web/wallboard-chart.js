// The interval chart: offered volume as bars, service level % as a line (plain SVG).

const SVG = "http://www.w3.org/2000/svg";
const W = 800;
const H = 320;
const PAD = { left: 44, right: 48, top: 16, bottom: 34 };

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function hhmm(iso) {
  return typeof iso === "string" && iso.length >= 16 ? iso.slice(11, 16) : "";
}

/** Draw `series` ([{start, offered, service_level}]) into `svg`; `target` is a fraction or null. */
export function drawChart(svg, series, target) {
  svg.replaceChildren();
  const points = Array.isArray(series) ? series : [];
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const bottom = PAD.top + plotH;
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: bottom, x2: W - PAD.right, y2: bottom }));
  if (points.length === 0) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "今天还没有来电 · no calls yet today"));
    return;
  }
  const maxOffered = Math.max(1, ...points.map((p) => p.offered || 0));
  const slot = plotW / Math.max(points.length, 8);
  const barW = Math.max(2, slot * 0.7);
  const y = (fraction) => bottom - fraction * plotH;
  // Right axis: SL 0..100 %; left axis: calls.
  for (const pct of [0, 50, 100]) {
    svg.append(el("text", { x: W - PAD.right + 6, y: y(pct / 100) + 5 }, `${pct}%`));
  }
  svg.append(el("text", { x: 4, y: PAD.top + 12 }, String(maxOffered)));
  svg.append(el("text", { x: 4, y: bottom }, "0"));
  if (typeof target === "number") {
    svg.append(el("line", { class: "target", x1: PAD.left, x2: W - PAD.right, y1: y(target), y2: y(target) }));
  }
  const line = [];
  const every = Math.ceil(points.length / 8);
  points.forEach((p, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    const h = ((p.offered || 0) / maxOffered) * plotH;
    const bar = el("rect", { class: "bar", x, y: bottom - h, width: barW, height: h, "data-offered": p.offered || 0 });
    bar.append(el("title", {}, `${hhmm(p.start)}  ${p.offered || 0} calls`));
    svg.append(bar);
    if (typeof p.service_level === "number") {
      const cx = PAD.left + i * slot + slot / 2;
      line.push(`${cx},${y(p.service_level)}`);
      svg.append(el("circle", { class: "sl-dot", cx, cy: y(p.service_level), r: 4 }));
    }
    if (i % every === 0) {
      svg.append(el("text", { x: PAD.left + i * slot, y: H - 10 }, hhmm(p.start)));
    }
  });
  if (line.length > 1) svg.append(el("polyline", { class: "sl", points: line.join(" ") }));
}
