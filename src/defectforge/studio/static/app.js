// Defect Studio front end: plain JS over the JSON API (see defectforge/studio/*.py).
"use strict";
const $ = s => document.querySelector(s);
const state = { ds: null, a2: { fields: [], click: null, previewId: null, img: null, brush: null },
                a3: { cloud: null, fields: [], point: null } };

function status(msg, isError) {
  const el = $("#status"); el.textContent = msg || ""; el.className = isError ? "error" : "";
}
async function api(path, body) {
  const opt = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify(body) };
  const r = await fetch(path, opt);
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) { const e = new Error(data.error || `HTTP ${r.status}`); e.field = data.field; throw e; }
  return data;
}
function q(params) { return new URLSearchParams(params).toString(); }

// ---------------------------------------------------------------- tabs
document.querySelectorAll("#tabs button").forEach(b => b.addEventListener("click", () => {
  document.querySelectorAll("#tabs button").forEach(x => x.classList.toggle("active", x === b));
  document.querySelectorAll(".page").forEach(p => p.classList.toggle("active", p.id === "page-" + b.dataset.page));
}));

// ---------------------------------------------------------------- forms built from field lists
function buildForm(form, fields, choices) {
  form.innerHTML = "";
  const all = fields.slice();
  for (const [name, opts] of Object.entries(choices || {})) all.push({ name, kind: "choice", choices: ["", ...opts], default: "" });
  for (const f of all) {
    const row = document.createElement("div"); row.className = "field"; row.dataset.name = f.name;
    const lab = document.createElement("label"); lab.textContent = f.name; row.appendChild(lab);
    const box = document.createElement("div");
    const num = v => { const i = document.createElement("input"); i.type = "number"; i.step = "any";
                       if (v !== null && v !== undefined) i.value = v; return i; };
    if (f.kind === "range") {
      const d = f.default || ["", ""]; box.append(num(d[0]), " – ", num(d[1]));
    } else if (f.kind === "number" || f.kind === "integer") {
      const i = num(f.default); if (f.min !== null && f.min !== undefined) i.min = f.min;
      if (f.max !== null && f.max !== undefined) i.max = f.max; box.append(i);
    } else if (f.kind === "boolean") {
      const i = document.createElement("input"); i.type = "checkbox"; i.checked = !!f.default; box.append(i);
    } else if (f.kind === "choice") {
      const s = document.createElement("select");
      for (const c of f.choices) { const o = document.createElement("option"); o.value = JSON.stringify(c); o.textContent = String(c); s.append(o); }
      s.value = JSON.stringify(f.default); box.append(s);
    } else {
      const i = document.createElement("input"); i.value = f.kind === "json" ? JSON.stringify(f.default) : (f.default ?? ""); box.append(i);
    }
    row.appendChild(box);
    const help = document.createElement("div"); help.className = "help";
    help.textContent = [f.help, f.min !== undefined && f.min !== null ? `min ${f.min}` : "", f.max !== undefined && f.max !== null ? `max ${f.max}` : ""].filter(Boolean).join(" · ");
    row.appendChild(help);
    const err = document.createElement("div"); err.className = "field-error"; row.appendChild(err);
    row._field = f; form.appendChild(row);
  }
}
function formValues(form, onlyChanged) {
  const out = {};
  form.querySelectorAll(".field").forEach(row => {
    const f = row._field, ins = row.querySelectorAll("input, select");
    let v;
    if (f.kind === "range") { if (ins[0].value === "" || ins[1].value === "") return; v = [Number(ins[0].value), Number(ins[1].value)]; }
    else if (f.kind === "number" || f.kind === "integer") { if (ins[0].value === "") return; v = Number(ins[0].value); }
    else if (f.kind === "boolean") v = ins[0].checked;
    else if (f.kind === "choice") { v = JSON.parse(ins[0].value); if (v === "") return; }
    else if (f.kind === "json") { try { v = JSON.parse(ins[0].value); } catch { v = ins[0].value; } }
    else v = ins[0].value;
    if (onlyChanged && JSON.stringify(v) === JSON.stringify(f.default)) return;
    out[f.name] = v;
  });
  return out;
}
function fieldErrors(form, err) {
  form.querySelectorAll(".field-error").forEach(e => e.textContent = "");
  if (!err || !err.field) return false;
  const row = form.querySelector(`.field[data-name="${err.field}"]`);
  if (row) { row.querySelector(".field-error").textContent = err.message; return true; }
  return false;
}

