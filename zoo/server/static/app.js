// zoo's web page: renders what the REST API returns. No framework, no build step.
"use strict";

const view = document.getElementById("view");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const enc = encodeURIComponent;
// The server's root as the browser reaches it, from this script's own address
// (ROOT/static/app.js): behind a proxy that serves the server under a path
// (host/zoo/), every request goes under it, whether or not the server knows it.
const ROOT = new URL("..", document.currentScript.src).href;
const tokenBox = document.getElementById("token");
tokenBox.value = localStorage.getItem("zoo-token") || "";

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = tokenBox.value.trim();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const r = await fetch(new URL(path, ROOT).href, opts);
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const e = body && body.error ? body.error : {message: r.statusText};
    const err = new Error(e.message);
    err.status = r.status;
    // A token revoked (or mistyped) since the page named its holder: say so at the top too.
    if (r.status === 401 && path !== "api/whoami") {
      const w = document.getElementById("whoami");
      if (w) w.textContent = "sign in with a token";
    }
    throw err;
  }
  return body;
}

function bytes(n) {  // decimal units, as the CLI and the Hub print sizes
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function badge(a) {
  let html = `<span class="badge ${esc(a.kind)}">${esc(a.kind)}</span>`;
  if (a.virtual) html += ` <span class="badge virtual" title="recipe only: re-derived on demand">virtual</span>`;
  if (a.deleted) html += ` <span class="badge removed" title="removed with zoo rm: its rows stay until zoo gc forgets it">removed</span>`;
  return html;
}

function showError(e) {
  const hint = e.status === 401 ? " Paste a token in the box at the top right." : "";
  view.innerHTML = `<div class="error">${esc(e.message)}${esc(hint)}</div>`;
}

// --- browse -------------------------------------------------------------------------------

// The library's filters and how many rows are shown live in the address (#/?q=bert&rows=100):
// a reload, a bookmark, a shared link and the back button all come back to the same list.
const FILTERS = ["q", "kind", "family", "size", "all"];
const PAGE = 50;

function browseAddress(state, rows) {
  const p = new URLSearchParams();
  for (const k of FILTERS) if (state[k]) p.set(k, state[k]);
  if (rows > PAGE) p.set("rows", String(rows));
  const query = p.toString();
  return "#/" + (query ? "?" + query : "");
}

async function browse(params) {
  const mine = navigation;
  const browseState = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  // At most a thousand rows (the API's largest page) come back at once.
  const restoreRows = Math.min(Math.max(parseInt(params.get("rows") || "0", 10) || 0, 0), 1000);
  view.innerHTML = `
    <div class="head"><h1>Library</h1><span id="count" class="count"></span></div>
    <div class="toolbar">
      <input id="q" type="search" aria-label="Search names and aliases" placeholder="Search names and aliases" value="${esc(browseState.q)}">
      <select id="kind" aria-label="Kind"><option value="">every kind</option><option>source</option><option>learngene</option><option>derived</option><option>placeholder</option></select>
      <select id="family" aria-label="Family"><option value="">every family</option></select>
      <input id="size" aria-label="Size (layers x hidden)" placeholder="size, e.g. 6x384" style="flex:0 0 150px" value="${esc(browseState.size)}">
      <label class="check"><input id="all" type="checkbox"${browseState.all ? " checked" : ""}> removed too</label>
    </div>
    <div class="card" style="padding:0"><table><thead><tr><th>Name</th><th>Kind</th><th>Family</th><th>Size</th><th>Weights</th><th>Hash</th><th>Created</th></tr></thead><tbody id="rows"></tbody></table></div>
    <div class="more"><button id="more" type="button" hidden>Older artifacts</button></div>`;
  const families = await api("api/families");
  if (!current(mine)) return;
  const fam = document.getElementById("family");
  fam.innerHTML += families.map((f) => `<option>${esc(f)}</option>`).join("");
  document.getElementById("kind").value = browseState.kind;
  fam.value = browseState.family;
  // Answers can come back out of order (the server answers requests on several threads):
  // only the one for what the toolbar shows now is drawn.
  let asked = 0, shown = 0, next = null, query = "";
  const more = document.getElementById("more");
  const draw = (page, append) => {
    const list = page.artifacts;
    shown = (append ? shown : 0) + list.length;
    next = page.next;
    document.getElementById("count").textContent =
      page.total > shown ? `newest ${shown} of ${page.total} artifacts` : `${page.total} artifacts`;
    const address = browseAddress(browseState, shown);
    if (location.hash !== address) history.replaceState(history.state, "", address);
    const rows = list.map((a) => `
      <tr class="row" data-name="${esc(a.name)}">
        <td><a href="#/artifact/${enc(a.name)}">${esc(a.name)}</a> ${a.aliases.map((x) => `<span class="alias">${esc(x)}</span>`).join("")}</td>
        <td>${badge(a)}</td><td>${esc(a.family || "-")}</td><td>${esc(a.size || "")}</td>
        <td>${bytes(a.nbytes)}</td><td class="mono">${esc(a.content_hash.slice(0, 12))}</td>
        <td class="muted">${esc(a.created_at.slice(0, 10))} · ${esc(a.created_by)}</td></tr>`).join("");
    const body = document.getElementById("rows");
    const none = query ? "Nothing matches these filters." : "Nothing is registered. Register checkpoints with <code>zoo import PATH</code>.";
    if (append) body.insertAdjacentHTML("beforeend", rows);
    else body.innerHTML = rows || `<tr><td colspan="7" class="muted">${none}</td></tr>`;
    for (const tr of body.querySelectorAll("tr.row")) tr.onclick = (ev) => { if (ev.target.tagName !== "A") location.hash = "#/artifact/" + enc(tr.dataset.name); };
    more.hidden = !next;
  };
  const load = async (append, rows) => {
    const ask = ++asked;
    const p = new URLSearchParams(query);
    if (append) p.set("after", next);
    if (rows > PAGE) p.set("limit", String(rows));
    let page;
    try { page = await api("api/artifacts?" + p.toString()); }
    catch (e) {
      if (ask !== asked || !current(mine)) return;
      if (append) {  // the rows shown stay; the button asks again
        document.getElementById("rows").insertAdjacentHTML("beforeend", `<tr class="failed"><td colspan="7" class="error">${esc(e.message)}</td></tr>`);
      } else {  // no count of a listing that did not come
        document.getElementById("rows").innerHTML = `<tr><td colspan="7" class="error">${esc(e.message)}</td></tr>`;
        document.getElementById("count").textContent = "";
      }
      return;
    }
    if (ask === asked && current(mine)) {
      for (const tr of document.querySelectorAll("#rows tr.failed")) tr.remove();
      draw(page, append);
    }
  };
  const refresh = (rows) => {
    Object.assign(browseState, {
      q: document.getElementById("q").value.trim(),
      kind: document.getElementById("kind").value,
      family: fam.value,
      size: document.getElementById("size").value.trim(),
      all: document.getElementById("all").checked ? "true" : "",
    });
    const p = new URLSearchParams();
    for (const k of FILTERS) if (browseState[k]) p.set(k, browseState[k]);
    query = p.toString();
    // Until this query's first page is drawn, no "Older" of the previous one: its cursor
    // would page on under the new filters.
    next = null;
    more.hidden = true;
    return load(false, rows);
  };
  // The next page of the same query, after the last row shown (keyset: none repeats).
  more.onclick = () => { if (next) load(true); };
  for (const id of ["q", "size"]) document.getElementById(id).oninput = () => refresh(0);
  for (const id of ["kind", "family", "all"]) document.getElementById(id).onchange = () => refresh(0);
  await refresh(restoreRows);
}

// --- one artifact -------------------------------------------------------------------------

function factsTable(obj, skip) {
  return `<dl class="facts">${Object.entries(obj).filter(([k]) => !(skip || []).includes(k)).map(([k, v]) =>
    `<dt>${esc(k)}</dt><dd class="mono">${esc(typeof v === "object" ? JSON.stringify(v) : v)}</dd>`).join("")}</dl>`;
}

function tensorSummary(a) {
  const ts = a.tensors || [];
  const dtypes = {};
  for (const t of ts) dtypes[t.dtype] = (dtypes[t.dtype] || 0) + t.nbytes;
  const biggest = [...ts].sort((x, y) => y.nbytes - x.nbytes).slice(0, 8);
  return `
    <p><strong>${ts.length}</strong> tensors, <strong>${bytes(a.nbytes)}</strong>
      (${Object.entries(dtypes).map(([d, n]) => `${esc(d)} ${bytes(n)}`).join(", ")})</p>
    <table><thead><tr><th>Largest tensors</th><th>Shape</th><th>sha256</th></tr></thead><tbody>
    ${biggest.map((t) => `<tr><td class="mono">${esc(t.name)}</td><td class="mono">${esc(JSON.stringify(t.shape))}</td><td class="mono">${esc(t.digest.slice(0, 12))}</td></tr>`).join("")}
    </tbody></table>`;
}

// A smaller size the server makes with zoo's defaults, which keep head_dim, the heads per
// hidden unit and the query heads per key/value head: half the layers, and the largest
// width up to half whose heads make whole key/value groups; the same width where none
// does (half the hidden size would break head_dim where the heads are odd, or the groups
// of a grouped-query model).
function smallerSize(a) {
  const [layers, hidden] = a.size.split("x").map(Number);
  const c = a.config || {};
  const heads = c.num_attention_heads ?? c.n_head;
  const kv = c.num_key_value_heads ?? heads;
  let width = hidden;
  if (heads && kv && heads % kv === 0) {
    const group = heads / kv;
    for (let m = Math.floor(kv / 2); m >= 1; m--) {
      const h = group * m;  // the target's heads: whole groups, at the source's heads per unit
      if ((hidden * h) % heads === 0) { width = (hidden * h) / heads; break; }
    }
  } else if (!heads) {
    width = Math.max(8, Math.floor(hidden / 2));
  }
  return `${Math.max(1, Math.floor(layers / 2))}x${width}`;
}

async function artifact(name) {
  const mine = navigation;
  // A removed artifact's page too (a lineage drawing links its removed nodes): its record
  // and lineage stay until `zoo gc` forgets it; its card and files are no longer served.
  const a = await api(`api/artifacts/${enc(name)}?all=true`);
  if (!current(mine)) return;
  const recipe = a.info.recipe || (a.kind === "learngene" ? Object.fromEntries(Object.entries(a.info).filter(([k]) => k !== "signals")) : null);
  const endpoint = ROOT.replace(/\/$/, "");  // HF_ENDPOINT: the root, prefix and all
  view.innerHTML = `
    <div class="head"><h1>${esc(a.name)}</h1>${badge(a)} <span class="muted">${esc(a.family)}${a.size ? " · " + esc(a.size) : ""}</span>
      ${a.aliases.map((x) => `<span class="alias">${esc(x)}</span>`).join("")}</div>
    <div class="card"><h2>Lineage</h2><div id="graph" class="graph muted">drawing…</div>
      <details id="graph-text"><summary>DOT and Mermaid</summary><div class="grid" style="margin-top:10px"><pre id="dot"></pre><pre id="mermaid"></pre></div></details></div>
    <div class="grid">
      <div class="card"><h2>Identity</h2>${factsTable({
        "content hash": a.content_hash, created: a.created_at.replace("T", " ").slice(0, 19), "created by": a.created_by,
        stored: a.kind === "placeholder" ? "nothing: a name a model card gives as its base" : a.virtual ? "recipe only (re-derived and verified on demand)" : "weights in the store",
        imported: a.imports.map((i) => i.origin + (i.revision ? "@" + i.revision.slice(0, 12) : "")).join(", ") || "—"})}</div>
      <div class="card"><h2>${a.kind === "learngene" ? "Extraction" : "Recipe"}</h2>${recipe ? factsTable(recipe, ["target_config"]) : a.kind === "placeholder" ? '<p class="muted">None: not imported.</p>' : '<p class="muted">A source checkpoint: registered as imported.</p>'}</div>
      <div class="card"><h2>Tensors</h2>${tensorSummary(a)}</div>
      <div class="card"><h2>Config</h2><div class="scroll">${a.config ? factsTable(a.config) : '<p class="muted">none</p>'}</div></div>
    </div>
    <div class="card" style="margin-top:18px"><h2>Use it</h2>
      ${a.kind === "placeholder"
        ? `<p>Named as a base_model by a model card here; it holds no weights. Import it first: <code>zoo import ${esc(a.info.repo_id || a.name)}</code></p>`
        : a.kind === "learngene"
        ? `<p>Any size on demand, from Python:</p><pre>from transformers import AutoModel
model = AutoModel.from_pretrained("${esc(a.name)}", revision="${a.size ? smallerSize(a) : "6x384"}")  # layers x hidden
# with HF_ENDPOINT=${esc(endpoint)} and HF_TOKEN set</pre>`
        : `<pre>from transformers import AutoModel
model = AutoModel.from_pretrained("${esc(a.name)}")${a.size && a.family ? `                      # ${esc(a.size)}
model = AutoModel.from_pretrained("${esc(a.name)}", revision="${smallerSize(a)}")  # another size` : ""}
# with HF_ENDPOINT=${esc(endpoint)} and HF_TOKEN set</pre><p id="files" class="muted snippet"></p>`}
    </div>
    <div class="card"><h2>Model card</h2><pre id="card" class="muted">…</pre></div>`;
  // The page may be left before these arrive (for another artifact's page, with the same
  // ids): fill only while this page is the one shown.
  const fill = (id, f) => { const el = current(mine) && document.getElementById(id); if (el) f(el); };
  api(`api/artifacts/${enc(a.name)}/lineage?format=svg&all=true`).then(
    (svg) => fill("graph", (el) => { el.innerHTML = svg; el.classList.remove("muted"); }),
    (e) => fill("graph", (el) => { el.textContent = e.message; }));
  // DOT and Mermaid list every edge (a base model with ten thousand fine-tunes: a megabyte
  // and more): fetched when their panel is first opened, not with every page.
  const text = document.getElementById("graph-text");
  text.addEventListener("toggle", () => {
    for (const format of ["dot", "mermaid"]) {
      fill(format, (el) => { el.textContent = "…"; });
      api(`api/artifacts/${enc(a.name)}/lineage?format=${format}&all=true`).then(
        (t) => fill(format, (el) => { el.textContent = t; }),
        (e) => fill(format, (el) => { el.textContent = e.message; }));
    }
  }, {once: true});
  if (a.deleted) {
    fill("card", (el) => { el.textContent = "Removed with zoo rm: its card and files are no longer served."; });
    return;
  }
  api(`api/artifacts/${enc(a.name)}/card`).then(
    (t) => fill("card", (el) => { el.textContent = t; el.classList.remove("muted"); }),
    (e) => fill("card", (el) => { el.textContent = e.message; }));
  if (a.kind !== "learngene" && a.kind !== "placeholder") {  // neither has files to list
    api(`api/artifacts/${enc(a.name)}/files`).then((f) => fill("files", (el) => {
      el.innerHTML = "Files: " + Object.entries(f.files).map(([n, m]) =>
        `<a class="file" href="${esc(ROOT)}api/artifacts/${enc(a.name)}/files/${enc(n)}" download="${esc(n)}">${esc(n)}</a> (${bytes(m.size)})`).join(" · ");
      for (const link of el.querySelectorAll("a.file")) link.onclick = download;
    }), () => {});
  }
}

// A link sends no Authorization header: with a token in the box, the page asks the server
// for a signed link to the file (valid for minutes, for this token) and follows it, so the
// browser saves the file as it arrives; fetching it here would hold all of it in memory.
// Without a token, the link itself serves a server with --public-read.
async function download(ev) {
  if (!tokenBox.value.trim()) return;
  ev.preventDefault();
  const link = ev.currentTarget;
  let url;
  try {
    ({url} = await api(link.href + "/link"));
  } catch (e) {
    const hint = e.status === 401 ? " Paste a valid token in the box at the top right." : "";
    link.classList.add("failed");
    let shown = document.getElementById("download-error");
    if (!shown) {
      shown = Object.assign(document.createElement("div"), {id: "download-error", className: "error"});
      link.parentElement.after(shown);
    }
    shown.textContent = `${link.getAttribute("download")}: ${e.message}${hint}`;
    return;
  }
  document.getElementById("download-error")?.remove();
  // The file's own address (under the root the page was reached at) with the link's
  // signature: the server's path for it lacks a prefix it was not told.
  const signed = new URL(link.href);
  signed.search = new URL(url, ROOT).search;
  const save = Object.assign(document.createElement("a"), {href: signed.href, download: link.getAttribute("download")});
  document.body.appendChild(save);
  save.click();
  save.remove();
}

// --- audit --------------------------------------------------------------------------------

const hex = (digest) => [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");

// A float32 tensor's bytes at bf16 or fp16 when that dtype holds every value exactly (as
// zoo.checkpoint.casts finds them): a bf16 checkpoint loaded as float32 and saved again.
// bf16 is a float32's top half, exact when the lower half is zero.
function narrowBF16(buffer) {
  const wide = new Uint32Array(buffer);
  const out = new Uint16Array(wide.length);
  for (let i = 0; i < wide.length; i++) {
    if (wide[i] & 0xffff) return null;
    out[i] = wide[i] >>> 16;
  }
  return out.buffer;
}

function narrowF16(buffer) {
  const wide = new Uint32Array(buffer);
  const out = new Uint16Array(wide.length);
  for (let i = 0; i < wide.length; i++) {
    const bits = wide[i], sign = (bits >>> 16) & 0x8000, exp = (bits >>> 23) & 0xff, man = bits & 0x7fffff;
    if (exp === 0xff) {  // infinity, or a NaN whose payload fits
      if (man & 0x1fff) return null;
      out[i] = sign | 0x7c00 | (man >>> 13);
    } else if (exp === 0) {  // zero (a float32 subnormal is below fp16's range)
      if (man) return null;
      out[i] = sign;
    } else if (exp > 112) {  // an fp16 normal number
      if (exp > 142 || (man & 0x1fff)) return null;
      out[i] = sign | ((exp - 112) << 10) | (man >>> 13);
    } else {  // an fp16 subnormal: (man | 2^23) * 2^(exp - 150) = m * 2^-24
      const shift = 126 - exp, full = man | 0x800000;
      if (shift > 23 || (full & ((1 << shift) - 1))) return null;
      out[i] = sign | (full >>> shift);
    }
  }
  return out.buffer;
}

// Bytes per element of each dtype zoo reads (zoo/checkpoint/safetensors_format.py).
const ITEMSIZE = {F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4,
  I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1};

// The checks zoo audit makes of a file before trusting its tensors, with its words: every
// tensor's bytes are its dtype and shape's, inside the data section, and the tensors tile
// that section exactly (appended bytes, a truncated download or a forged offset would
// otherwise hash as a registered artifact's tensors).
function checkLayout(file, header, dataLength, text) {
  const bad = (what) => new Error(`${file.name} ${what}.`);
  // JSON.parse reads 32.0 as 32: the header's text says whether a size was written whole.
  if (/"(?:shape|data_offsets)"\s*:\s*\[[^\]]*[.eE]/.test(text)) throw bad("gives a tensor a shape or data_offsets that are not whole numbers; the file is corrupt");
  const spans = [];
  for (const [name, t] of Object.entries(header)) {
    if (!t || typeof t !== "object" || Array.isArray(t)) throw bad(`describes tensor '${name}' with a JSON ${Array.isArray(t) ? "array" : typeof t} instead of an object; the file is corrupt`);
    const missing = ["dtype", "shape", "data_offsets"].filter((k) => !(k in t));
    if (missing.length) throw bad(`describes tensor '${name}' without ${missing.join(", ")}; the file is corrupt`);
    if (!(t.dtype in ITEMSIZE)) throw bad(`gives tensor '${name}' the unknown dtype '${t.dtype}'; zoo reads ${Object.keys(ITEMSIZE).join(", ")} only, so convert the tensor first`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw bad(`gives tensor '${name}' the shape ${JSON.stringify(t.shape).slice(0, 80)}, which is not a list of sizes; the file is corrupt`);
    if (t.shape.length > 16) throw bad(`gives tensor '${name}' ${t.shape.length} axes, more than the 16 zoo reads; the file is corrupt or forged`);
    const offsets = t.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) throw bad(`gives tensor '${name}' the data_offsets ${JSON.stringify(offsets)}, which is not a pair of byte offsets; the file is corrupt`);
    const [begin, end] = offsets;
    if (end < begin) throw bad(`gives tensor '${name}' data_offsets [${begin}, ${end}] that end before they begin; the file is corrupt`);
    if (end > dataLength) throw bad(`places tensor '${name}' at bytes [${begin}, ${end}) of a data section that has only ${dataLength} bytes; the file is truncated`);
    const needed = t.shape.reduce((a, b) => a * b, 1) * ITEMSIZE[t.dtype];
    if (end - begin !== needed) throw bad(`gives tensor '${name}' ${end - begin} bytes but ${t.dtype} x (${t.shape.join(", ")}) needs ${needed}; the file is corrupt`);
    spans.push([begin, end, name]);
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0, previous = "?";
  for (const [begin, end, name] of spans) {
    if (begin < at) throw bad(`has tensors '${previous}' and '${name}' whose data overlap; the file is corrupt or forged`);
    if (begin > at) throw bad(`has ${begin - at} bytes at data offset ${at} that belong to no tensor; the file is corrupt or forged`);
    at = end;
    previous = name;
  }
  if (at !== dataLength) throw bad(`has ${dataLength - at} bytes after the last tensor that belong to no tensor; the file is corrupt or forged`);
}

async function hashTensors(file, progress) {
  // The safetensors layout: 8-byte little-endian header length, JSON header, then data.
  if (file.size < 8) throw new Error(`${file.name} is ${file.size} bytes long, too short to hold a safetensors header; the file is truncated or not safetensors.`);
  const declared = new DataView(await file.slice(0, 8).arrayBuffer()).getBigUint64(0, true);
  if (declared > 100000000n) throw new Error(`${file.name} declares a header of ${declared} bytes, more than the 100000000-byte limit; the file is corrupt or not safetensors.`);
  const n = Number(declared);
  if (8 + n > file.size) throw new Error(`${file.name} declares a header of ${n} bytes but the file has only ${file.size - 8} bytes after the length field; the file is truncated or not safetensors.`);
  let header, text;
  try {
    text = new TextDecoder("utf-8", {fatal: true}).decode(await file.slice(8, 8 + n).arrayBuffer());
    header = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file.name} has a header that is not valid JSON (${e.message}); the file is corrupt or not safetensors.`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) throw new Error(`${file.name} has a header that is not a JSON object; the file is corrupt or not safetensors.`);
  const metadata = header.__metadata__ || null;
  delete header.__metadata__;
  checkLayout(file, header, file.size - 8 - n, text);
  const entries = Object.entries(header);
  const tensors = [];
  const narrowed = {BF16: {}, F16: {}};  // name -> record, where the dtype holds it exactly
  let done = 0;
  for (const [name, t] of entries) {
    const [start, end] = t.data_offsets;
    const data = await file.slice(8 + n + start, 8 + n + end).arrayBuffer();
    const digest = await crypto.subtle.digest("SHA-256", data);
    tensors.push({name, dtype: t.dtype, shape: t.shape, nbytes: end - start, digest: hex(digest)});
    if (t.dtype === "F32") {
      for (const [code, narrow] of [["BF16", narrowBF16], ["F16", narrowF16]]) {
        const bytes = narrow(data);
        if (bytes) narrowed[code][name] = {name, dtype: code, shape: t.shape, nbytes: bytes.byteLength,
          digest: hex(await crypto.subtle.digest("SHA-256", bytes))};
      }
    }
    progress(++done / entries.length);
  }
  return {tensors, metadata, narrowed};
}

