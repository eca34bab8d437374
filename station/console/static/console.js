// The console's keys and image viewer. One module, no framework: htmx does the live parts.
const typing = (el) => el && (el.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName));
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const csrf = () => JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";

function post(url) {
  const body = new FormData();
  body.append("csrf", csrf());
  return fetch(url, { method: "POST", body, credentials: "same-origin", keepalive: true });
}

// ---- what every page shares: help, page keys, SSE timing for the benchmark ----
const help = $("#help");
const nav = { "1": "/", "2": "/queue", "3": "/history", "4": "/technician" };
// For bench/console.py: ms from a snapshot's build to its arrival, and from an item's decision to the
// moment the belt on this page shows it.
window.__sse = [];
window.__decisions = [];
const decisionsSeen = new Set();
document.body.addEventListener("htmx:sseMessage", (e) => {
  const at = parseFloat(($(".stamp") || {}).dataset?.at || "0");
  if (at) window.__sse.push([e.detail.type, Date.now() - at * 1000]);
  for (const row of $$("tr[data-decided-at]")) {
    if (decisionsSeen.has(row.dataset.track)) continue;
    decisionsSeen.add(row.dataset.track);
    window.__decisions.push(Date.now() - parseFloat(row.dataset.decidedAt) * 1000);
  }
});

// An htmx action's answer (an acknowledgement done, a clear refused and why), for a few seconds.
const toast = $("#toast");
let toastTimer = 0;
document.body.addEventListener("htmx:afterRequest", (e) => {
  const xhr = e.detail.xhr;
  if (!toast || !xhr || e.detail.requestConfig?.verb !== "post") return;
  toast.textContent = xhr.responseText || `${xhr.status}`;
  toast.className = e.detail.successful ? "ok" : "bad";
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 6000);
});

// ---- lists: J / K / Enter ----
const rows = $$("[data-rows] tbody tr[data-href]");
let selected = -1;
function select(i) {
  if (!rows.length) return;
  selected = Math.max(0, Math.min(rows.length - 1, i));
  rows.forEach((r, n) => r.setAttribute("aria-selected", n === selected ? "true" : "false"));
  rows[selected].scrollIntoView({ block: "nearest" });
}
rows.forEach((r) => r.addEventListener("click", (e) => { if (e.target.tagName !== "A") location.href = r.dataset.href; }));

// ---- the item view ----
const grid = $(".item-grid");
const stage = $("[data-stage]");
const frame = $("[data-frame]");
const scan = $("[data-scan]");
const dual = stage && stage.dataset.kind === "dual-energy";
const view = { negative: 0, contrast: 0, gamma: 0, edges: 0, strip: "none", penetration: "normal", colour: "material" };
const standard = { ...view };
let zoom = 0, fit = 1, pan = [0, 0];

function viewQuery() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(view)) if (v !== standard[k]) q.set(k, String(v === true ? 1 : v));
  return q;
}
function describeView() {
  const q = viewQuery().toString();
  const state = $("[data-view-state]");
  if (state) state.textContent = q ? q.replaceAll("&", " · ").replaceAll("=", " ") : "standard view";
}
function reload() {
  if (!scan) return;
  const q = viewQuery();
  scan.src = `/items/${grid.dataset.item}/image` + (q.toString() ? "?" + q : "");
  describeView();
}
function place() {
  if (!stage || !scan.naturalWidth) return;
  fit = Math.min(stage.clientWidth / scan.naturalWidth, stage.clientHeight / scan.naturalHeight);
  const scale = fit * 2 ** zoom;
  if (zoom === 0) pan = [(stage.clientWidth - scan.naturalWidth * scale) / 2, (stage.clientHeight - scan.naturalHeight * scale) / 2];
  frame.style.width = scan.naturalWidth + "px";
  frame.style.height = scan.naturalHeight + "px";
  frame.style.transform = `translate(${pan[0]}px, ${pan[1]}px) scale(${scale})`;
  const boxes = $("[data-boxes]");  // labels stay 13 px on screen, whatever the scan's size and the zoom
  const units = boxes && boxes.viewBox.baseVal ? boxes.viewBox.baseVal.width || scan.naturalWidth : scan.naturalWidth;
  if (boxes) boxes.style.setProperty("--u", String(units / (scan.naturalWidth * scale)));
  const shown = $("[data-zoom]");
  if (shown) shown.textContent = zoom === 0 ? "fit" : `${Math.round(scale * 100)} %`;
}
function zoomBy(step) {
  if (!stage) return;
  const before = fit * 2 ** zoom;
  zoom = step === 0 ? 0 : Math.max(-2, Math.min(5, zoom + step));
  const after = fit * 2 ** zoom;
  const cx = stage.clientWidth / 2, cy = stage.clientHeight / 2;  // zoom about the middle of the stage
  pan = [cx - (cx - pan[0]) * after / before, cy - (cy - pan[1]) * after / before];
  place();
}
if (scan) {
  scan.addEventListener("load", place);
  window.addEventListener("resize", place);
  let drag = null;
  stage.addEventListener("pointerdown", (e) => { drag = [e.clientX - pan[0], e.clientY - pan[1]]; stage.classList.add("dragging"); stage.setPointerCapture(e.pointerId); });
  stage.addEventListener("pointermove", (e) => { if (!drag) return; if (zoom === 0) zoom = 0.0001; pan = [e.clientX - drag[0], e.clientY - drag[1]]; place(); });
  stage.addEventListener("pointerup", () => { drag = null; stage.classList.remove("dragging"); });
  stage.addEventListener("wheel", (e) => { e.preventDefault(); zoomBy(e.deltaY < 0 ? 0.5 : -0.5); }, { passive: false });
  if (scan.complete) place();
}
const cycle = (list, now) => list[(list.indexOf(now) + 1) % list.length];
const step = (v, d) => Math.max(-3, Math.min(3, v + d));
const tools = {
  n: () => { view.negative = view.negative ? 0 : 1; },
  k: () => { view.contrast = step(view.contrast, -1); }, l: () => { view.contrast = step(view.contrast, 1); },
  g: () => { view.gamma = step(view.gamma, -1); }, h: () => { view.gamma = step(view.gamma, 1); },
  e: () => { view.edges = view.edges ? 0 : 1; },
  o: () => { if (dual) view.strip = view.strip === "organic" ? "none" : "organic"; },
  i: () => { if (dual) view.strip = view.strip === "inorganic" ? "none" : "inorganic"; },
  p: () => { if (dual) view.penetration = cycle(["normal", "high", "low"], view.penetration); },
  v: () => { view.colour = cycle(dual ? ["material", "grey", "pseudo"] : ["material", "pseudo"], view.colour); },
  x: () => { Object.assign(view, standard); },
};