// ---------------------------------------------------------------- Data page
const dataViewer = new CloudViewer($("#data-viewer"));
async function loadProject() {
  const p = await api("/api/project");
  $("#project").textContent = p.root;
  $("#ds-list").innerHTML = p.datasets.map(d => `<option value="${d.path}">${d.format}</option>`).join("");
  $("#cloud-files").innerHTML = p.clouds.map(c => `<option value="${c}">`).join("");
  $("#cloud-list").innerHTML = "";
  for (const c of p.clouds) {
    const li = document.createElement("li"); const a = document.createElement("a"); a.href = "#"; a.textContent = c;
    a.onclick = e => { e.preventDefault(); showCloud({ path: c }); }; li.append(a); $("#cloud-list").append(li);
  }
}
async function openDataset() {
  try {
    const path = $("#ds-path").value; const d = await api("/api/dataset?" + q({ path }));
    state.ds = d;
    const fill = (sel, vals) => { sel.innerHTML = '<option value="">all</option>' + vals.map(v => `<option>${v}</option>`).join(""); };
    fill($("#ds-split"), d.splits); fill($("#ds-label"), d.labels);
    status(`${path}: ${d.format} (${d.kind}), ${d.n} samples`);
    await refreshGrid();
  } catch (e) { status(e.message, true); }
}
async function refreshGrid() {
  const d = state.ds; if (!d) return;
  const params = { path: d.path, split: $("#ds-split").value, label: $("#ds-label").value, defect: $("#ds-defect").value, limit: 120 };
  const r = await api("/api/samples?" + q(params));
  $("#ds-counts").innerHTML = `<b>${r.total}</b> shown of ${d.n} · ` + Object.entries(r.counts).map(([k, v]) => `<span>${k}: ${v}</span>`).join("");
  const grid = $("#ds-grid"); grid.innerHTML = "";
  for (const it of r.items) {
    const t = document.createElement("div"); t.className = "tile" + (it.defect ? " defect" : ""); t.dataset.i = it.i;
    if (r.kind === "2d") {
      const img = document.createElement("img"); img.loading = "lazy";
      img.src = "/api/thumb?" + q({ path: d.path, i: it.i, size: 256, overlay: $("#ds-overlay").checked ? 1 : 0 });
      t.append(img);
      t.onclick = () => { $("#data-viewer").hidden = true;
        $("#ds-large").innerHTML = `<img src="/api/thumb?${q({ path: d.path, i: it.i, size: 0, overlay: $("#ds-overlay").checked ? 1 : 0 })}"><div>${it.name} · ${it.split}/${it.label}</div>`; };
    } else {
      t.onclick = () => showCloud({ path: d.path, i: it.i });
    }
    const cap = document.createElement("div"); cap.textContent = `${it.split}/${it.label} ${it.name}`; t.append(cap);
    grid.append(t);
  }
}
async function showCloud(params) {
  try {
    status("loading cloud…");
    const c = await api("/api/cloud?" + q(params));
    $("#data-viewer").hidden = false; $("#ds-large").innerHTML = `<div>${c.name}: ${c.n} points, ${c.n_defect} labelled defect</div>`;
    dataViewer.setCloud(c); status(`${c.name}: ${c.n} points (${c.shown} shown), ${c.n_defect} defect points`);
  } catch (e) { status(e.message, true); }
}
$("#ds-open").onclick = openDataset;
["#ds-split", "#ds-label", "#ds-defect", "#ds-overlay"].forEach(s => $(s).addEventListener("change", () => refreshGrid().catch(e => status(e.message, true))));

