// Defect Studio front end, part 2: Jobs, Review and Results pages (helpers from app.js).
"use strict";

// ---------------------------------------------------------------- Jobs
const JOB_TEMPLATES = {
  synth: "source:\n  path: '@sample'        # a dataset in the project, or the bundled sample\n  split: train\n  real_defects: true\ngenerators:\n  - {name: pitting, weight: 2}\n  - {name: scratch, weight: 1}\nn: 6\nseed: 0\nformats: [mvtec]\n",
  cli: "command: detect fit      # detect fit | detect eval | detect predict (the CLI itself runs)\nargs:\n  data: '@sample'\n  out: models/exdd.pt\n  model: exdd\n  image_size: '128'\n",
  synth3d: "input: part:flange        # part:NAME, part:all, or a cloud/mesh file in the project\ninstructions:\n  version: 1\n  defects:\n    - {type: dent, location: top}\n    - {type: scratch, location: side}\nn: 4\nseed: 0\nn_points: 20000\n",
};
$("#job-kind").onchange = async () => {
  const kind = $("#job-kind").value; $("#job-yaml").value = JOB_TEMPLATES[kind]; $("#job-help").textContent = "";
  $("#job-out").disabled = kind === "cli";
  if (kind === "cli") {
    const r = await api("/api/jobs/commands");
    $("#job-help").innerHTML = Object.entries(r.commands).map(([c, ps]) => `<b>${c}</b>: ` +
      ps.map(p => `${p.name}${p.required ? "*" : ""}${p.flag ? " (flag)" : ""}`).join(", ")).join("<br>");
  }
};
$("#job-yaml").value = JOB_TEMPLATES.synth;
let jobTimer = null;
async function refreshJobs() {
  const r = await api("/api/jobs"); const tb = $("#jobs-table tbody"); tb.innerHTML = "";
  for (const j of r.jobs) {
    const tr = document.createElement("tr"); tr.dataset.id = j.id; tr.dataset.status = j.status;
    const pct = j.total ? `<progress max="${j.total}" value="${j.done}"></progress> ${j.done}/${j.total}` : "";
    const what = j.kind === "cli" ? (j.config.command || "cli") : j.kind;
    tr.innerHTML = `<td><a href="#" class="job-show">${j.id}</a> · <a href="/api/jobs/${j.id}/config.yaml" title="download the YAML config">yaml</a></td><td>${what}</td><td>${j.out}</td><td>${pct}</td>` +
                   `<td class="job-status">${j.status}<div class="help">${[j.status === "running" ? j.stage : "", j.message].filter(Boolean).join(" · ")}</div></td><td></td>`;
    tr.querySelector(".job-show").onclick = async e => { e.preventDefault();
      const r = await fetch(`/api/jobs/${j.id}/config.yaml?download=0`); $("#job-config").textContent = await r.text();
      $("#job-config").dataset.id = j.id; $("#job-config").hidden = false; };
    const act = tr.lastChild;
    const btn = (label, path) => { const b = document.createElement("button"); b.textContent = label;
      b.onclick = async () => { try { await api(`/api/jobs/${j.id}/${path}`, {}); refreshJobs(); } catch (e) { status(e.message, true); } }; act.append(b); };
    if (j.status === "running" || j.status === "queued") btn("Cancel", "cancel");
    else if (j.status !== "done") btn("Resume", "resume");
    tb.append(tr);
  }
  const busy = r.jobs.some(j => j.status === "running" || j.status === "queued");
  clearTimeout(jobTimer); if (busy) jobTimer = setTimeout(() => refreshJobs().catch(() => {}), 700);
}
$("#job-submit").onclick = async () => {
  $("#job-error").textContent = "";
  try { await api("/api/jobs", { kind: $("#job-kind").value, yaml_text: $("#job-yaml").value, out: $("#job-out").value,
                                 workers: Number($("#job-workers").value) });
        status("job queued"); refreshJobs();
  } catch (e) { $("#job-error").textContent = e.message; status(e.message, true); }
};
document.querySelector('#tabs button[data-page="jobs"]').addEventListener("click", () => refreshJobs().catch(e => status(e.message, true)));