// ---- verdicts ----
const form = $("[data-verdict-form]");
const machineThreat = form && form.dataset.machineThreat === "1";
function choose(code, withNote) {
  if (!form) return;
  const button = $(`[data-verdict="${code}"]`, form);
  if (button && button.disabled) {  // refused while customs holds the item: say why, give nothing
    $$("[data-verdict-hint]", form).forEach((el) => { el.textContent = button.title; });
    return;
  }
  form.elements.verdict.value = code;
  $$("[data-verdict]", form).forEach((b) => b.setAttribute("aria-pressed", b.dataset.verdict === code ? "true" : "false"));
  const needsClass = code === "THREAT";
  const override = machineThreat ? ["CLEARED", "FALSE_ALARM"].includes(code) : code === "THREAT";
  $$("[data-needs]", form).forEach((el) => {
    const need = el.dataset.needs;
    el.hidden = !(need === "any" ? (needsClass || override || withNote) : need === "THREAT" ? needsClass : need === "override" ? override : false);
    $$("select, input", el).forEach((c) => { c.disabled = el.hidden; });  // a hidden field sends nothing
  });
  if (!needsClass && !override && !withNote) { form.submit(); return; }
  $$("[data-verdict-hint]", form).forEach((el) => { el.textContent = override ? "you overrule the machine: pick a reason" : ""; });
  const first = needsClass ? form.elements.threat_class : override ? form.elements.reason_code : form.elements.note;
  first.focus();
}
function cancelChoice() {
  if (!form) return;
  form.elements.verdict.value = "";
  $$("[data-needs]", form).forEach((el) => { el.hidden = true; $$("select, input", el).forEach((c) => { c.disabled = true; }); });
  $$("[data-verdict]", form).forEach((b) => b.setAttribute("aria-pressed", "false"));
  document.activeElement.blur();
}
if (form) {
  $$("[data-verdict]", form).forEach((b) => b.addEventListener("click", (e) => choose(b.dataset.verdict, e.shiftKey)));
  form.addEventListener("submit", (e) => { if (!form.elements.verdict.value) e.preventDefault(); });
  form.addEventListener("keydown", (e) => { if (e.key === "Enter" && typing(e.target)) { e.preventDefault(); form.requestSubmit ? form.requestSubmit() : form.submit(); } });
}
if (grid && grid.hasAttribute("data-judging")) {  // hold the item's lock while the page is open
  const timer = $("[data-timer]");
  const shown = Date.now();
  setInterval(() => { if (timer) timer.textContent = `${Math.round((Date.now() - shown) / 1000)} s`; }, 1000);
  setInterval(() => post(`/items/${grid.dataset.item}/lock`), 30000);
  window.addEventListener("pagehide", () => { if (!form || !form.elements.verdict.value) post(`/items/${grid.dataset.item}/release`); });
}
const undo = $("[data-undo]");
if (undo) {
  const until = parseFloat(undo.dataset.until) * 1000;
  const tick = () => {
    const left = Math.round((until - Date.now()) / 1000);
    if (left <= 0) { undo.remove(); return; }
    $("[data-countdown]", undo).textContent = `${left} s`;
    setTimeout(tick, 500);
  };
  tick();
}

// ---- keys ----
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "Escape") { if (help.open) help.close(); else cancelChoice(); return; }
  if (typing(e.target)) return;  // keys are for the page, not for the field being typed in
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (e.key === "?") { help.open ? help.close() : help.showModal(); e.preventDefault(); return; }
  if (help.open) return;
  if (nav[key]) { location.href = nav[key]; return; }
  if (rows.length && (key === "j" || key === "ArrowDown")) { select(selected + 1); e.preventDefault(); return; }
  if (rows.length && (key === "k" || key === "ArrowUp")) { select(selected - 1); e.preventDefault(); return; }
  if (rows.length && key === "Enter") { location.href = rows[Math.max(0, selected)].dataset.href; return; }
  if (key === "u" && undo) { undo.submit(); return; }
  if (!grid) return;
  if (key === "+" || key === "=") { zoomBy(1); return; }
  if (key === "-") { zoomBy(-1); return; }
  if (key === "0") { zoomBy(0); return; }
  if (key === "b" && stage) { stage.classList.toggle("noboxes"); return; }
  const verdictKey = { c: "CLEARED", t: "THREAT", r: "REFERRED", f: "FALSE_ALARM" }[key];
  if (verdictKey && form) { e.preventDefault(); choose(verdictKey, e.shiftKey); return; }
  if (tools[key] && scan) { tools[key](); reload(); }
});
