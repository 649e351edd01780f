// jndkit serve: the page. Uploads one photo per request, polls /api/jobs, shows each result.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const cards = new Map();          // job id (or local upload key) -> card element
let config = { max_upload_bytes: 50e6, image_suffixes: [".png", ".jpg", ".jpeg"] };
let uploading = 0;
let polling = false;

const STATUS_TEXT = {
  uploading: "uploading", queued: "waiting", running: "protecting", protected: "protected",
  failed: "not protected", "no-face": "no face found", error: "error", rejected: "refused",
};

function mb(n) { return n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : (n / 1e3).toFixed(0) + " kB"; }

function task() { return document.querySelector("input[name=task]:checked").value; }

async function init() {
  try { config = await (await fetch("/api/config")).json(); } catch (e) { /* keep the defaults */ }
  $("#limit").textContent = `Up to ${mb(config.max_upload_bytes)} per photo. ` +
    "Faces: every face is protected against a face recogniser (dlib); photos: against image classifiers.";
  for (const r of document.querySelectorAll("input[name=task]")) r.addEventListener("change", syncTask);
  syncTask();
  $("#files").addEventListener("change", (e) => { send(named(e.target.files, false)); e.target.value = ""; });
  $("#folder").addEventListener("change", (e) => { send(named(e.target.files, true)); e.target.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    send(await dropped(e.dataTransfer));
  });
  poll();  // jobs of an earlier visit of this page, if the server still has them
}

function syncTask() { $("#strength-box").disabled = task() !== "photo"; }

// Files found inside a folder are kept only with an image suffix and outside hidden folders
// (as `jndkit protect FOLDER` does); files chosen one by one are always sent, so a bad one gets its reason.
function imageInFolder(path) {
  const parts = path.split("/");
  if (parts.some((p) => p.startsWith("."))) return false;
  const dot = path.lastIndexOf(".");
  return dot >= 0 && config.image_suffixes.includes(path.slice(dot).toLowerCase());
}

function named(files, fromFolder) {
  const out = [];
  for (const f of files) {
    const name = f.webkitRelativePath || f.name;
    if (!fromFolder || imageInFolder(name)) out.push({ file: f, name });
  }
  return out;
}

async function dropped(dt) {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return named(dt.files, false);
  const out = [];
  async function walk(entry, inFolder) {
    if (entry.isFile) {
      const file = await new Promise((ok, ko) => entry.file(ok, ko));
      const name = entry.fullPath.replace(/^\//, "");
      if (!inFolder || imageInFolder(name)) out.push({ file, name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, ko) => reader.readEntries(ok, ko));
        if (!batch.length) break;
        for (const child of batch) await walk(child, true);
      }
    }
  }
  for (const e of entries) await walk(e, false);
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

async function send(items) {
  const t = task();
  const strength = $("#strength").value;
  for (const { file, name } of items) {
    const key = "up-" + Math.random().toString(16).slice(2);
    const card = makeCard(key, name);
    setStatus(card, "uploading");
    if (file.size > config.max_upload_bytes) {  // the server would answer 413 with the same line
      refuse(card, `${name}: ${mb(file.size)} is over this server's upload limit of ` +
        `${mb(config.max_upload_bytes)} (jndkit serve --max-upload-mb)`);
      continue;
    }
    const form = new FormData();
    form.append("name", name);
    form.append("task", t);
    form.append("strength", strength);
    form.append("file", file, "upload");
    uploading++;
    try {
      const res = await fetch("/api/photos?name=" + encodeURIComponent(name), { method: "POST", body: form });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) { refuse(card, body.detail || `${name}: upload refused (HTTP ${res.status})`); continue; }
      cards.delete(key);
      const polled = cards.get(body.id);  // the poll may have seen the job before this answer came
      if (polled) { card.replaceWith(polled); } else { card.dataset.id = body.id; cards.set(body.id, card); }
      update(body);
    } catch (e) {
      refuse(card, `${name}: upload failed (${e})`);
    } finally {
      uploading--;
    }
    poll();
  }
}