// ---------------------------------------------------------------- Author 2D
const a2canvas = $("#a2-canvas");
async function a2LoadImages() {
  const path = $("#a2-ds").value;
  try {
    // good images of the train split (sources never come from test unless a dataset has no train split)
    let r = await api("/api/samples?" + q({ path, label: "good", split: "train", limit: 500 }));
    if (!r.items.length) r = await api("/api/samples?" + q({ path, label: "good", limit: 500 }));
    $("#a2-image").innerHTML = r.items.map(it => `<option value="${it.i}">${it.split}/${it.name}</option>`).join("");
    await a2ShowImage();
  } catch (e) { status(e.message, true); }
}
async function a2ShowImage() {
  const path = $("#a2-ds").value, i = $("#a2-image").value; if (i === "") return;
  const img = new Image(); img.src = "/api/thumb?" + q({ path, i, size: 0, overlay: 0 });
  await img.decode();
  state.a2.img = img; state.a2.click = null; state.a2.previewId = null; $("#a2-accept").disabled = true;
  a2canvas.width = img.naturalWidth; a2canvas.height = img.naturalHeight;
  const b = document.createElement("canvas"); b.width = img.naturalWidth; b.height = img.naturalHeight; state.a2.brush = b;
  state.a2.painted = false; a2Draw();
}
function a2Draw() {
  const ctx = a2canvas.getContext("2d"), s = state.a2; if (!s.img) return;
  ctx.drawImage(s.img, 0, 0);
  if (s.painted) { ctx.globalAlpha = 0.45; ctx.drawImage(s.brush, 0, 0); ctx.globalAlpha = 1; }
  if (s.poly && s.poly.length) {
    ctx.strokeStyle = "#ff3030"; ctx.lineWidth = 2; ctx.beginPath(); ctx.moveTo(...s.poly[0]);
    s.poly.slice(1).forEach(p => ctx.lineTo(...p)); ctx.stroke();
  }
  if (s.click) {
    ctx.strokeStyle = "#f0b429"; ctx.lineWidth = 2; ctx.beginPath();
    ctx.arc(s.click[0], s.click[1], Number($("#a2-radius").value), 0, 2 * Math.PI); ctx.stroke();
  }
}
function a2Pos(e) { const r = a2canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * a2canvas.width / r.width, (e.clientY - r.top) * a2canvas.height / r.height]; }
const a2Mode = () => document.querySelector('input[name="a2-mode"]:checked').value;
let painting = false;
a2canvas.addEventListener("mousedown", e => { if (a2Mode() === "brush") { painting = true; a2Paint(e); } });
a2canvas.addEventListener("mousemove", e => { if (painting) a2Paint(e); });
window.addEventListener("mouseup", () => { painting = false; });
function a2Paint(e) {
  const [x, y] = a2Pos(e), c = state.a2.brush.getContext("2d");
  c.fillStyle = "#ff3030"; c.beginPath(); c.arc(x, y, Number($("#a2-brush").value) / 2, 0, 2 * Math.PI); c.fill();
  state.a2.painted = true; state.a2.click = null; a2Draw();
}
a2canvas.addEventListener("click", e => {
  if (a2Mode() === "polygon") { (state.a2.poly = state.a2.poly || []).push(a2Pos(e)); a2Draw(); return; }
  if (a2Mode() !== "click") return;
  state.a2.click = a2Pos(e); a2Draw(); a2Preview();
});
a2canvas.addEventListener("dblclick", () => {  // close the polygon into the mask
  const s = state.a2; if (a2Mode() !== "polygon" || !s.poly || s.poly.length < 3) return;
  const c = s.brush.getContext("2d"); c.fillStyle = "#ff3030"; c.beginPath(); c.moveTo(...s.poly[0]);
  s.poly.slice(1).forEach(p => c.lineTo(...p)); c.closePath(); c.fill();
  s.poly = []; s.painted = true; s.click = null; a2Draw();
});
$("#a2-clear").onclick = () => { const s = state.a2; if (!s.brush) return; s.poly = [];
  s.brush.getContext("2d").clearRect(0, 0, s.brush.width, s.brush.height); s.painted = false; s.click = null; a2Draw(); };
