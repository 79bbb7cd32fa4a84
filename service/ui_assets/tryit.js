// "Try it": POST /sample and draw each returned point as one SVG element (a circle for 2-D
// models, an 8x8 image for 64-D ones). Runs in the page; talks to this server only.
(function () {
  const form = document.getElementById("tryit"), svg = document.getElementById("plot");
  const out = document.getElementById("timing"), NS = "http://www.w3.org/2000/svg";
  const model = form.dataset.model, dim = Number(form.dataset.dim), chipS = Number(form.dataset.chipS);
  for (const el of document.querySelectorAll(".origin")) el.textContent = location.origin;
  const fmt = (s) => (s >= 1e-3 ? (s * 1e3).toFixed(1) + " ms" : s >= 1e-6 ? (s * 1e6).toFixed(1) + " µs" : (s * 1e9).toFixed(1) + " ns");
  function el(name, attrs) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function scatter(pts) {
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) for (const v of p.slice(0, 2)) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const pad = 0.05 * (hi - lo || 1), a = lo - pad, w = hi - lo + 2 * pad;
    svg.setAttribute("viewBox", `${a} ${a} ${w} ${w}`);
    const r = w / 180;
    for (const p of pts) svg.appendChild(el("circle", {class: "pt", cx: p[0], cy: -(p[1] ?? 0) + 2 * a + w, r: r, fill: "#b4451f", "fill-opacity": 0.6}));
  }
  function images(pts) {  // model-space pixel values, about -2 (light) .. 2 (dark)
    const cols = Math.ceil(Math.sqrt(pts.length)), side = cols * 9 - 1;
    svg.setAttribute("viewBox", `0 0 ${side} ${side}`);
    pts.forEach((p, k) => {
      const g = el("g", {class: "pt", transform: `translate(${(k % cols) * 9} ${Math.floor(k / cols) * 9})`});
      p.forEach((v, i) => {
        const t = Math.min(1, Math.max(0, ((v ?? 0) + 2) / 4)), c = Math.round(255 * (1 - t));
        g.appendChild(el("rect", {x: i % 8, y: Math.floor(i / 8), width: 1, height: 1, fill: `rgb(${c},${c},${c})`}));
      });
      svg.appendChild(g);
    });
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const n = Number(form.n.value), seed = form.seed.value === "" ? null : Number(form.seed.value);
    for (const e of document.querySelectorAll(".n-val")) e.textContent = n;
    for (const e of document.querySelectorAll(".seed-val")) e.textContent = seed === null ? "null" : seed;
    out.textContent = "sampling…"; out.className = "";
    const t0 = performance.now();
    try {
      const r = await fetch("/sample", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify({model: model, n: n, seed: seed, with_logprob: false})});
      const body = await r.json(), roundtrip = (performance.now() - t0) / 1e3;
      if (!r.ok) throw new Error(`${r.status}: ${body.error || JSON.stringify(body)}`);
      svg.replaceChildren();
      (dim === 64 ? images : scatter)(body.samples);
      out.textContent = `${body.samples.length} samples (seed ${body.seed}): answered in ${fmt(roundtrip)} ` +
        `(solve ${fmt(body.solve_s)}, ${body.nfe} evaluations) · projected chip latency ${fmt(chipS)} per ` +
        `forward pass (this answer took ${(roundtrip / chipS).toExponential(1)} times as long)`;
      svg.dataset.count = body.samples.length;
    } catch (err) {
      out.textContent = "error " + err.message; out.className = "error";
    }
  });
})();
