// buildlm chat page. No framework, no build step: read top to bottom.
//
// 1. Chat: POST /v1/chat/completions with "stream": true. The answer is a stream of
//    server-sent events ("data: {json}\n\n" ... "data: [DONE]\n\n"); fetch gives us the body
//    as a ReadableStream of bytes, which we decode and split at blank lines. Each chunk's
//    choices[0].delta.content is appended to the reply as it arrives.
//    A small model's context (128 tokens) fills in a few turns, so the page asks the server to
//    leave out the oldest turns that do not fit ("trim_history": true, a buildlm extension; the
//    server also caps max_tokens at the room left). The response's X-Dropped-Messages header
//    (there before any of the body, so even a reply stopped at once has it) says how many
//    messages were left out: the page stops sending those, greys them out, and says so in one
//    quiet line above the input. "New chat" aborts a reply still streaming and throws it away.
// 2. Tokens: POST /v1/tokenize shows how text splits into tokens; the conversation as the model
//    reads it: the turns still sent, at most the context's worth of tokens.
// 3. Attention: POST /v1/attention returns one head's (T x T) weights, drawn on a <canvas>.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  model: null,          // the id from GET /v1/models
  messages: [],         // the conversation: {role, content}
  elements: [],         // the page's bubble of each message, in the same order
  skip: 0,              // how many of them the server left out to fit the context
  chat: 0,              // which conversation this is: "New chat" counts up, so a reply still
                        // streaming for an older one knows to throw itself away
  contextLength: null,  // the model's context, from GET /v1/models
  lastReply: "",
  controller: null,     // AbortController of the reply being streamed
  attention: null,      // the last /v1/attention answer
};

// --- talking to the server -------------------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch {
    return "HTTP " + response.status;
  }
}

async function postJSON(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// Yield each parsed JSON event of a server-sent-event stream until "[DONE]".
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

// --- the chat --------------------------------------------------------------------------------

function scrollToBottom() {
  $("messages").scrollTop = $("messages").scrollHeight;
}

function addMessage(role, text) {
  $("empty-hint")?.remove();
  const div = document.createElement("div");
  div.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  $("messages").append(div);
  scrollToBottom();
  return div;
}

// What the model reads: the system message and the turns the server has not left out.
function conversation() {
  const system = $("system").value.trim();
  return (system ? [{ role: "system", content: system }] : []).concat(state.messages.slice(state.skip));
}

// The server left the oldest `dropped` of the messages we sent out: stop sending them, grey
// them out, and say so in one line above the input, where it stays in view as the chat scrolls.
function noteDropped(dropped) {
  if (!(dropped > 0)) return;
  for (const el of state.elements.slice(state.skip, state.skip + dropped)) {
    el.classList.add("dropped");
    el.title = "left out: no longer sent to the model";
  }
  state.skip += dropped;
  let note = $("trim-note");
  if (!note) {
    note = document.createElement("p");
    note.id = "trim-note";
    note.className = "note";
    $("chat-panel").insertBefore(note, $("composer"));
  }
  note.textContent = `Older turns (greyed out) are left out to fit the model's ` +
    `${state.contextLength}-token context.`;
}

function samplingSettings() {
  const settings = {
    temperature: parseFloat($("temperature").value),
    top_p: parseFloat($("top-p").value),
    max_tokens: parseInt($("max-tokens").value, 10) || 64,
  };
  const seed = $("seed").value.trim();
  if (seed !== "") settings.seed = parseInt(seed, 10);
  return settings;
}

async function send(text) {
  const chat = state.chat;
  const current = () => chat === state.chat; // false once "New chat" was pressed
  state.messages.push({ role: "user", content: text });
  state.elements.push(addMessage("user", text));
  const bubble = addMessage("assistant", "");
  bubble.classList.add("streaming");
  bubble.dataset.chunks = "0";
  const textEl = bubble.querySelector(".text");
  const controller = new AbortController();
  state.controller = controller;
  $("send").disabled = true;
  $("stop").disabled = false;
  setStatus("generating…");
  let reply = "";
  let finish = null;
  let failed = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: state.model, messages: conversation(), stream: true, trim_history: true,
        ...samplingSettings(),
      }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    if (current()) noteDropped(parseInt(response.headers.get("X-Dropped-Messages") || "0", 10));
    for await (const chunk of readEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        textEl.textContent = reply;
        bubble.dataset.chunks = String(Number(bubble.dataset.chunks) + 1);
        scrollToBottom();
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    if (current()) setStatus("");
  } catch (err) {
    if (!current()) {
      // "New chat" aborted it: the reply belongs to a conversation that is gone.
    } else if (err.name === "AbortError") {
      finish = "stopped";
      setStatus("stopped");
    } else {
      failed = true;
      bubble.classList.add("error");
      textEl.textContent = reply + (reply ? "\n" : "") + "error: " + err.message;
      setStatus(err.message, true);
    }
  } finally {
    bubble.classList.remove("streaming");
    const note = document.createElement("span");
    note.className = "finish";
    note.textContent = finish ? "finish: " + finish : "";
    bubble.append(note);
    bubble.dataset.done = "true";
    if (current()) {
      scrollToBottom(); // the finish line made the bubble taller
      $("send").disabled = false;
      $("stop").disabled = true;
      state.controller = null;
    }
  }
  if (!current()) return; // thrown away: nothing of it joins the new conversation
  if (failed) {
    state.messages.pop(); // a question that got no answer is not part of the conversation
    state.elements.pop();
  } else {
    state.messages.push({ role: "assistant", content: reply });
    state.elements.push(bubble);
  }
  state.lastReply = reply;
  await Promise.allSettled([showTokens(), showAttention()]);
}