async function a2Preview() {
  const s = state.a2, body = { dataset: $("#a2-ds").value, index: Number($("#a2-image").value), generator: $("#a2-gen").value,
    params: formValues($("#a2-form"), true), seed: Number($("#a2-seed").value), radius: Number($("#a2-radius").value),
    real_defects: $("#a2-real").checked };
  if (s.painted && a2Mode() !== "click") body.mask_png = s.brush.toDataURL("image/png");
  else if (s.click) body.click = s.click;
  status("generating preview…");
  $("#a2-qc").textContent = ""; delete $("#a2-qc").dataset.labelPixels; $("#a2-accept").disabled = true;
  try {
    const r = await api("/api/author2d/preview", body);
    fieldErrors($("#a2-form"), null);
    if (!r.accepted) { status(`no accepted sample: ${r.reason} (rejects: ${r.rejects.join(", ")})`, true); return; }
    s.previewId = r.id; $("#a2-accept").disabled = false;
    const img = $("#a2-result"); img.src = `/api/author2d/preview/${r.id}.png?kind=overlay`; img.hidden = false;
    $("#a2-qc").textContent = `label: ${r.label} · ${r.n_label_pixels} label pixels · boxes ${JSON.stringify(r.boxes)} · fill ${r.qc.fill} · contrast ${r.qc.contrast} · seed ${r.seed}`;
    $("#a2-qc").dataset.labelPixels = r.n_label_pixels;
    status("preview ready");
  } catch (e) { if (!fieldErrors($("#a2-form"), e)) status(e.message, true); else status(e.message, true); }
}
$("#a2-preview").onclick = a2Preview;
$("#a2-accept").onclick = async () => {
  const formats = [...document.querySelectorAll(".a2-fmt:checked")].map(x => x.value);
  try {
    const r = await api("/api/author2d/accept", { id: state.a2.previewId, set: $("#a2-set").value, formats });
    $("#a2-accepted").textContent = `accepted as ${r.file} in ${r.set} (${r.n} samples)`;
    status(`accepted into ${r.set}`); loadProject();
  } catch (e) { status(e.message, true); }
};
async function a2LoadGenerators() {
  const r = await api("/api/generators"); state.a2.generators = r.generators;
  $("#a2-gen").innerHTML = r.generators.map(g => `<option>${g.name}</option>`).join("");
  $("#a2-gen").value = r.generators.some(g => g.name === "pitting") ? "pitting" : r.generators[0].name;
  a2ShowForm();
}
function a2ShowForm() {
  const g = state.a2.generators.find(x => x.name === $("#a2-gen").value);
  $("#a2-gen-title").textContent = g.name + (g.needs_real ? " (needs real defects)" : "");
  $("#a2-gen-help").textContent = g.help; if (g.needs_real) $("#a2-real").checked = true;
  buildForm($("#a2-form"), g.fields);
}
$("#a2-gen").onchange = a2ShowForm;
$("#a2-ds").onchange = a2LoadImages;
$("#a2-image").onchange = a2ShowImage;

