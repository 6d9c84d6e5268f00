//! Host bindings generated from `wit/queues.wit`. The `consumer` world holds every wasmq
//! interface (`types`, `producer`, `batch`, `handler`); producers reuse its `producer` import
//! and take `wasi:http/incoming-handler` from wasmtime-wasi-http.

wasmtime::component::bindgen!({
    world: "consumer",
    path: "../wit",
    with: { "wasmq:queues/batch.message-batch": super::consumer::BatchResource },
    // A batch call the host cannot take (a bad handle, an out-of-range delay, too many calls)
    // traps the guest.
    imports: { "wasmq:queues/batch": trappable },
});

pub(super) use self::wasmq::queues::types as wit;
