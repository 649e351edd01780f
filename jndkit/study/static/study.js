// jndkit visibility study page: fetch the participant's plan, show each unanswered trial, post each answer
// as soon as it is given (the server writes it to the CSV before replying), resume after a closed tab.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pid: null, plan: null, queue: [], current: null, shownAt: 0, timer: null, answer: {} };
const BLOCK_TEXT = {
  flicker: ["Flicker test",
    "Two pictures flicker side by side. One side alternates between the photograph and an altered copy, the " +
    "other side between the photograph and itself. Choose the altered side (guess if you cannot tell), then say " +
    "whether you really saw a change. Keys: \u2190 / \u2192, Y / N, Enter."],
  rating: ["Rating",
    "The reference (original) is on the left, the test picture on the right. Rate how visible the impairment " +
    "of the test picture is: 5 imperceptible, 4 perceptible but not annoying, 3 slightly annoying, 2 annoying, " +
    "1 very annoying. Keys: 5 to 1."],
};

function show(id) {
  for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== id;
}

function showError(text, retry) {
  $("error-text").textContent = text;
  $("error").hidden = false;
  $("retry").hidden = !retry;
  $("retry").onclick = () => { $("error").hidden = true; retry(); };
}

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
                                      : `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function partOf(block) {
  return state.plan.trials.findIndex((t) => t.block === block) === 0 ? 1 : 2;
}

function progress() {
  const total = state.plan.trials.length;
  const done = total - state.queue.length;
  $("progress").hidden = false;
  const trial = state.queue[0];
  const where = trial ? `Part ${partOf(trial.block)} of 2 \u00b7 ${BLOCK_TEXT[trial.block][0]} \u00b7 ` : "";
  $("progress-text").textContent = `${where}${done} of ${total} answered`;
  $("progress-fill").style.width = `${(100 * done) / total}%`;
}

async function start(pid) {
  $("start-error").hidden = true;
  try {
    state.plan = await api(`api/plan/${encodeURIComponent(pid)}`);
  } catch (e) {
    $("start-error").textContent = e.message;
    $("start-error").hidden = false;
    return;
  }
  state.pid = pid;
  const url = new URL(window.location.href);
  url.searchParams.set("participant", pid);
  window.history.replaceState(null, "", url);
  const answered = new Set(state.plan.answered);
  state.queue = state.plan.trials.filter((t) => !answered.has(t.index));
  next(null);
}

function next(previousBlock) {
  progress();
  if (state.queue.length === 0) {
    show("screen-done");
    document.body.dataset.done = "1";
    $("done-text").textContent = `All ${state.plan.trials.length} answers are saved. You can close this page.`;
    return;
  }
  const trial = state.queue[0];
  if (trial.block !== previousBlock) {
    const [title, text] = BLOCK_TEXT[trial.block];
    $("block-title").textContent = `Part ${partOf(trial.block)}: ${title}`;
    $("block-text").textContent = text;
    show("screen-block");
    $("block-go").onclick = () => runTrial(trial);
    $("block-go").focus();
    return;
  }
  runTrial(trial);
}

function pictureUrl(trial, slot) {
  return `api/picture/${encodeURIComponent(state.pid)}/${trial.index}/${slot}`;
}

async function loadImages(imgs, slots, trial) {
  // every picture is loaded and decoded before the trial is shown, so the flicker shows no loading artefact
  await Promise.all(imgs.map((img, i) => {
    img.src = pictureUrl(trial, slots[i]);
    return img.decode();
  }));
}

function scaleNote(el, img) {
  const pct = Math.round((100 * img.clientWidth) / img.naturalWidth);
  el.textContent = pct >= 100 ? `shown at 100 % (${img.naturalWidth} \u00d7 ${img.naturalHeight} pixels)`
    : `shown at ${pct} % of ${img.naturalWidth} \u00d7 ${img.naturalHeight} pixels (a larger window shows more)`;
}

async function runTrial(trial) {
  state.current = null; // answers count only once the pictures are on screen
  delete document.body.dataset.trial;
  state.answer = {};
  clearInterval(state.timer);
  for (const b of document.querySelectorAll("button.choice, .grades button")) b.classList.remove("selected");
  try {
    if (trial.block === "flicker") {
      const left = [...$("flicker-left").querySelectorAll("img")];
      const right = [...$("flicker-right").querySelectorAll("img")];
      await loadImages([...left, ...right], ["L0", "L1", "R0", "R1"], trial);
      $("flicker-next").disabled = true;
      show("screen-flicker");
      scaleNote($("flicker-scale"), left[0]);
      let frame = 0;
      const tops = [left[1], right[1]];
      const flip = () => { frame = 1 - frame; for (const img of tops) img.classList.toggle("off", frame === 0); };
      for (const img of tops) img.classList.add("off");
      state.timer = setInterval(flip, state.plan.flicker_ms);
    } else {
      const imgs = [$("rating-ref").querySelector("img"), $("rating-test").querySelector("img")];
      await loadImages(imgs, ["ref", "test"], trial);
      show("screen-rating");
      scaleNote($("rating-scale"), imgs[0]);
    }
  } catch (e) {
    showError(`Could not load the pictures of trial ${trial.index + 1}: ${e.message}`, () => runTrial(trial));
    return;
  }
  state.shownAt = performance.now();
  state.current = trial;
  document.body.dataset.trial = String(trial.index); // the trial on screen (for scripted tests)
}

async function submit(extra) {
  const trial = state.current;
  if (!trial) return;
  const body = { participant: state.pid, trial: trial.index,
                 response_ms: Math.round(performance.now() - state.shownAt), ...extra };
  state.current = null; // no second answer while this one is being saved
  try {
    await api("api/answer", { method: "POST", headers: { "Content-Type": "application/json" },
                              body: JSON.stringify(body) });
  } catch (e) {
    if (e.status !== 409) { // 409: already saved (sent twice); anything else: keep the trial and let them retry
      state.current = trial;
      showError(`Your answer was not saved: ${e.message}`, () => submit(extra));
      return;
    }
  }
  clearInterval(state.timer);
  $("error").hidden = true;
  state.queue.shift();
  next(trial.block);
}

function chooseFlicker(key, value) {
  if (!state.current || state.current.block !== "flicker") return;
  state.answer[key] = value;
  for (const b of document.querySelectorAll(`button[data-${key === "side" ? "side" : "saw"}]`)) {
    b.classList.toggle("selected", b.dataset[key === "side" ? "side" : "saw"] === value);
  }
  $("flicker-next").disabled = !(state.answer.side && state.answer.saw_change);
}

function flickerNext() {
  if ($("flicker-next").disabled || !state.current) return;
  submit({ side: state.answer.side, saw_change: state.answer.saw_change });
}

function rate(value) {
  if (!state.current || state.current.block !== "rating") return;
  for (const b of document.querySelectorAll(".grades button")) {
    b.classList.toggle("selected", b.dataset.rating === String(value));
  }
  submit({ rating: value });
}

document.addEventListener("DOMContentLoaded", () => {
  const pid = new URL(window.location.href).searchParams.get("participant");
  if (pid) $("participant").value = pid;
  $("start-form").addEventListener("submit", (ev) => { ev.preventDefault(); start($("participant").value.trim()); });
  for (const b of document.querySelectorAll("button[data-side]")) b.onclick = () => chooseFlicker("side", b.dataset.side);
  for (const b of document.querySelectorAll("button[data-saw]")) b.onclick = () => chooseFlicker("saw_change", b.dataset.saw);
  $("flicker-next").onclick = flickerNext;
  for (const b of document.querySelectorAll(".grades button")) b.onclick = () => rate(Number(b.dataset.rating));
  document.addEventListener("keydown", (ev) => {
    if (!state.current) return;
    const k = ev.key.toLowerCase();
    if (state.current.block === "flicker") {
      if (k === "arrowleft") chooseFlicker("side", "left");
      else if (k === "arrowright") chooseFlicker("side", "right");
      else if (k === "y") chooseFlicker("saw_change", "yes");
      else if (k === "n") chooseFlicker("saw_change", "no");
      else if (k === "enter") flickerNext();
    } else if (state.current.block === "rating" && "12345".includes(k) && k.length === 1) {
      rate(Number(k));
    }
  });
});