// ---------------------------------------------------------------- Review
const rv = { items: [], cur: 0, scores: {} };
async function rvOpen() {
  try {
    const r = await api("/api/review?" + q({ set: $("#rv-set").value }));
    rv.items = r.items; rv.cur = 0; rvRender();
    status(`${r.items.length} samples in ${r.set}`);
  } catch (e) { status(e.message, true); }
}
function rvCounts() {
  const c = { accepted: 0, rejected: 0, undecided: 0 }; rv.items.forEach(it => c[it.decision]++);
  $("#rv-summary").innerHTML = Object.entries(c).map(([k, v]) => `<span>${k}: ${v}</span>`).join("");
}
function rvRender() {
  const set = $("#rv-set").value, real = $("#rv-real").value, grid = $("#rv-grid"); grid.innerHTML = ""; rvCounts();
  rv.items.forEach((it, k) => {
    const d = document.createElement("div"); d.className = `rv-item ${it.decision}` + (k === rv.cur ? " current" : "");
    d.dataset.index = it.index; d.dataset.decision = it.decision;
    const sc = rv.scores[it.index];
    d.innerHTML = `<img title="synthetic (label outlined)" src="/api/review/crop?${q({ set, index: it.index })}">` +
      `<img title="real defect, same zoom" src="/api/review/real?${q({ real, label: it.label, k })}">` +
      `<div><b>#${it.index} ${it.label}</b> · ${it.generator} · ${it.decision}<br>fill ${it.qc.fill} · leak ${it.qc.leak} · contrast ${it.qc.contrast}` +
      (sc ? `<br>realism ${sc.realism_distance} · fidelity ${sc.fidelity} · diversity ${sc.diversity}` : "") + "</div>";
    d.onclick = () => { rv.cur = k; rvMark(); };
    grid.append(d);
  });
}
function rvMark() { document.querySelectorAll(".rv-item").forEach((el, k) => el.classList.toggle("current", k === rv.cur)); }
async function rvDecide(decision) {
  const it = rv.items[rv.cur]; if (!it) return;
  try {
    const r = await api("/api/review/decide", { set: $("#rv-set").value, index: it.index, decision });
    it.decision = decision; const el = document.querySelectorAll(".rv-item")[rv.cur];
    el.className = `rv-item ${decision} current`; el.dataset.decision = decision;
    el.querySelector("div").innerHTML = el.querySelector("div").innerHTML.replace(/(accepted|rejected|undecided)/, decision);
    rvCounts(); status(`#${it.index} ${decision}; ${r.kept} samples kept in the manifest`);
    if (rv.cur < rv.items.length - 1) { rv.cur++; rvMark(); }
  } catch (e) { status(e.message, true); }
}
document.addEventListener("keydown", e => {
  if (!$("#page-review").classList.contains("active") || /INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) return;
  if (e.key === "ArrowRight") { rv.cur = Math.min(rv.cur + 1, rv.items.length - 1); rvMark(); }
  else if (e.key === "ArrowLeft") { rv.cur = Math.max(rv.cur - 1, 0); rvMark(); }
  else if (e.key === "a") rvDecide("accepted");
  else if (e.key === "r") rvDecide("rejected");
  else if (e.key === "u") rvDecide("undecided");
});
$("#rv-open").onclick = rvOpen;
$("#rv-scores").onclick = async () => {
  status("computing filter scores (embeds every crop; may take a while)…");
  try { const r = await api("/api/review/scores", { set: $("#rv-set").value, real: $("#rv-real").value });
        rv.scores = r.scores; rvRender(); status("filter scores ready");
  } catch (e) { status(e.message, true); }
};