function refuse(card, message) {
  setStatus(card, "rejected");
  const err = $(".message", card);
  err.textContent = message;
  err.hidden = false;
  $("progress", card).hidden = true;
}

async function poll() {
  if (polling) return;
  polling = true;
  try {
    for (;;) {
      const res = await fetch("/api/jobs", { cache: "no-store" });
      const body = await res.json();
      for (const job of body.jobs) update(job);
      summary();
      if (!body.pending && !uploading) break;
      await new Promise((ok) => setTimeout(ok, 700));
    }
  } catch (e) {
    $("#counts").textContent = `lost contact with the server (${e}); reload the page once it runs again`;
  } finally {
    polling = false;
  }
}

// counted from the cards, so photos still uploading and uploads the server refused count too
function summary() {
  const states = [...document.querySelectorAll("#jobs .card")].map((c) => c.dataset.status);
  const done = states.filter((s) => s === "protected").length;
  const pending = states.filter((s) => ["uploading", "queued", "running"].includes(s)).length;
  const other = states.length - done - pending;
  $("#summary").hidden = states.length === 0;
  $("#counts").textContent = `${done} of ${states.length} photo${states.length === 1 ? "" : "s"} protected` +
    (pending ? `, ${pending} in progress` : "") + (other ? `, ${other} not protected or refused` : "");
  $("#zip").hidden = done === 0;
}

function makeCard(key, name) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = name;
  $("#jobs").append(card);
  cards.set(key, card);
  wireViewer(card);
  return card;
}

function setStatus(card, status) {
  const badge = $(".badge", card);
  badge.className = "badge " + status;
  badge.textContent = STATUS_TEXT[status] || status;
  card.dataset.status = status;
  summary();
}

function update(job) {
  const card = cards.get(job.id) || makeCard(job.id, job.name);
  card.dataset.id = job.id;
  setStatus(card, job.status);
  const bar = $("progress", card);
  const running = job.status === "running" || job.status === "queued";
  bar.hidden = !running;
  if (job.status === "running" && job.limit) bar.value = Math.min(1, job.step / job.limit);
  else if (job.status === "running") bar.removeAttribute("value");
  $(".info", card).textContent = running
    ? (job.status === "running" ? (job.limit ? `iteration ${job.step} of at most ${job.limit}` : "starting") : "waiting for the worker")
    : (job.seconds != null ? `${job.seconds.toFixed(1)} s` : "");
  const err = $(".message", card);
  err.textContent = job.error || "";
  err.hidden = !job.error;
  const dl = $(".download", card);
  if (job.links.download) {
    dl.href = job.links.download;
    dl.setAttribute("download", job.download_name.split("/").pop());
    dl.textContent = "Download " + job.download_name;
    dl.hidden = false;
  }
  if (!running && job.links.original && !card.dataset.shown) showResult(card, job);
}

