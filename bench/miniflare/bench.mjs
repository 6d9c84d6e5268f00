// Miniflare (Cloudflare's local simulator, running the real workerd runtime) doing the job of
// `wasmq bench binary`, so the two can be compared on the same machine in the same run:
// N messages of 64 bytes are published in batches of 100 by 4 concurrent publishers, each
// batch one HTTP request on loopback to a producer Worker's fetch handler, which calls
// `env.QUEUE.sendBatch`; a consumer Worker (max_batch_size 100, max_batch_timeout 0) calls
// `batch.ackAll()`, and the clock stops when all N have been consumed.
//
// Usage: node bench.mjs [--messages N]   (default 10000)
//
// Differences from wasmq that Miniflare imposes (there is no option to change them):
// - Miniflare's queue broker keeps messages in memory only (a Durable Object's fields, not its
//   storage): nothing is written to disk, whereas wasmq acks durably.
// - The broker dispatches one batch at a time (it waits for a batch's outcome before starting
//   the next), so it compares with wasmq's max_concurrency 1 line; there is no
//   max_concurrency option.
// - After every batch the broker logs `QUEUE name n/n (t ms)` through an HTTP request to this
//   Node process, whatever the log level: that is part of Miniflare's cost, not the bench's.
//
// How consumption is counted, exactly and without polling: the consumer Worker, after
// `batch.ackAll()`, reports the batch's size to this process through a service binding whose
// target is a Node function (Miniflare's function-valued `serviceBindings`). The report goes
// through `ctx.waitUntil`, so the consumer's return (and so the broker's next batch) does not
// wait for it; the clock stops when the reports add up to N.

import { Log, LogLevel, Miniflare } from "miniflare";

const LIMIT_MS = 120_000;
const BATCH = 100;
const PUBLISHERS = 4;
const BODY_BYTES = 64;

function parseArgs(argv) {
  let messages = 10_000;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    let value;
    if (arg === "--messages") value = argv[++i];
    else if (arg.startsWith("--messages=")) value = arg.slice("--messages=".length);
    else throw new Error(`unknown argument ${JSON.stringify(arg)} (usage: node bench.mjs [--messages N])`);
    if (value === undefined || !/^[1-9][0-9]*$/.test(value)) {
      throw new Error(`--messages needs a positive whole number, got ${JSON.stringify(value)}`);
    }
    messages = Number(value);
  }
  return { messages };
}

// `message {n} ` padded with `x` to 64 bytes, as wasmq's bench does.
const text = (n) => `message ${n} `.padEnd(BODY_BYTES, "x");

const PRODUCER = `
export default {
  async fetch(request, env) {
    const bodies = await request.json();
    await env.QUEUE.sendBatch(bodies.map((body) => ({ body, contentType: "text" })));
    return new Response(null, { status: 204 });
  },
};
`;

const CONSUMER = `
export default {
  async queue(batch, env, ctx) {
    batch.ackAll();
    ctx.waitUntil(env.REPORT.fetch("http://report/", { method: "POST", body: String(batch.messages.length) }));
  },
};
`;

async function main() {
  const { messages } = parseArgs(process.argv.slice(2));

  let consumed = 0;
  let allConsumed;
  const done = new Promise((resolve) => (allConsumed = resolve));

  const mf = new Miniflare({
    // Warnings and errors (retries, dropped messages, failed handlers) still show.
    log: new Log(LogLevel.WARN),
    // Placeholder `request.cf` values: the default fetches real ones from Cloudflare over the
    // internet, which a local bench must not depend on.
    cf: false,
    workers: [
      {
        // The first Worker receives the HTTP requests.
        name: "producer",
        modules: true,
        script: PRODUCER,
        compatibilityDate: "2026-04-01",
        queueProducers: { QUEUE: { queueName: "bench" } },
      },
      {
        name: "consumer",
        modules: true,
        script: CONSUMER,
        compatibilityDate: "2026-04-01",
        // maxBatchTimeout is in seconds; 0 is the smallest Miniflare's schema accepts and
        // means "dispatch as soon as any message is waiting".
        queueConsumers: { bench: { maxBatchSize: BATCH, maxBatchTimeout: 0, maxRetries: 0 } },
        serviceBindings: {
          async REPORT(request) {
            consumed += Number(await request.text());
            if (consumed >= messages) allConsumed();
            return new Response(null, { status: 204 });
          },
        },
      },
    ],
  });

  try {
    await mf.ready;
    const batches = Math.ceil(messages / BATCH);
    const started = performance.now();

    const publisher = async (first) => {
      for (let b = first; b < batches; b += PUBLISHERS) {
        const bodies = [];
        for (let n = b * BATCH; n < Math.min((b + 1) * BATCH, messages); n++) bodies.push(text(n));
        const response = await mf.dispatchFetch("http://localhost/publish", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(bodies),
        });
        const answer = await response.text();
        if (!response.ok) throw new Error(`publish failed: ${response.status} ${answer}`);
      }
    };
    const publishing = Promise.all(Array.from({ length: PUBLISHERS }, (_, c) => publisher(c)));

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`only ${consumed} of ${messages} messages were consumed in ${LIMIT_MS / 1000} s`)),
        LIMIT_MS,
      );
    });
    await Promise.race([Promise.all([publishing, done]), timeout]);
    clearTimeout(timer);
    const seconds = (performance.now() - started) / 1000;

    if (consumed !== messages) {
      throw new Error(`${consumed} messages were consumed, ${messages} were published`);
    }
    console.log(
      `miniflare: ${messages} messages published and consumed in ${seconds.toFixed(2)} s: ${Math.round(messages / seconds)} msgs/s`,
    );
  } finally {
    await mf.dispose();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`miniflare bench failed: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  },
);