// ---------------------------------------------------------------- Results
// An eval JSON: raw maps come from /api/results/map, the predicted mask is redrawn here from the
// map whenever a threshold moves (pixel >= pixel threshold, in an image whose score >= image threshold).
const rs = { items: [], sort: "score", desc: true, kind: null, k: null, map: null };
async function rsOpen() {
  try {
    const r = await api("/api/results?" + q({ path: $("#rs-path").value, dataset: $("#rs-ds").value }));
    rs.items = r.items; rs.kind = r.kind; rs.k = null; rs.map = null; rs.maps = r.maps; rs.heatmaps = r.heatmaps !== false;
    $("#rs-view").innerHTML = "";
    const sc = r.items.map(i => i.score), lo = Math.min(...sc), hi = Math.max(...sc), sl = $("#rs-thr");
    const pad = (hi - lo) / 100 || 0.01;
    sl.min = lo - pad; sl.max = hi + pad; sl.step = (hi - lo) / 500 || 0.001; sl.value = r.threshold ?? (lo + hi) / 2;
    $("#rs-pthr-box").hidden = r.kind !== "eval" || !r.maps; rs.pthr0 = r.pixel_threshold;
    rsRender();
    const m = r.metrics ? " · " + Object.entries(r.metrics).filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(4) : v}`).join(" · ") : "";
    status(`${r.kind}: ${r.items.length} scored images, ${r.matched} with ground truth${m}`);
  } catch (e) { status(e.message, true); }
}
function rsRender() {
  const thr = Number($("#rs-thr").value); $("#rs-thr-value").textContent = thr.toFixed(4);
  const items = rs.items.slice().sort((a, b) => (a[rs.sort] > b[rs.sort] ? 1 : a[rs.sort] < b[rs.sort] ? -1 : 0) * (rs.desc ? -1 : 1));
  let tp = 0, fp = 0, fn = 0, tn = 0;
  const tb = $("#rs-table tbody"); tb.innerHTML = "";
  for (const it of items) {
    const pred = it.score >= thr;
    if (it.defect !== null) { if (pred && it.defect) tp++; else if (pred) fp++; else if (it.defect) fn++; else tn++; }
    const tr = document.createElement("tr"); tr.className = (it.defect !== null && pred !== it.defect ? "wrong" : "") + (it.k === rs.k ? " current" : "");
    tr.dataset.k = it.k; tr.dataset.defect = it.defect;
    tr.innerHTML = `<td>${it.name}</td><td>${it.label ?? "?"}</td><td>${it.score.toFixed(4)}</td><td>${pred ? "defect" : "good"}</td>`;
    tr.onclick = () => rsShow(it.k); tb.append(tr);
  }
  const prec = tp + fp ? tp / (tp + fp) : 0, rec = tp + fn ? tp / (tp + fn) : 0;
  $("#rs-metrics").innerHTML = `<table class="confusion"><tr><th></th><th>predicted defect</th><th>predicted good</th></tr>` +
    `<tr><th>defect</th><td>TP ${tp}</td><td>FN ${fn}</td></tr><tr><th>good</th><td>FP ${fp}</td><td>TN ${tn}</td></tr></table>` +
    `<span>precision ${prec.toFixed(3)}</span><span>recall ${rec.toFixed(3)}</span>`;
  Object.assign($("#rs-metrics").dataset, { tp, fp, fn, tn, precision: prec.toFixed(4), recall: rec.toFixed(4) });
  rsDrawMask();
}
function rsDrawMask() {
  const cv = $("#rs-mask"); if (!cv || !rs.map) return;
  const it = rs.items.find(x => x.k === rs.k), thr = Number($("#rs-thr").value), pthr = Number($("#rs-pthr").value);
  $("#rs-pthr-value").textContent = pthr.toPrecision(4);
  const on = it.score >= thr, ctx = cv.getContext("2d"), img = ctx.createImageData(rs.map.w, rs.map.h);
  let n = 0;
  for (let i = 0; i < rs.map.data.length; i++) {
    const v = on && rs.map.data[i] >= pthr ? 255 : 0; n += v > 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0); cv.dataset.pixels = n;
  $("#rs-caption").textContent = `${it.name}: score ${it.score.toFixed(4)} → ${on ? "defect" : "good"} at the image threshold; ` +
    `${n} predicted pixels at the pixel threshold ${pthr.toPrecision(4)}` + (on ? "" : " (none: the image is predicted good)");
}
async function rsShow(k) {
  rs.k = k; document.querySelectorAll("#rs-table tbody tr").forEach(tr => tr.classList.toggle("current", Number(tr.dataset.k) === k));
  const base = { path: $("#rs-path").value, k, dataset: $("#rs-ds").value };
  if (rs.kind !== "eval") {
    // a 'detect predict --heatmaps none' run has no panels
    $("#rs-view").innerHTML = ["image", "gt", ...(rs.heatmaps ? ["heatmap"] : []), "mask"].map(kind =>
      `<img title="${kind}" alt="${kind}" src="/api/results/image?${q({ ...base, kind })}">`).join("");
    return;
  }
  if (!rs.maps) { $("#rs-view").textContent = "the model or dataset of this eval is not in the project: scores only"; return; }
  status("computing the map…");
  try {
    const m = await api("/api/results/map?" + q({ path: base.path, k }));
    rs.map = { w: m.w, h: m.h, data: new Float32Array(Uint8Array.from(atob(m.map), c => c.charCodeAt(0)).buffer) };
    const sl = $("#rs-pthr"); sl.min = m.scale.lo; sl.max = m.scale.hi; sl.step = (m.scale.hi - m.scale.lo) / 500 || 0.001;
    if (!rs.pthrSet) { sl.value = m.scale.threshold ?? rs.pthr0 ?? (m.scale.lo + m.scale.hi) / 2; rs.pthrSet = true; }
    const im = kind => `<figure><img alt="${kind}" src="/api/results/image?${q({ path: base.path, k, kind })}"><figcaption>${kind}</figcaption></figure>`;
    $("#rs-view").innerHTML = im("image") + im("gt") + im("heatmap") +
      `<figure><canvas id="rs-mask" width="${m.w}" height="${m.h}"></canvas><figcaption>predicted mask</figcaption></figure>` +
      `<figure class="bar"><img alt="colour bar" src="/api/results/image?${q({ path: base.path, k, kind: "colorbar" })}"><figcaption>one scale</figcaption></figure>`;
    rsDrawMask(); status("map ready");
  } catch (e) { status(e.message, true); }
}
$("#rs-open").onclick = rsOpen;
$("#rs-thr").addEventListener("input", rsRender);
$("#rs-pthr").addEventListener("input", rsDrawMask);
document.querySelectorAll("#rs-table th[data-key]").forEach(th => th.onclick = () => {
  rs.desc = rs.sort === th.dataset.key ? !rs.desc : true; rs.sort = th.dataset.key; rsRender(); });
