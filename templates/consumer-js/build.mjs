// Builds {{name}}.wasm from consumer.js with componentize-js: `node build.mjs` (after
// `npm ci`). `http` and `fetch-event` are left out: a consumer needs no `fetch()` and no
// incoming HTTP, so the component imports no wasi:http.
import { writeFile } from "node:fs/promises";

import { componentize } from "@bytecodealliance/componentize-js";

const started = Date.now();
const { component } = await componentize({
  sourcePath: "consumer.js",
  witPath: "wit",
  worldName: "consumer",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile("{{name}}.wasm", component);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(`{{name}}.wasm: ${component.length} bytes in ${seconds} s`);
