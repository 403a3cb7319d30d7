// Drives an OpenAI-compatible server with the official `openai` npm client
// (v4 API) to check that real-world clients can talk to it.
//
// Usage: node openai_client.mjs BASE_URL API_KEY MODEL_ID [IMAGE_PNG_PATH]
//   BASE_URL like http://127.0.0.1:PORT/v1; API_KEY may be "" (no auth).
// Prints one JSON line {"passed": [...], "failed": [{name, error}]} and
// exits 1 if any check failed.
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const [baseURL, apiKey, model, imagePath] = process.argv.slice(2);
if (!baseURL || apiKey === undefined || !model) {
  console.error("usage: node openai_client.mjs BASE_URL API_KEY MODEL_ID [IMAGE_PNG_PATH]");
  process.exit(2);
}

// No retries: a retried request would hide server errors and slow the test.
const client = new OpenAI({ baseURL, apiKey: apiKey || "none", maxRetries: 0, timeout: 60000 });

const passed = [];
const failed = [];

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Runs one check; a check may return a string to rename itself (for
// checks whose outcome is recorded in the name).
async function check(name, fn) {
  try {
    const renamed = await fn();
    passed.push(typeof renamed === "string" ? renamed : name);
  } catch (err) {
    failed.push({ name, error: String(err) });
  }
}

// Asserts that fn throws an API error with the given HTTP status; returns it.
async function expectStatus(status, fn) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert(err, `expected HTTP ${status}, but the request succeeded`);
  assert(err.status === status, `expected HTTP ${status}, got ${err.status}: ${err.message}`);
  return err;
}

const userPrompt = [{ role: "user", content: "Once upon a time" }];
const chatRequest = { model, messages: userPrompt, max_tokens: 24, temperature: 0 };
let greedy = null; // check 2's response, reused by the streaming check

await check("models", async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert(ids.includes(model), `model ${model} not in ${JSON.stringify(ids)}`);
});

await check("chat", async () => {
  const res = await client.chat.completions.create(chatRequest);
  const choice = res.choices[0];
  const u = res.usage;
  assert(typeof choice.message.content === "string" && choice.message.content.length > 0,
    `empty content: ${JSON.stringify(choice.message)}`);
  assert(choice.message.role === "assistant", `role is ${choice.message.role}`);
  assert(["stop", "length"].includes(choice.finish_reason), `finish_reason ${choice.finish_reason}`);
  assert(u && u.prompt_tokens > 0, `bad prompt_tokens: ${JSON.stringify(u)}`);
  assert(u.completion_tokens > 0 && u.completion_tokens <= 24, `bad completion_tokens: ${JSON.stringify(u)}`);
  assert(u.total_tokens === u.prompt_tokens + u.completion_tokens, `total_tokens is not the sum: ${JSON.stringify(u)}`);
  greedy = res;
});

await check("stream", async () => {
  assert(greedy, "needs the result of the chat check");
  const stream = await client.chat.completions.create({
    ...chatRequest, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  let sawFinish = false;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.choices[0]?.finish_reason) sawFinish = true;
    if (chunk.usage) usage = chunk.usage; // keep the last one
  }
  // Greedy decoding is deterministic, so streaming must reproduce it exactly.
  assert(text === greedy.choices[0].message.content,
    `streamed ${JSON.stringify(text)} != ${JSON.stringify(greedy.choices[0].message.content)}`);
  assert(usage, "no chunk carried usage despite include_usage");
  assert(usage.completion_tokens === greedy.usage.completion_tokens,
    `stream completion_tokens ${usage.completion_tokens} != ${greedy.usage.completion_tokens}`);
  assert(sawFinish, "no chunk had a finish_reason");
});

