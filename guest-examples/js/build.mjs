// Builds the JavaScript example guests into WebAssembly components with componentize-js.
//
//   node build.mjs [OUT_DIR [NAME...]]     (default: ../target/polyglot, every guest)
//
// writes OUT_DIR/NAME.wasm for each guest below (or the ones named). `http` (outbound
// `fetch()`) is disabled for all of them: none needs it, and without it a consumer imports
// no `wasi:http` at all. `fetch-event` is disabled too: a consumer serves no HTTP, and the
// producer exports `wasi:http/incoming-handler` itself (`incomingHandler`), because the
// engine's fetch event serves another version of that interface than `wit/` names.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { componentize } from "@bytecodealliance/componentize-js";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] ?? join(here, "../target/polyglot"));
const witPath = resolve(here, "../../wit");

const guests = [
  { name: "worker-js", source: "worker/worker.js", world: "consumer" },
  { name: "webhook-js", source: "webhook/webhook.js", world: "http-producer" },
];
const wanted = process.argv.slice(3);
for (const name of wanted) {
  if (!guests.some((guest) => guest.name === name)) {
    throw new Error(`unknown guest ${name}; the guests are ${guests.map((g) => g.name).join(", ")}`);
  }
}

await mkdir(outDir, { recursive: true });
for (const { name, source, world } of guests) {
  if (wanted.length > 0 && !wanted.includes(name)) {
    continue;
  }
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: join(here, source),
    witPath,
    worldName: world,
    disableFeatures: ["http", "fetch-event"],
  });
  const out = join(outDir, `${name}.wasm`);
  await writeFile(out, component);
  console.log(`${out}: ${component.length} bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
