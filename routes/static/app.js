// Switchboard web chat: posts messages as durable runs and follows them live.
// Every piece of text is inserted with textContent, never as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const log = document.getElementById("log");
const input = document.getElementById("input");
const form = document.getElementById("composer");
const errorBox = document.getElementById("error");
const HISTORY_KEY = "switchboard.history";
const HISTORY_LIMIT = 200;
const RUNNING = new Set(["queued", "in_progress", "requires_action"]);
// The approval prompt's instruction: "... Reply /approve K7QX2M or /deny K7QX2M."
const APPROVAL = /\/approve\s+([A-Za-z0-9]{4,16})\s+or\s+\/deny\s+\1(?![A-Za-z0-9])/;

function loadHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch { return []; }
}
function saveHistory(items) {
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items.slice(-HISTORY_LIMIT)));
}
function newMessageId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

// The code a reply asks the person to approve or deny, or null.
function approvalCode(text) {
  const match = APPROVAL.exec(text || "");
  return match ? match[1] : null;
}

// Approve / Deny buttons under a reply that asks for approval; each sends the command as the
// person's next message, exactly as if they had typed it.
function updateApproval(turn, reply, code) {
  let actions = turn.querySelector('[data-role="approval"]');
  if (code && turn.dataset.answered === code) code = null;  // pressed: gone for good
  if (!code) { if (actions) actions.remove(); return; }
  if (actions && actions.dataset.code === code) return;
  if (actions) actions.remove();
  actions = el("div", "approval");
  actions.dataset.role = "approval";
  actions.dataset.code = code;
  for (const [label, command, style] of [["Approve", "approve", "approve"], ["Deny", "deny", "deny"]]) {
    const button = el("button", style, label);
    button.type = "button";
    button.addEventListener("click", () => {
      turn.dataset.answered = code;
      actions.remove();
      send(`/${command} ${code}`);
    });
    actions.append(button);
  }
  reply.after(actions);
}

function renderTurn(item) {
  const turn = el("section", "turn");
  turn.dataset.messageId = item.id;
  turn.append(el("div", "bubble me", item.text));
  const reply = el("div", "bubble agent pending", "…");
  reply.dataset.role = "reply";
  const meta = el("div", "meta");
  turn.append(reply, meta);
  log.append(turn);
  log.scrollTop = log.scrollHeight;
  return turn;
}

function updateTurn(turn, state) {
  const reply = turn.querySelector('[data-role="reply"]');
  const meta = turn.querySelector(".meta");
  const status = state.status || "queued";
  let asking = null;
  if (state.output_text !== null && state.output_text !== undefined) {
    reply.textContent = state.output_text;
    reply.classList.remove("pending", "streaming");
    asking = approvalCode(state.output_text);
  } else if (state.action_text) {
    // A tool call waits for the person: the question is the reply until they answer.
    reply.textContent = state.action_text;
    reply.classList.remove("pending", "streaming");
    asking = approvalCode(state.action_text);
  } else if (state.partial_text) {
    // The reply grows as the agent produces it; "…" stays until the first words arrive.
    reply.textContent = state.partial_text;
    reply.classList.remove("pending");
    reply.classList.add("streaming");
  } else if (!RUNNING.has(status)) {
    reply.textContent = state.error || status;
  }
  updateApproval(turn, reply, asking);
  updateProgressNote(turn, reply, state.progress_note);
  meta.replaceChildren();
  meta.append(el("span", `status ${status}`, status.replace("_", " ")));
  meta.lastChild.dataset.role = "status";
  if (RUNNING.has(status)) {
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => cancelRun(turn.dataset.messageId));
    meta.append(cancel);
  }
  for (const d of state.deliveries || []) {
    meta.append(el("span", "delivery", `${d.destination}: ${d.state.replace("_", " ")}`));
  }
  if (state.ui_url) {
    const link = el("a", "", "Temporal");
    link.href = state.ui_url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    meta.append(link);
  }
}

function follow(turn) {
  const id = turn.dataset.messageId;
  const source = new EventSource(`/channels/web/runs/${encodeURIComponent(id)}/events`);
  source.addEventListener("run", (event) => updateTurn(turn, JSON.parse(event.data)));
  source.addEventListener("end", () => source.close());
  source.onerror = () => {
    source.close();
    setTimeout(() => refresh(turn), 2000);
  };
}

async function refresh(turn) {
  const id = turn.dataset.messageId;
  const resp = await fetch(`/channels/web/runs/${encodeURIComponent(id)}`, { credentials: "same-origin" });
  if (resp.status === 404) { updateTurn(turn, { status: "expired", error: "no longer available" }); return; }
  if (!resp.ok) return;
  const state = await resp.json();
  updateTurn(turn, state);
  if (RUNNING.has(state.status) || (state.deliveries || []).some((d) => d.state === "pending")) follow(turn);
}

async function cancelRun(id) {
  const resp = await fetch(`/channels/web/runs/${encodeURIComponent(id)}/cancel`, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
  });
  if (!resp.ok) showError(`Could not cancel (${resp.status}).`);
}

async function send(text) {
  const item = { id: newMessageId(), text };
  const turn = renderTurn(item);
  const body = JSON.stringify({ message_id: item.id, text });
  for (let attempt = 0; attempt < 5; attempt++) {
    let resp;
    try {
      resp = await fetch("/channels/web", {
        method: "POST", credentials: "same-origin", body,
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      });
    } catch {
      resp = null;
    }
    if (resp && resp.status === 202) {
      showError("");
      const history = loadHistory();
      history.push(item);
      saveHistory(history);
      follow(turn);
      return;
    }
    if (resp && resp.status !== 503) {
      const answer = await resp.json().catch(() => ({}));
      updateTurn(turn, { status: "failed", error: answer.error || `refused (${resp.status})` });
      return;
    }
    // 503 or network trouble: the same message id is retried, so it still runs once.
    await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
  }
  updateTurn(turn, { status: "failed", error: "the service is unavailable, try again" });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  send(text);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

for (const item of loadHistory()) refresh(renderTurn(item));
input.focus();

// A short line under the reply while a tool runs or waits for the person ("calling search…",
// "waiting for your approval"); it goes away when the run moves on.
function updateProgressNote(turn, reply, note) {
  let line = turn.querySelector('[data-role="progress"]');
  if (!note) { if (line) line.remove(); return; }
  if (!line) {
    line = el("div", "progress-note");
    line.dataset.role = "progress";
    reply.after(line);
  }
  line.textContent = note;
}
