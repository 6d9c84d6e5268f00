//! Host bindings generated from `wit/queues.wit`. The `consumer` world holds every wasmq
//! interface (`types`, `producer`, `batch`, `handler`); producers reuse its `producer` import
//! and take `wasi:http/incoming-handler` from wasmtime-wasi-http.

wasmtime::component::bindgen!({
    world: "consumer",
    path: "../wit",
    with: { "wasmq:queues/batch.message-batch": super::consumer::BatchResource },
    // A batch call the host cannot take (a bad handle, an out-of-range delay, too many calls)
    // traps the guest. Sends wait for their commit without holding a thread; guests are
    // called asynchronously so that a time limit holds while they wait in a host call.
    imports: { "wasmq:queues/batch": trappable, "wasmq:queues/producer": async },
    exports: { default: async },
});

pub(super) use self::wasmq::queues::types as wit;
