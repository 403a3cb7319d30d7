// Many clients at once against lumen-cli serve: N concurrent streamed chats (greedy) must each
// concatenate to the non-streamed reply, while oversized requests are refused beside them.
// Usage: node load.mjs BASE_URL API_KEY MODEL_ID [N]. Prints one JSON line; exits 1 on a failure.
const [base, key, model, n = "64"] = process.argv.slice(2);
const headers = { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) };
const ask = { model, messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 32, temperature: 0 };
const post = (body) => fetch(`${base}/chat/completions`, { method: "POST", headers, body: JSON.stringify(body) });

async function streamed() {
  const res = await post({ ...ask, stream: true });
  const text = await res.text();
  let out = "";
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
    const chunk = JSON.parse(line.slice(6));
    out += chunk.choices?.[0]?.delta?.content ?? "";
  }
  return out;
}

const failed = [];
const expected = (await (await post(ask)).json()).choices[0].message.content;
// The refusals run while the streams do: none of them may disturb the others.
const refusals = [
  ["100 MB body", post({ ...ask, padding: "x".repeat(100 << 20) }), 413],
  ["1,000 images", post({ ...ask, messages: [{ role: "user", content: Array(1000).fill({ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }) }] }), 400],
  ["10^9 max_tokens", post({ ...ask, max_tokens: 1e9 }), 400],
];
const texts = await Promise.all(Array.from({ length: Number(n) }, streamed));
texts.forEach((t, i) => { if (t !== expected) failed.push(`stream ${i}: ${JSON.stringify(t)} != ${JSON.stringify(expected)}`); });
for (const [name, promise, status] of refusals) {
  const res = await promise.catch((e) => ({ status: String(e) }));
  if (res.status !== status) failed.push(`${name}: status ${res.status}, expected ${status}`);
}
// The streams were decoded together: more than one sequence per step on average.
const metrics = await (await fetch(`${base.replace(/\/v1$/, "")}/metrics`, { headers })).text();
const total = (name) => Number(metrics.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1] ?? NaN);
const meanBatch = total("lumen_engine_step_sequences_total") / total("lumen_engine_steps_total");
if (!(meanBatch > 1)) failed.push(`mean batch ${meanBatch}: the streams were not batched`);
console.log(JSON.stringify({ streams: texts.length, expected, mean_batch: meanBatch, failed }));
process.exit(failed.length ? 1 : 0);