// --- tokens ----------------------------------------------------------------------------------

function visible(text) {
  // Make whitespace visible: a token's leading space matters (" the" is not "the").
  return text.replace(/\n/g, "↵").replace(/\t/g, "→").replace(/ /g, "·");
}

// The conversation view shows what the model reads: only the turns still sent (state.skip), and
// at most the context's worth of tokens, the last ones (a reply and the end-of-turn markup after
// it can take the rendered conversation a few tokens past the context).
async function showTokens() {
  const source = $("token-source").value;
  const request = { model: state.model };
  if (source === "conversation") {
    if (!state.messages.length) return;
    request.messages = conversation();
  } else {
    request.text = source === "draft" ? $("prompt").value : state.lastReply;
  }
  const box = $("tokens");
  const chat = state.chat;
  try {
    const answer = await postJSON("/v1/tokenize", request);
    if (chat !== state.chat) return; // "New chat" was pressed meanwhile
    let tokens = answer.tokens;
    let label = answer.count + " tokens";
    const context = state.contextLength;
    if (source === "conversation" && context && answer.count > context) {
      tokens = tokens.length === answer.count ? tokens.slice(-context) : tokens.slice(0, context);
      label = `${tokens.length} tokens (the last of ${answer.count}: as many as the context holds)`;
    }
    box.replaceChildren();
    for (const tok of tokens) {
      const span = document.createElement("span");
      span.className = "tok" + (tok.special ? " special" : "");
      span.textContent = visible(tok.text);
      span.title = "id " + tok.id;
      box.append(span);
    }
    $("token-count").textContent = label;
    box.dataset.count = String(tokens.length);
  } catch (err) {
    box.textContent = "error: " + err.message;
  }
}

// --- attention heatmap -----------------------------------------------------------------------

async function showAttention() {
  if (!state.messages.length) return;
  const chat = state.chat;
  try {
    const a = await postJSON("/v1/attention", {
      model: state.model,
      messages: conversation(),
      layer: parseInt($("layer").value || "0", 10),
      head: parseInt($("head").value || "0", 10),
    });
    if (chat !== state.chat) return; // "New chat" was pressed meanwhile
    state.attention = a;
    $("attention-note").textContent =
      a.tokens.length + " tokens" + (a.truncated ? " (the last ones: the conversation is longer)" : "");
    drawHeatmap();
  } catch (err) {
    if (chat === state.chat) $("attention-note").textContent = "error: " + err.message;
  }
}

const LABELS = 54; // room for token labels left and top, when the cells are big enough for text

function heatmapLayout(canvas, n) {
  const labelled = (canvas.width - LABELS) / n >= 9;
  const margin = labelled ? LABELS : 0;
  return { labelled, margin, size: canvas.width - margin, cell: (canvas.width - margin) / n };
}

