// agenthost status page: renders the `view.snapshot` the service pushes as server-sent events (GET /api/stream).
// Data is only ever put into the page as text (textContent), never as HTML. Writes are POSTs of JSON carrying the
// token in the X-Agenthost-Token header (never in the URL), as the server requires.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const q = (path, extra) => path + "?" + new URLSearchParams({ ...(extra || {}), token }).toString();
let last = null; // the last snapshot
let receivedAt = 0; // performance.now() / 1000 when it arrived
let selectedThread = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replace(container, nodes, emptyText) {
  container.replaceChildren(...(nodes.length ? nodes : [el("p", { class: "empty" }, emptyText)]));
}

function clock(wall) {
  return new Date(wall * 1000).toLocaleTimeString([], { hour12: false });
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  return value < 1 ? Math.round(value * 1000) + " ms" : value.toFixed(value < 10 ? 2 : 1) + " s";
}

function uptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.floor(s % 60)} s` : `${Math.floor(s)} s`;
}

// --- countdowns: measured from the service's clock at the snapshot, advanced by the browser's own clock ---------
function remaining(nextAt) {
  return nextAt - last.now - (performance.now() / 1000 - receivedAt);
}

function tickCountdowns() {
  if (!last) return;
  for (const cell of document.querySelectorAll(".countdown[data-next-at]")) {
    const left = remaining(Number(cell.dataset.nextAt));
    cell.textContent = left > 0 ? `restart in ${left.toFixed(1)} s` : "restarting now";
  }
}

// --- sections -------------------------------------------------------------------------------------------------
function renderHeader(snap) {
  const status = snap.status, facts = status.service || {};
  const state = document.getElementById("host-state");
  state.textContent = "host " + status.state;
  state.className = "badge host-" + status.state;
  document.getElementById("host-cause").textContent = status.cause || "";
  document.getElementById("service-facts").textContent =
    `agenthost ${facts.version} · pid ${facts.pid} · up ${uptime(facts.uptime_s || 0)}`;
}

function renderWorkers(snap) {
  const rows = snap.status.workers.map((w) =>
    el("tr", { "data-worker": w.worker_id, "data-state": w.state },
      el("td", {}, String(w.worker_id)),
      el("td", {}, el("span", { class: "badge state state-" + w.state }, w.state)),
      el("td", { class: "pid mono" }, w.pid ?? "-"),
      el("td", { class: "generation" }, String(w.generation)),
      el("td", { class: "restarts" }, String(w.restarts) + (w.attempt ? ` (attempt ${w.attempt})` : "")),
      el("td", { class: "countdown", "data-next-at": w.next_restart_at ?? null }, "-"),
      el("td", { class: "last-exit" }, w.last_exit || "-")));
  document.querySelector("#workers tbody").replaceChildren(...rows);
  tickCountdowns();
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function plot(id, buckets, series, unit) {
  const target = document.getElementById(id);
  const W = 600, H = 140, top = 14, bottom = 18, left = 4, width = W - left - 4, height = H - top - bottom;
  const values = series.flatMap((s) => buckets.map((b) => b[s.key]).filter((v) => v !== null));
  const peak = Math.max(...values, 0) || 1;
  const step = width / buckets.length;
  const y = (v) => top + height - (v / peak) * height;
  const nodes = [
    svg("line", { x1: left, x2: W - 4, y1: top + height, y2: top + height, stroke: "#2a323c" }),
    svg("text", { x: left + 2, y: 11 }, values.length ? `max ${unit(peak)}` : ""),
    svg("text", { x: left + 2, y: H - 4 }, "-15 min"),
    svg("text", { x: W - 30, y: H - 4 }, "now"),
  ];
  if (!values.length) nodes.push(svg("text", { x: W / 2 - 70, y: H / 2 }, "no turn ended in 15 minutes"));
  for (const s of series) {
    if (s.bars) {
      buckets.forEach((b, i) => {
        if (b[s.key]) nodes.push(svg("rect", { class: "bar", x: left + i * step + 1, y: y(b[s.key]),
          width: Math.max(1, step - 2), height: top + height - y(b[s.key]) }));
      });
    } else {
      const points = buckets.map((b, i) => (b[s.key] === null ? null : `${left + (i + 0.5) * step},${y(b[s.key])}`));
      const runs = [[]];
      for (const p of points) (p === null ? runs.push([]) : runs[runs.length - 1].push(p));
      for (const run of runs.filter((r) => r.length)) {
        if (run.length === 1) {
          const [cx, cy] = run[0].split(",");
          nodes.push(svg("circle", { class: s.key === "p50_s" ? "p50" : "max", cx, cy, r: 2 }));
        } else nodes.push(svg("polyline", { class: s.key === "p50_s" ? "p50" : "max", points: run.join(" ") }));
      }
    }
  }
  target.replaceChildren(...nodes);
}

function renderPlots(snap) {
  const buckets = snap.series.buckets;
  plot("plot-rate", buckets, [{ key: "turns_per_s", bars: true }], (v) => v.toFixed(2) + "/s");
  plot("plot-latency", buckets, [{ key: "max_s" }, { key: "p50_s" }], seconds);
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Agenthost-Token": token },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(await response.text());
  return response.json();
}

function answer(approval, decision, card) {
  for (const button of card.querySelectorAll("button")) button.disabled = true;
  const note = card.querySelector(".result");
  note.textContent = "sending " + decision + "…";
  post("/api/approvals/answer", { approval_id: approval.approval_id, decision })
    .then(() => { note.textContent = decision + " sent"; })
    .catch((error) => {
      note.textContent = String(error.message || error);
      note.className = "result error";
      for (const button of card.querySelectorAll("button")) button.disabled = false;
    });
}

function renderApprovals(snap) {
  const container = document.getElementById("approvals");
  const known = new Map([...container.querySelectorAll("[data-approval]")].map((n) => [n.dataset.approval, n]));
  const cards = snap.approvals.map((a) => {
    if (known.has(a.approval_id)) return known.get(a.approval_id); // keep its buttons' state
    const card = el("div", { class: "card approval", "data-approval": a.approval_id, "data-turn": a.turn_id },
      el("div", {}, el("strong", {}, a.method), " ", el("code", {}, a.command || "")),
      el("div", { class: "meta" }, `turn ${a.turn_id} · thread ${a.thread_id}` + (a.reason ? ` · ${a.reason}` : "")));
    const accept = el("button", { class: "accept", "data-decision": "accept" }, "Accept");
    const decline = el("button", { class: "decline", "data-decision": "decline" }, "Decline");
    accept.addEventListener("click", () => answer(a, "accept", card));
    decline.addEventListener("click", () => answer(a, "decline", card));
    card.append(el("div", {}, accept, decline, el("span", { class: "result" })));
    return card;
  });
  replace(container, cards, "No approval is waiting.");
}

function renderActive(snap) {
  // a card per turn, kept while the turn runs (its Interrupt button stays clickable); only its text changes
  const container = document.getElementById("active");
  const known = new Map([...container.querySelectorAll(".turn[data-turn]")].map((n) => [n.dataset.turn, n]));
  const cards = snap.active.map((t) => {
    let card = known.get(t.turn_id);
    if (!card) {
      const stop = el("button", { class: "interrupt" }, "Interrupt");
      stop.addEventListener("click", () => {
        stop.disabled = true;
        post("/api/turns/interrupt", { turn_id: t.turn_id }).catch(() => { stop.disabled = false; });
      });
      card = el("div", { class: "card turn", "data-turn": t.turn_id },
        el("div", {}, el("strong", { class: "mono" }, t.turn_id), " ", el("span", { class: "badge phase" }), " ", stop),
        el("div", { class: "meta" }), el("pre", { class: "stream" }));
    }
    card.dataset.phase = t.phase;
    card.querySelector(".phase").textContent = t.phase;
    card.querySelector(".meta").textContent = `thread ${t.thread_id} · worker ${t.worker_id ?? "-"}` +
      (t.pending_approvals.length ? ` · waiting on ${t.pending_approvals.length} approval(s)` : "");
    const stream = card.querySelector(".stream");
    const text = t.text === null ? "(its stream is not followed by this service run)" : t.text || "…";
    if (stream.textContent !== text) {
      const atBottom = stream.scrollTop + stream.clientHeight >= stream.scrollHeight - 4;
      stream.textContent = text;
      if (atBottom) stream.scrollTop = stream.scrollHeight; // follow the stream unless the reader scrolled up
    }
    return card;
  });
  replace(container, cards, "No turn is running.");
}

function renderRecent(snap) {
  const rows = snap.recent.map((t) =>
    el("tr", { "data-turn": t.turn_id },
      el("td", {}, clock(t.wall)), el("td", { class: "mono" }, t.turn_id), el("td", { class: "mono" }, t.thread_id),
      el("td", {}, el("span", { class: "badge status status-" + t.status }, t.status)),
      el("td", {}, seconds(t.seconds))));
  document.querySelector("#recent tbody").replaceChildren(...rows);
}

function renderTimeline(snap) {
  const items = snap.decisions.map((d) =>
    el("li", { "data-decision": d.decision, "data-child": d.child },
      el("span", { class: "when" }, clock(d.wall)),
      el("span", { class: "badge d-" + d.decision }, d.decision), " ",
      el("strong", {}, `${d.supervisor} → ${d.child}`), " ",
      d.reason,
      d.attempt ? el("span", { class: "meta" }, ` · attempt ${d.attempt}`) : null,
      d.delay_s ? el("span", { class: "meta" }, ` · after ${seconds(d.delay_s)}`) : null));
  replace(document.getElementById("timeline"), items, "No decision yet.");
}

function renderFollowups(snap) {
  const blocks = Object.entries(snap.followups).map(([thread, rows]) =>
    el("div", { class: "card", "data-thread": thread },
      el("div", { class: "meta" }, "thread " + thread),
      el("ol", {}, ...rows.map((r) => el("li", { "data-followup": r.followup_id },
        el("span", { class: "badge" }, r.state), " ", r.text, r.last_error ? el("span", { class: "error" }, " " + r.last_error) : null)))));
  replace(document.getElementById("followups"), blocks, "No follow-up is queued.");
}

function loadTranscript(threadId) {
  selectedThread = threadId;
  for (const li of document.querySelectorAll("#threads li")) li.classList.toggle("selected", li.dataset.thread === threadId);
  fetch(q("/api/transcript", { thread_id: threadId }))
    .then((r) => (r.ok ? r.json() : r.text().then((t) => Promise.reject(new Error(t)))))
    .then((body) => {
      // the machine-readable markers and trailers are HTML comments: a rendered Markdown view hides them too
      const readable = body.text.split("\n").filter((line) => !/^<!-- .* -->$/.test(line.trim()));
      document.getElementById("transcript").textContent = readable.join("\n").replace(/\n{3,}/g, "\n\n");
    })
    .catch((error) => { document.getElementById("transcript").textContent = String(error.message || error); });
}

let threadsShown = "";

function renderThreads(snap) {
  document.getElementById("thread-count").textContent = `(${snap.thread_count})`;
  const signature = JSON.stringify(snap.threads.map((t) => [t.thread_id, t.title]));
  if (signature === threadsShown) return; // unchanged: keep the list (and a click in progress) as it is
  threadsShown = signature;
  const items = [...snap.threads].reverse().map((t) =>
    el("li", { "data-thread": t.thread_id, class: t.thread_id === selectedThread ? "selected" : null,
      on: { click: () => loadTranscript(t.thread_id) } },
      t.title || "(untitled)", " ", el("span", { class: "meta mono" }, t.thread_id)));
  replace(document.getElementById("threads"), items, "No thread yet.");
}

function render(snap) {
  last = snap;
  receivedAt = performance.now() / 1000;
  renderHeader(snap);
  renderWorkers(snap);
  renderPlots(snap);
  renderApprovals(snap);
  renderActive(snap);
  renderRecent(snap);
  renderTimeline(snap);
  renderFollowups(snap);
  renderThreads(snap);
}

function connection(state, text) {
  const badge = document.getElementById("connection");
  badge.textContent = text;
  badge.className = "badge conn-" + state;
}

// EventSource reconnects by itself after a dropped connection, but not after a refused one (the service was
// draining, or restarted with a new token): then try again every few seconds, and say so.
function connect() {
  const stream = new EventSource(q("/api/stream"));
  stream.addEventListener("snapshot", (event) => {
    connection("live", "live");
    render(JSON.parse(event.data));
  });
  stream.addEventListener("failure", (event) => connection("lost", "service: " + JSON.parse(event.data).error));
  stream.addEventListener("error", () => {
    connection("lost", "reconnecting…");
    if (stream.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  });
}

connect();
setInterval(tickCountdowns, 100);