const rank = (r) => [{known: 3, removed: 2, modified: 1}[r.status] || 0, -(r.differing.length + r.missing.length + r.extra.length)];
const better = (a, b) => { const [x, y] = [rank(a), rank(b)]; return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]); };

function auditPage() {
  view.innerHTML = `
    <div class="head"><h1>Audit a checkpoint</h1><span class="muted">Which registered artifact is this file? Where did it come from? Was it changed?</span></div>
    <div class="card">
      <label id="drop" class="drop"><input id="pick" class="unseen" type="file" multiple accept=".safetensors,.json">
        <strong>Drop a model.safetensors here</strong> (or every shard of one, and its config.json if you have it)<br>
        <span class="muted">or click to choose. Each tensor is hashed in your browser; only the hashes are sent.</span>
        <div class="progress"><div id="bar"></div></div></label>
    </div>
    <div id="result"></div>`;
  const drop = document.getElementById("drop");
  const pick = document.getElementById("pick");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); runAudit([...e.dataTransfer.files]); };
  pick.onchange = () => runAudit([...pick.files]);
}

// The weights a folder's files hold, as zoo audit FOLDER reads them (and transformers
// loads them): model.safetensors when it is there, else the shards its index names, else
// every .safetensors picked (the shards of one checkpoint), each in name order.
async function weightsOf(files) {
  const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const safetensors = files.filter((f) => f.name.endsWith(".safetensors")).sort(byName);
  const single = safetensors.find((f) => f.name === "model.safetensors");
  if (single) return [single];
  const index = files.find((f) => f.name === "model.safetensors.index.json");
  if (!index) return safetensors;
  let map;
  try {
    map = JSON.parse(await index.text()).weight_map;
  } catch (e) {
    throw new Error(`model.safetensors.index.json is not valid JSON (${e.message}).`);
  }
  if (!map || typeof map !== "object" || Array.isArray(map) || !Object.keys(map).length) {
    throw new Error("model.safetensors.index.json has no non-empty weight_map: it does not say which shard holds each tensor.");
  }
  const named = [...new Set(Object.values(map))].sort();
  const missing = named.filter((n) => !safetensors.some((f) => f.name === n));
  if (missing.length) throw new Error(`The index names ${missing.join(", ")}, which was not picked: pick every shard it names.`);
  return safetensors.filter((f) => named.includes(f.name));
}