function drawHeatmap() {
  const a = state.attention;
  const canvas = $("heatmap");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!a) return;
  const n = a.tokens.length;
  const { labelled, margin: MARGIN, size, cell } = heatmapLayout(canvas, n);
  for (let q = 0; q < n; q++) {
    for (let k = 0; k <= q; k++) {
      // sqrt spreads the small weights out so a learner sees more than the one biggest cell.
      const w = Math.sqrt(a.weights[q][k]);
      const shade = Math.round(255 * (1 - w));
      ctx.fillStyle = `rgb(${Math.round(shade * 0.9)}, ${Math.round(shade * 0.95)}, 255)`;
      ctx.fillRect(MARGIN + k * cell, MARGIN + q * cell, Math.ceil(cell), Math.ceil(cell));
    }
  }
  ctx.strokeStyle = "#dde1e8";
  ctx.strokeRect(MARGIN, MARGIN, size, size);
  if (labelled) {
    ctx.fillStyle = "#1d2330";
    ctx.font = `${Math.min(12, Math.floor(cell) - 1)}px ui-monospace, monospace`;
    ctx.textBaseline = "middle";
    for (let i = 0; i < n; i++) {
      const label = visible(a.tokens[i].text).slice(0, 6);
      ctx.textAlign = "right";
      ctx.fillText(label, MARGIN - 4, MARGIN + (i + 0.5) * cell);
      ctx.save();
      ctx.translate(MARGIN + (i + 0.5) * cell, MARGIN - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
  }
  canvas.dataset.drawn = "true";
  canvas.dataset.tokens = String(n);
}

$("heatmap").addEventListener("mousemove", (event) => {
  const a = state.attention;
  if (!a) return;
  const canvas = $("heatmap");
  const rect = canvas.getBoundingClientRect();
  const scale = canvas.width / rect.width;
  const { margin, cell } = heatmapLayout(canvas, a.tokens.length);
  const x = (event.clientX - rect.left) * scale - margin;
  const y = (event.clientY - rect.top) * scale - margin;
  const q = Math.floor(y / cell), k = Math.floor(x / cell);
  if (q < 0 || k < 0 || q >= a.tokens.length || k >= a.tokens.length) return;
  $("heat-info").textContent =
    `query ${q} "${visible(a.tokens[q].text)}" → key ${k} "${visible(a.tokens[k].text)}": ` +
    `weight ${a.weights[q][k].toFixed(4)} (layer ${a.layer}, head ${a.head})`;
});

// --- wiring ----------------------------------------------------------------------------------

function fillSelect(select, count) {
  select.replaceChildren();
  for (let i = 0; i < count; i++) select.append(new Option(String(i), String(i)));
}

async function loadModel() {
  try {
    const health = await (await fetch("/health")).json();
    document.body.classList.toggle("needs-key", !!health.auth_required);
    $("api-key").value = localStorage.getItem("buildlm-api-key") || "";
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const card = (await response.json()).data[0];
    state.model = card.id;
    state.contextLength = card.context_length;
    $("model-name").textContent = `${card.id} · ${card.n_layers} layers × ${card.n_heads} heads · context ${card.context_length}`;
    fillSelect($("layer"), card.n_layers);
    fillSelect($("head"), card.n_heads);
    setStatus("ready");
    document.body.dataset.ready = "true";
  } catch (err) {
    $("model-name").textContent = "no model";
    setStatus("cannot load the model: " + err.message, true);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.controller?.abort());
// New chat: abort a reply still streaming (send() sees state.chat changed and throws it away),
// and put the page back as it was when it loaded.
const PRISTINE = {
  messages: $("messages").innerHTML,
  tokens: $("tokens").innerHTML,
  heatInfo: $("heat-info").innerHTML,
};
$("reset").addEventListener("click", () => {
  state.chat += 1;
  state.controller?.abort();
  state.controller = null;
  state.messages = [];
  state.elements = [];
  state.skip = 0;
  state.lastReply = "";
  state.attention = null;
  $("messages").innerHTML = PRISTINE.messages;
  $("tokens").innerHTML = PRISTINE.tokens;
  delete $("tokens").dataset.count;
  $("heat-info").innerHTML = PRISTINE.heatInfo;
  $("token-count").textContent = "";
  $("attention-note").textContent = "";
  $("trim-note")?.remove();
  $("send").disabled = false;
  $("stop").disabled = true;
  if (state.model) setStatus("ready");
  drawHeatmap();
});
$("temperature").addEventListener("input", () => ($("temperature-value").textContent = $("temperature").value));
$("top-p").addEventListener("input", () => ($("top-p-value").textContent = $("top-p").value));
$("token-source").addEventListener("change", showTokens);
$("prompt").addEventListener("input", () => { if ($("token-source").value === "draft") showTokens(); });
$("layer").addEventListener("change", showAttention);
$("head").addEventListener("change", showAttention);
$("api-key").addEventListener("change", () => {
  localStorage.setItem("buildlm-api-key", $("api-key").value.trim());
  loadModel();
});

loadModel();
