// Builds the JavaScript example guests into WebAssembly components with componentize-js.
//
//   node build.mjs [OUT_DIR]     (default: ../target/polyglot)
//
// writes OUT_DIR/worker-js.wasm. `http` and `fetch-event` are disabled: otherwise the
// component imports `wasi:http` (for `fetch()`) and exports the incoming-handler, which a
// queue consumer does not need.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { componentize } from "@bytecodealliance/componentize-js";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] ?? join(here, "../target/polyglot"));
const witPath = resolve(here, "../../wit");

const guests = [{ name: "worker-js", source: "worker/worker.js" }];

await mkdir(outDir, { recursive: true });
for (const { name, source } of guests) {
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: join(here, source),
    witPath,
    worldName: "consumer",
    disableFeatures: ["http", "fetch-event"],
  });
  const out = join(outDir, `${name}.wasm`);
  await writeFile(out, component);
  console.log(`${out}: ${component.length} bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
