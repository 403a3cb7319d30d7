#!/usr/bin/env python3
"""Request throughput, time to first token and inter-token latency of an OpenAI-compatible server
at several numbers of concurrent streaming clients, for docs/PERFORMANCE.md:

    python3 tests/reference/bench_serve.py http://127.0.0.1:23333 MODEL [--clients 1,16,64]
        [--requests-per-client 2] [--prompt-words 400] [--max-tokens 128] [--json]

Each client sends its requests one after another to /v1/completions with "stream": true,
"temperature": 0 and "ignore_eos": true (vLLM's extension; Lumen's server takes it), so every
reply is max_tokens long. Time to first token runs from sending the request to the first event
carrying text; inter-token latency is the time between text events (one token each, but for a
token held back until its characters are whole) and, per request, the decode time over its
tokens. Standard library only: it runs where the server runs.
"""
import argparse
import http.client
import json
import multiprocessing
import statistics
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def one_request(url, model, prompt, max_tokens):
    parts = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "ignore_eos": True, "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    times = []
    tokens = prompt_tokens = 0
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
            prompt_tokens = event["usage"]["prompt_tokens"]
        for choice in event.get("choices", []):
            if choice.get("text"):
                times.append(time.perf_counter())
    conn.close()
    end = time.perf_counter()
    if not times:
        raise RuntimeError("no text came back")
    return {"ttft": times[0] - start, "gaps": [b - a for a, b in zip(times, times[1:])],
            "decode_per_token": (times[-1] - times[0]) / max(tokens - 1, 1), "tokens": tokens, "prompt_tokens": prompt_tokens,
            "latency": end - start}


def client_process(url, model, requests, prompt, max_tokens, out):
    for _ in range(requests):
        try:
            out.put(("ok", one_request(url, model, prompt, max_tokens)))
        except Exception as e:  # noqa: BLE001 (reported below)
            out.put(("error", str(e)))


def run_level(url, model, clients, requests_per_client, prompt, max_tokens):
    # A process per client: threads sharing one interpreter lock would delay reading the streams
    # and count that delay as the server's latency.
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=client_process, args=(url, model, requests_per_client, prompt, max_tokens, queue))
             for _ in range(clients)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    results, errors = [], []
    for _ in range(clients * requests_per_client):
        kind, value = queue.get()
        (results if kind == "ok" else errors).append(value)
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    gaps = [g for r in results for g in r["gaps"]]
    ttft = [r["ttft"] for r in results]
    per_token = [r["decode_per_token"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "errors": errors[:3], "error_count": len(errors),
            "wall_s": wall, "requests_per_s": len(results) / wall, "output_tokens_per_s": tokens / wall,
            "ttft_ms": {p: 1e3 * percentile(ttft, p) for p in (50, 90, 99)},
            "itl_ms": {p: 1e3 * percentile(gaps, p) for p in (50, 90, 99)},
            "decode_ms_per_token_mean": 1e3 * statistics.fmean(per_token) if per_token else float("nan")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--prompt-words", type=int, default=400)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    words = "the quick brown fox jumps over a lazy dog while rain falls on quiet hills".split()
    prompt = " ".join(words[i % len(words)] for i in range(args.prompt_words))
    # One request first, so that warm-up (CUDA graphs, allocations) is not measured.
    warm = one_request(args.url, args.model, prompt, 8)
    levels = [run_level(args.url, args.model, int(c), args.requests_per_client, prompt, args.max_tokens)
              for c in args.clients.split(",")]
    if args.json:
        print(json.dumps(levels))
        return
    print(f"prompt {warm['prompt_tokens']} tokens, {args.max_tokens} new a request, {args.requests_per_client} requests a client")
    print(f"{'clients':>7} {'req/s':>7} {'tok/s':>8} {'TTFT p50/p90/p99 ms':>22} {'ITL p50/p90/p99 ms':>22} {'decode ms/tok':>13}")
    for lv in levels:
        t, i = lv["ttft_ms"], lv["itl_ms"]
        print(f"{lv['clients']:>7} {lv['requests_per_s']:>7.2f} {lv['output_tokens_per_s']:>8.0f} "
              f"{t[50]:>7.1f}/{t[90]:>6.1f}/{t[99]:>6.1f} {i[50]:>7.2f}/{i[90]:>6.2f}/{i[99]:>6.2f} "
              f"{lv['decode_ms_per_token_mean']:>13.2f}" + (f"  errors: {lv['error_count']} {lv['errors']}" if lv["errors"] else ""))


if __name__ == "__main__":
    main()