async function runAudit(files) {
  const result = document.getElementById("result");
  const bar = document.getElementById("bar");
  const configFile = files.find((f) => f.name === "config.json");
  let weights;
  try {
    weights = await weightsOf(files);
  } catch (e) {
    result.innerHTML = `<div class="error">${esc(e.message)}</div>`;
    return;
  }
  if (!weights.length) { result.innerHTML = `<div class="error">Drop a .safetensors file (every shard of a sharded checkpoint).</div>`; return; }
  const label = weights.length === 1 ? weights[0].name : `${weights[0].name} and ${weights.length - 1} more shards`;
  const size = weights.reduce((n, f) => n + f.size, 0);
  result.innerHTML = `<p class="muted">Hashing ${esc(label)} (${bytes(size)})…</p>`;
  try {
    let report;
    if (window.crypto && crypto.subtle) {
      const tensors = [], metadata = {}, narrowed = {BF16: {}, F16: {}}, shardOf = {};
      for (const [i, file] of weights.entries()) {
        const part = await hashTensors(file, (f) => { bar.style.width = ((i + f) / weights.length * 100).toFixed(0) + "%"; });
        for (const t of part.tensors) {
          if (t.name in shardOf) throw new Error(`Tensor ${t.name} is in both ${shardOf[t.name]} and ${file.name}.`);
          shardOf[t.name] = file.name;
          tensors.push(t);
        }
        for (const [k, v] of Object.entries(part.metadata || {})) if (!(k in metadata)) metadata[k] = v;  // the first shard's wins
        for (const code of ["BF16", "F16"]) Object.assign(narrowed[code], part.narrowed[code]);
      }
      // The config's text, read by the server as zoo reads the file (JSON.parse would
      // turn 10000.0 into 10000, another content hash), and checked there.
      const configText = configFile ? await configFile.text() : null;
      const identify = (manifest) => api("api/audit/hashes", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({label, tensors: manifest, config_text: configText, metadata: Object.keys(metadata).length ? metadata : null})});
      report = await identify(tensors);
      // No exact match: try the float32 tensors at the narrower dtype that holds them, then
      // each one as the artifact that finds recorded it (some may have stayed float32).
      for (const code of ["BF16", "F16"]) {
        if (report.status === "known" || report.status === "removed" || !Object.keys(narrowed[code]).length) continue;
        let manifest = tensors.map((t) => narrowed[code][t.name] || t);
        let cast = await identify(manifest);
        if (cast.artifact) {
          // By digest and dtype: zeros have the same bytes in bf16 and fp16.
          const recorded = Object.fromEntries((await api(`api/artifacts/${enc(cast.artifact.name)}`)).tensors.map((t) => [t.name, t]));
          manifest = tensors.map((t) => {
            const want = recorded[t.name];
            if (want === undefined || (t.digest === want.digest && t.dtype === want.dtype)) return t;
            return [narrowed.BF16[t.name], narrowed.F16[t.name]].find((n) => n && n.digest === want.digest && n.dtype === want.dtype) || t;
          });
          cast = await identify(manifest);
        }
        const from = [...new Set(manifest.filter((m, i) => m !== tensors[i]).map((m) => m.dtype))].sort();
        if (better(cast, report)) report = {...cast, cast_from: from};
      }
    } else {  // not a secure context: send the file itself
      const form = new FormData();
      for (const f of files) if (weights.includes(f) || f.name.endsWith(".json")) form.append("files", f, f.name);
      form.append("label", label);
      report = await api("api/audit", {method: "POST", body: form});
    }
    bar.style.width = "100%";
    showReport(report);
  } catch (e) {
    result.innerHTML = `<div class="error">${esc(e.message)}</div>`;
  }
}