await check("stop", async () => {
  const res = await client.chat.completions.create({
    model, messages: userPrompt, max_tokens: 64, temperature: 0, stop: ["."],
  });
  const choice = res.choices[0];
  assert(!choice.message.content.includes("."), `stop string in output: ${JSON.stringify(choice.message.content)}`);
  // Hitting max_tokens before any "." legitimately ends with "length".
  if (res.usage?.completion_tokens !== 64) {
    assert(choice.finish_reason === "stop", `finish_reason ${choice.finish_reason}`);
  }
});

await check("seed", async () => {
  const sampled = (seed) => client.chat.completions.create({
    model, messages: userPrompt, max_tokens: 24, temperature: 1.0, top_p: 0.9, seed,
  }).then((r) => r.choices[0].message.content);
  const a = await sampled(1234);
  const b = await sampled(1234);
  assert(a === b, `same seed gave different text: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  await sampled(99); // must succeed; its text may or may not differ
});

// n choices: each its own sampled stream (a fixed seed gives seed, seed + 1, ...).
await check("n", async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 12, temperature: 1, seed: 7, n: 3,
  });
  assert(r.choices.length === 3, `expected 3 choices, got ${r.choices.length}`);
  r.choices.forEach((c, i) => assert(c.index === i && typeof c.message.content === "string", `choice ${i} malformed`));
  assert(r.usage.completion_tokens <= 36, `usage counts ${r.usage.completion_tokens} tokens for 3 x 12`);
});

// Log-probabilities: greedy picks the most likely token, so each chosen token is its step's first
// alternative; the tokens spell the reply, streamed or not.
await check("logprobs", async () => {
  assert(greedy, "needs the result of the chat check");
  const res = await client.chat.completions.create({ ...chatRequest, logprobs: true, top_logprobs: 3 });
  const choice = res.choices[0];
  const content = choice.logprobs?.content;
  assert(Array.isArray(content) && content.length > 0, `no logprobs.content: ${JSON.stringify(choice.logprobs)}`);
  assert(choice.message.content === greedy.choices[0].message.content, "logprobs changed the greedy reply");
  for (const t of content) {
    assert(typeof t.token === "string" && typeof t.logprob === "number" && t.logprob <= 0, `bad entry ${JSON.stringify(t)}`);
    assert(Array.isArray(t.bytes) && Buffer.from(t.bytes).toString("utf8") === t.token, `bytes do not spell ${JSON.stringify(t.token)}`);
    assert(t.top_logprobs.length === 3, `top_logprobs has ${t.top_logprobs.length} entries`);
    assert(t.top_logprobs[0].token === t.token && Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6,
      `greedy chose ${JSON.stringify(t.token)} over ${JSON.stringify(t.top_logprobs[0])}`);
    for (let i = 1; i < 3; ++i) assert(t.top_logprobs[i].logprob <= t.top_logprobs[i - 1].logprob, "top_logprobs out of order");
    const mass = t.top_logprobs.reduce((sum, a) => sum + Math.exp(a.logprob), 0);
    assert(mass <= 1 + 1e-4, `top_logprobs hold probability ${mass}`);
  }
  const spelled = content.map((t) => t.token).join("");
  assert(spelled.startsWith(choice.message.content), `tokens spell ${JSON.stringify(spelled)}`);

  const stream = await client.chat.completions.create({ ...chatRequest, logprobs: true, top_logprobs: 1, stream: true });
  const streamed = [];
  for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  assert(JSON.stringify(streamed.map((t) => [t.token, t.logprob])) === JSON.stringify(content.map((t) => [t.token, t.logprob])),
    "streamed logprobs differ from the non-streamed ones");

  const plain = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8, temperature: 0, logprobs: 2 });
  const lp = plain.choices[0].logprobs;
  assert(lp && lp.tokens.length === lp.token_logprobs.length && lp.tokens.length === lp.top_logprobs.length &&
    lp.tokens.length === lp.text_offset.length && lp.tokens.length > 0, `completions logprobs malformed: ${JSON.stringify(lp)}`);
  assert(lp.tokens.join("") === plain.choices[0].text, `completion tokens spell ${JSON.stringify(lp.tokens.join(""))}`);
  assert(lp.text_offset[0] === 0 && Object.keys(lp.top_logprobs[0]).length <= 2, "completions offsets or alternatives wrong");
});

// Presence and frequency penalties (OpenAI's definitions): a strong frequency penalty keeps the
// greedy reply from repeating any token as often.
await check("penalties", async () => {
  const ask = (extra) => client.completions.create({ model, prompt: "Once upon a time", max_tokens: 48, temperature: 0, ...extra })
    .then((r) => r.choices[0].text);
  const words = (t) => t.split(/\s+/).filter(Boolean);
  const mostRepeated = (t) => Math.max(...Object.values(words(t).reduce((m, w) => ((m[w] = (m[w] ?? 0) + 1), m), {})));
  const plainText = await ask({});
  const penalized = await ask({ frequency_penalty: 2, presence_penalty: 1 });
  assert(penalized !== plainText, "the penalties changed nothing");
  assert(mostRepeated(penalized) <= mostRepeated(plainText),
    `penalized text repeats a word ${mostRepeated(penalized)} times, plain ${mostRepeated(plainText)}`);
  await expectStatus(400, () => ask({ presence_penalty: 3 }));
});

await check("completions", async () => {
  const res = await client.completions.create({
    model, prompt: "Once upon a time", max_tokens: 16, temperature: 0,
  });
  const text = res.choices[0].text;
  assert(typeof text === "string" && text.length > 0, `empty text: ${JSON.stringify(res.choices[0])}`);
});

if (apiKey === "") {
  passed.push("unauthorized (no key set)"); // nothing to reject without a key
} else {
  await check("unauthorized", async () => {
    const bad = new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0, timeout: 60000 });
    await expectStatus(401, () => bad.models.list());
  });
}

// Content parts with an image, for the image checks below.
const imageMessage = (url) => [{
  role: "user",
  content: [
    { type: "text", text: "What is this?" },
    { type: "image_url", image_url: { url } },
  ],
}];

await check("bad image", async () => {
  // "AAAA" decodes to three zero bytes: not a PNG, so a client error.
  await expectStatus(400, () => client.chat.completions.create({
    model, messages: imageMessage("data:image/png;base64,AAAA"), max_tokens: 8, temperature: 0,
  }));
});

if (imagePath) {
  await check("image", async () => {
    const url = "data:image/png;base64," + readFileSync(imagePath).toString("base64");
    try {
      const res = await client.chat.completions.create({
        model, messages: imageMessage(url), max_tokens: 16, temperature: 0,
      });
      assert(typeof res.choices[0].message.content === "string", "no content in reply");
      return "image (answered)";
    } catch (err) {
      // A text-only model may refuse images, but only with a clear 400.
      if (err.status === 400 && /image/i.test(err.message)) return "image (refused: text-only model)";
      throw err;
    }
  });
}

await check("raw sse", async () => {
  // Bypass the SDK to check the wire format other clients rely on.
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const res = await fetch(`${baseURL.replace(/\/+$/, "")}/chat/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ model, messages: userPrompt, max_tokens: 8, temperature: 0, stream: true }),
    signal: AbortSignal.timeout(60000),
  });
  const body = await res.text();
  assert(res.ok, `HTTP ${res.status}: ${body.slice(0, 300)}`);
  const type = res.headers.get("content-type") || "";
  assert(type.startsWith("text/event-stream"), `content-type is ${JSON.stringify(type)}`);
  assert(body.split(/\r?\n/).some((l) => l.startsWith("data: ")), "no 'data: ' lines");
  assert(body.trim().endsWith("data: [DONE]"), `does not end with data: [DONE]: ${JSON.stringify(body.slice(-100))}`);
});

console.log(JSON.stringify({ passed, failed }));
process.exit(failed.length ? 1 : 0);
