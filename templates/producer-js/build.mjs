// Builds {{name}}.wasm from producer.js with componentize-js: `node build.mjs` (after
// `npm ci`). producer.js exports wasi:http/incoming-handler@0.2.12 itself
// (`incomingHandler`): the engine's `fetch-event` (`addEventListener("fetch", …)`) serves
// another version of that interface, so it is left out, and `http` (outbound `fetch()`) too.
import { writeFile } from "node:fs/promises";

import { componentize } from "@bytecodealliance/componentize-js";

const started = Date.now();
const { component } = await componentize({
  sourcePath: "producer.js",
  witPath: "wit",
  worldName: "http-producer",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile("{{name}}.wasm", component);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(`{{name}}.wasm: ${component.length} bytes in ${seconds} s`);