function showResult(card, job) {
  card.dataset.shown = "1";
  const res = $(".result", card);
  $(".orig", card).src = job.links.original;
  const prot = $(".prot", card);
  prot.dataset.protected = job.links.protected || "";
  prot.dataset.original = job.links.original;
  if (job.links.protected) prot.src = job.links.protected;
  else { prot.closest("figure").hidden = true; $(".flicker", card).hidden = true; $(".hint", card).hidden = true; }
  if (job.links.difference) $(".diff", card).src = job.links.difference;
  else $(".diff", card).closest("figure").hidden = true;
  const r = job.record || {};
  const bits = [];
  if (r.width) bits.push(`${r.width}×${r.height}`);
  if (r.psnr != null) bits.push(`PSNR ${r.psnr.toFixed(1)} dB`);
  if (r.ssim != null) bits.push(`SSIM ${r.ssim.toFixed(4)}`);
  if (r.above_jnd != null) bits.push(`${(100 * r.above_jnd).toFixed(2)} % of pixels above the human JND`);
  if (r.strength != null) bits.push(`budget ${r.strength}× JND`);
  if (r.psnr_faces != null) bits.push(`faces PSNR ${r.psnr_faces.toFixed(1)} dB`);
  if (r.protection && !r.matrix) bits.push(r.protection);  // the matrix carries it otherwise
  $(".numbers", card).textContent = bits.join(" · ");
  const mx = $(".matrix", card);
  if (r.matrix) mx.append(matrixTable(r.matrix));
  else if (r.faces && r.faces.length) mx.append(facesTable(r.faces));
  res.hidden = false;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// green: top-1 changed and the clean class out of the top-5; amber: top-1 changed only; red: recognised
function matrixTable(m) {
  const wrap = el("div");
  const t = el("table", null, "mx");
  const head = el("tr");
  head.append(el("th", "model"), el("th", "saw in the original"));
  for (const tr of m.transforms) head.append(el("th", tr === "saved" ? "saved file" : "after " + tr));
  t.append(head);
  const cells = new Map(m.cells.map((c) => [c.model + "\u0000" + c.transform, c]));
  for (const model of m.models) {
    const row = el("tr");
    const first = cells.get(model + "\u0000" + m.transforms[0]);
    row.append(el("th", model), el("td", first ? first.clean_label : "?"));
    for (const tr of m.transforms) {
      const c = cells.get(model + "\u0000" + tr);
      const td = el("td", `${c.label} ${c.confidence.toFixed(2)}`,
        c.changed && !c.in_top5 ? "hid" : (c.changed ? "chg" : "rec"));
      td.title = `clean class ${c.clean_label}: ${c.clean_prob.toFixed(3)}`;
      row.append(td);
    }
    t.append(row);
  }
  wrap.append(t, el("div", `${m.summary || ""} (upload suite ${m.suite}). Green: the answer changed and the ` +
    "original class left the top-5; amber: the answer changed only; red: still recognised.", "legend"));
  return wrap;
}

function facesTable(faces) {
  const wrap = el("div");
  const t = el("table", null, "mx");
  const head = el("tr");
  for (const h of ["face", "distance before", "distance after (same person < 0.6)", "found again", "verdict"]) head.append(el("th", h));
  t.append(head);
  faces.forEach((f, i) => {
    const row = el("tr");
    row.append(el("th", `#${i + 1}`), el("td", f.distance_before != null ? f.distance_before.toFixed(3) : "–"),
      el("td", f.distance_after != null ? f.distance_after.toFixed(3) : "–"),
      el("td", f.detected_after ? "yes" : "no"),
      el("td", f.protected ? "not recognised" : "still recognised", f.protected ? "hid" : "rec"));
    t.append(row);
  });
  wrap.append(t, el("div", "checked on the saved file: faces detected, aligned and compared again from scratch", "legend"));
  return wrap;
}

function wireViewer(card) {
  const views = [...card.querySelectorAll(".view")];
  const zoom = $(".zoom", card);
  zoom.addEventListener("input", () => {
    const z = Number(zoom.value);
    $(".zoomv", card).textContent = z + "×";
    for (const v of views) $("img", v).style.width = 100 * z + "%";
  });
  let syncing = false;  // scroll the three views together
  for (const v of views) {
    v.addEventListener("scroll", () => {
      if (syncing) return;
      syncing = true;
      for (const o of views) if (o !== v) { o.scrollLeft = v.scrollLeft; o.scrollTop = v.scrollTop; }
      requestAnimationFrame(() => { syncing = false; });
    });
  }
  const btn = $(".flicker", card);
  let timer = null;
  btn.addEventListener("click", () => {
    const prot = $(".prot", card);
    const cap = $(".pcap", card);
    if (timer) {
      clearInterval(timer);
      timer = null;
      prot.src = prot.dataset.protected;
      cap.textContent = "protected";
      cap.classList.remove("showing-original");
      btn.setAttribute("aria-pressed", "false");
      return;
    }
    btn.setAttribute("aria-pressed", "true");
    let showOriginal = false;
    timer = setInterval(() => {
      showOriginal = !showOriginal;
      prot.src = showOriginal ? prot.dataset.original : prot.dataset.protected;
      cap.textContent = showOriginal ? "original (flicker)" : "protected (flicker)";
      cap.classList.toggle("showing-original", showOriginal);
    }, 500);
  });
}

document.addEventListener("DOMContentLoaded", init);