function showReport(r) {
  const result = document.getElementById("result");
  const a = r.artifact;
  const say = {
    known: a && `is <a href="#/artifact/${enc(a.name)}">${esc(a.name)}</a>, a ${esc(a.kind)} checkpoint, ${r.rounded_to && r.rounded_to.length ? "cast down" : "bit for bit"}${r.config_differs ? " (its config.json differs)" : ""}.`,
    modified: a && (r.head_dropped && !r.differing.length
      ? `is a part of <a href="#/artifact/${enc(a.name)}">${esc(a.name)}</a>: its base model, saved without its head; every tensor of that ${esc(a.kind)} checkpoint it holds is unchanged; ${r.missing.length} missing (the head)${r.extra.length ? `, ${r.extra.length} extra (layers the base model adds)` : ""}.`
      : r.missing.length && !r.differing.length && !r.extra.length
      ? `is a part of <a href="#/artifact/${enc(a.name)}">${esc(a.name)}</a>: every tensor in it is that ${esc(a.kind)} checkpoint's, unchanged; ${r.missing.length} missing (one shard of it, or a cut-down copy).`
      : `differs from <a href="#/artifact/${enc(a.name)}">${esc(a.name)}</a>: ${r.differing.length} ${r.differing.length === 1 ? "tensor differs" : "tensors differ"}${r.missing.length ? `, ${r.missing.length} missing` : ""}${r.extra.length ? `, ${r.extra.length} extra` : ""}.`),
    removed: a && `was ${esc(a.kind)} ${esc(a.name)}, removed from the library.`,
    unknown: "shares no tensors with any registered artifact.",
  }[r.status];
  // Only the tensors that matched were cast: those that differ or are extra are not.
  const unlike = [r.differing.length ? "differ" : "", r.extra.length ? "are extra" : ""].filter(Boolean).join(" or ");
  const but = unlike ? `, but those that ${unlike},` : "";
  result.innerHTML = `<div class="card"><div class="verdict"><span class="badge ${esc(r.status)}">${esc(r.status)}</span>
      <span><strong>${esc(r.path)}</strong> ${say}</span></div>
      ${r.cast_from && r.cast_from.length ? `<p class="muted cast">Its float32 tensors${but} hold the recorded ${esc(r.cast_from.join(", "))} values exactly: a cast that loses nothing, as a float32 load and save makes.</p>` : ""}
      ${r.prefix_dropped ? `<p class="muted cast">Its tensor names are the artifact's without the prefix ${esc(r.prefix_dropped)} (its base model saved on its own, as AutoModel and sentence-transformers save it).</p>` : ""}
      ${r.prefix_added ? `<p class="muted cast">Its tensor names are the artifact's under the prefix ${esc(r.prefix_added)} (a model built on it, saved with its base model's prefix).</p>` : ""}
      ${r.wrapper_prefix ? `<p class="muted cast">Its tensor names are the artifact's under the prefix ${esc(r.wrapper_prefix)} that a training wrapper (torch.compile, DDP) adds to a state dict; transformers loads none of them until it is stripped.</p>` : ""}
      ${r.norm_names_differ ? `<p class="muted cast">Some LayerNorm gains and biases are under the other of the names transformers loads them by (weight/bias for gamma/beta, or the reverse).</p>` : ""}
      ${r.rounded_to && r.rounded_to.length ? `<p class="muted cast">Its ${esc(r.rounded_to.join(", "))} tensors${but} are the recorded float32 values rounded to nearest: a cast that rounds, as a load in that dtype and a save make.</p>` : ""}
      ${r.differing.length ? `<details open><summary>Tensors that differ</summary><pre>${esc(r.differing.slice(0, 50).join("\n"))}</pre></details>` : ""}
      ${r.status === "modified" && r.missing.length ? `<details><summary>Tensors the file lacks</summary><pre>${esc(r.missing.slice(0, 50).join("\n"))}</pre></details>` : ""}
      ${r.extra.length ? `<details open><summary>Tensors the artifact lacks</summary><pre>${esc(r.extra.slice(0, 50).join("\n"))}</pre></details>` : ""}
      ${a ? `<h2 style="margin-top:14px">Ancestry</h2><div id="audit-graph" class="graph"></div>` : ""}</div>`;
  if (a) api(`api/artifacts/${enc(a.name)}/lineage?format=svg&down=false`).then((svg) => {
    const el = document.getElementById("audit-graph");
    if (el) el.innerHTML = svg;
  }, () => {});
}

// --- defaults -----------------------------------------------------------------------------

async function defaultsPage() {
  const mine = navigation;
  const rows = await api("api/defaults");
  if (!current(mine)) return;
  view.innerHTML = `
    <div class="head"><h1>Defaults</h1><span class="muted">What <code>zoo materialize FAMILY</code> and a size revision use when no method is given, chosen by the transfer benchmark</span></div>
    <div class="card" style="padding:0"><table><thead><tr><th>Family</th><th>Direction</th><th>Method</th><th>Wavelet</th><th>Rescale</th><th>Norm</th><th>Depth</th><th>Measured on</th></tr></thead><tbody>
    ${rows.map((d) => `<tr><td><strong>${esc(d.family)}</strong></td><td>${d.direction === "l2s" ? "smaller target" : "larger target"}</td>
      <td>${esc(d.method)}</td><td>${esc(d.wavelet || "—")}</td><td>${esc(d.rescale)}</td><td>${esc(d.norm)}</td><td>${esc(d.depth)}</td>
      <td class="${d.measured_on === d.family ? "" : "muted"}">${esc(d.measured_on === d.family ? "itself" : d.measured_on)}</td></tr>`).join("")}
    </tbody></table></div>`;
}

// --- routing ------------------------------------------------------------------------------

// Each navigation has a number; what arrives for a page already left is dropped, so a slow
// answer never lands on the page that replaced it.
let navigation = 0;
const current = (mine) => mine === navigation;

async function route() {
  const mine = ++navigation;
  // Back to a page seen before: where it was scrolled to (kept below as it scrolls), read
  // before drawing, whose blank moment scrolls to the top.
  const scrollY = (history.state && history.state.scrollY) || 0;
  const hash = location.hash || "#/";
  const library = hash === "#/" || hash.startsWith("#/?");
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", hash.startsWith("#/" + (a.dataset.nav === "browse" ? "" : a.dataset.nav)) && (a.dataset.nav !== "browse" || library || hash.startsWith("#/artifact")));
  try {
    // Each view its own title: the one a tab, a bookmark, the history list and a screen
    // reader name the page by.
    if (hash.startsWith("#/artifact/")) {
      const name = decodeURIComponent(hash.slice("#/artifact/".length));
      document.title = `${name} · zoo`;
      await artifact(name);
    } else if (hash.startsWith("#/audit")) {
      document.title = "Audit a checkpoint · zoo";
      auditPage();
    } else if (hash.startsWith("#/defaults")) {
      document.title = "Defaults · zoo";
      await defaultsPage();
    } else {
      document.title = "Library · zoo";
      await browse(new URLSearchParams(library ? hash.slice(3) : ""));
    }
    if (current(mine)) window.scrollTo(0, scrollY);
  } catch (e) { if (current(mine)) showError(e); }
}

document.getElementById("token-form").onsubmit = (e) => { e.preventDefault(); };
tokenBox.onchange = () => { localStorage.setItem("zoo-token", tokenBox.value.trim()); whoami(); route(); };
async function whoami() {
  const w = document.getElementById("whoami");
  try { const me = await api("api/whoami"); w.textContent = `${me.name} · ${me.role}`; }
  catch (e) { w.textContent = e.status === 401 ? "sign in with a token" : ""; }
}
api("api/health").then((h) => { document.getElementById("version").textContent = h.version; });
window.addEventListener("hashchange", route);
// Where this page of the history is scrolled to, for the back button to come back to.
let scrollSaved = 0;
window.addEventListener("scroll", () => {
  clearTimeout(scrollSaved);
  scrollSaved = setTimeout(() => history.replaceState({scrollY: window.scrollY}, "", location.hash), 150);
});
whoami();
route();