// ---------------------------------------------------------------- Author 3D
const a3viewer = new CloudViewer($("#a3-viewer"));
async function a3Init() {
  const r = await api("/api/operators"); state.a3.ops = r.operators;
  $("#a3-part").innerHTML = r.parts.map(p => `<option>${p}</option>`).join("");
  $("#a3-op").innerHTML = r.operators.map(o => `<option>${o.name}</option>`).join("");
  $("#a3-op").value = "dent"; a3ShowForm();
  if (r.llm) $("#a3-text").placeholder += ` (LLM: ${r.llm})`;
}
function a3ShowForm() {
  const o = state.a3.ops.find(x => x.name === $("#a3-op").value);
  buildForm($("#a3-form"), o.fields, o.choices);
}
$("#a3-op").onchange = a3ShowForm;
$("#a3-load").onclick = async () => {
  const file = $("#a3-file").value.trim();
  const body = file ? { kind: "file", path: file, n_points: Number($("#a3-n").value) }
                    : { kind: "part", name: $("#a3-part").value, n_points: Number($("#a3-n").value), seed: Number($("#a3-seed").value) };
  status("loading…");
  try { const c = await api("/api/author3d/load", body); state.a3.cloud = c.id; a3viewer.setCloud(c);
        $("#a3-info").textContent = `${c.name}: ${c.n} points. Click a point to place a ${$("#a3-op").value}.`; status("loaded " + c.name);
  } catch (e) { status(e.message, true); }
};
a3viewer.onPick = async row => {
  state.a3.point = row;
  try {
    const r = await api("/api/author3d/instructions", { cloud: state.a3.cloud, operator: $("#a3-op").value,
      params: formValues($("#a3-form"), true), point: row, radius: Number($("#a3-radius").value), seed: Number($("#a3-seed").value) });
    fieldErrors($("#a3-form"), null);
    $("#a3-json").value = JSON.stringify(r.instructions, null, 2);
    await a3Run();
  } catch (e) { fieldErrors($("#a3-form"), e); status(e.message, true); }
};
async function a3Run() {
  $("#a3-json-error").textContent = "";
  let inst;
  try { inst = JSON.parse($("#a3-json").value); } catch (e) { $("#a3-json-error").textContent = "not valid JSON: " + e.message; return; }
  if (!state.a3.cloud) { $("#a3-json-error").textContent = "load a part or cloud first"; return; }
  status("applying instructions…");
  try {
    const r = await api("/api/author3d/preview", { cloud: state.a3.cloud, instructions: inst, seed: Number($("#a3-seed").value) });
    a3viewer.setCloud(r);
    $("#a3-info").textContent = `${r.n_defect} defect points of ${r.n} (${r.records.map(x => x.type + " " + x.n_mask).join(", ")})`;
    $("#a3-info").dataset.defectPoints = r.n_defect; status("preview ready");
  } catch (e) { $("#a3-json-error").textContent = e.message; status(e.message, true); }
}
$("#a3-run").onclick = a3Run;
$("#a3-describe").onclick = async () => {
  $("#a3-text-error").textContent = "";
  const diag = $("#a3-diag").value;
  try {
    const r = await api("/api/author3d/describe", { text: $("#a3-text").value, part_diag_mm: diag ? Number(diag) : null });
    $("#a3-json").value = JSON.stringify(r.instructions, null, 2); status(`instructions from the ${r.parser} parser`);
  } catch (e) { if (e.field === "text") $("#a3-text-error").textContent = e.message; status(e.message, true); }
};
$("#a3-save").onclick = async () => {
  $("#a3-json-error").textContent = "";
  try { const r = await api("/api/author3d/save", { path: $("#a3-save-path").value, instructions: JSON.parse($("#a3-json").value) });
        status("saved " + r.path + " (use it with: defectforge synth3d -i " + r.path + ")");
  } catch (e) { $("#a3-json-error").textContent = e.message; status(e.message, true); }
};

// ---------------------------------------------------------------- uploads (decoded on the server by the CLI's readers)
$("#up-file").onchange = () => { const f = $("#up-file").files[0];
  if (f && !$("#up-path").value) $("#up-path").value = "uploads/" + f.name; };
$("#up-go").onclick = async () => {
  $("#up-error").textContent = ""; const f = $("#up-file").files[0];
  if (!f) { $("#up-error").textContent = "choose a file first"; return; }
  const params = { path: $("#up-path").value, kind: $("#up-kind").value, overwrite: $("#up-overwrite").checked ? 1 : 0 };
  const r = await fetch("/api/upload?" + q(params), { method: "PUT", body: f });
  const d = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) { $("#up-error").textContent = d.error; status(d.error, true); return; }
  status(`uploaded ${d.path} (${d.bytes} bytes${d.shape ? ", " + d.shape.join("x") : ""}${d.n_points ? ", " + d.n_points + " points" : ""})`);
  loadProject();
};

// ---------------------------------------------------------------- start
(async () => {
  try { await loadProject(); await a2LoadGenerators(); await a3Init(); await openDataset(); await a2LoadImages();
        document.body.dataset.ready = "1"; }
  catch (e) { status(e.message, true); }
})();
