// {{name}}: a wasmq consumer.
//
// The host hands it batches of messages from the queue its manifest entry consumes
// (`manifest.toml`). For each message it logs one line and acks it; returning acks anything
// left, throwing retries every message not acked yet.
//
// The contract is `wit/queues.wit`, world `consumer`. componentize-js maps it to JavaScript:
// the exported interface `handler` is the object below; the batch has `queue()`,
// `messages()`, `ack(id)`, `retry(id, delaySeconds)`, `ackAll()`, `retryAll(delaySeconds)`;
// a message is `{ id, timestampMs, contentType, body: Uint8Array, attempts }`.

const decoder = new TextDecoder();

export const handler = {
  handle(batch) {
    for (const message of batch.messages()) {
      const body = decoder.decode(message.body);
      console.log(`[{{name}}] ${message.id} attempt ${message.attempts}: ${body}`);
      batch.ack(message.id);
    }
  },
};
