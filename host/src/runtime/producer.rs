//! Producer components: the `http-producer` world. Each HTTP request on the component's route
//! is handed to its `wasi:http/incoming-handler` export in a fresh store with the component's
//! limits; the component sends into its bound queues through the `producer` import.

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::component::{InstancePre, Linker};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::consumer::Failure;
use super::guest::{self, GuestState};
use super::world::{LoadedComponent, World, WorldId};

/// The `http-producer` world.
pub struct HttpProducer;

impl World for HttpProducer {
    const ID: WorldId = WorldId::HttpProducer;
    type Pre = ProxyPre<GuestState>;
    type Idle = ();

    fn add_imports(_: &mut Linker<GuestState>) -> anyhow::Result<()> {
        // Producers import only what every component gets.
        Ok(())
    }

    fn bind(instance: InstancePre<GuestState>) -> wasmtime::Result<Self::Pre> {
        ProxyPre::new(instance)
    }
}

/// A producer component, compiled and linked once, instantiated per request.
pub type ProducerComponent = LoadedComponent<HttpProducer>;

impl ProducerComponent {
    /// Hands `request` to the component in a fresh store and returns its response as soon as
    /// the component sets it (the body streams while the component writes it). A component
    /// that traps, runs out of time or memory, or returns without answering is a [`Failure`].
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<HyperOutgoingBody>, Failure>
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let request = request.map(|body| {
            body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
        });
        let (mut store, stdout, stderr) = self.guest.new_store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request);
        let request = resources.map_err(|e| Failure::Error(format!("{e:#}")))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| Failure::Trap(format!("{e:#}")))?;
        let pre = self.pre.clone();
        let deadline = store.data().deadline;
        // The guest runs in its own task until its deadline, whether it computes or waits (for
        // the request body, say); the response arrives through `receiver` once it calls
        // `response-outparam.set`, possibly before it returns, and its body streams meanwhile.
        let call = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let run = async {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, request, out)
                        .await
                };
                let result = guest::with_deadline(deadline, run).await;
                // Flush unterminated output lines to the log.
                stdout.take_lines();
                stderr.take_lines();
                guest::outcome(result, store.data())
            },
            tracing::Span::current(),
        ));
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(Failure::Error(format!("the component answered {code:?}"))),
            // The store, and the sender with it, is gone without a response.
            Err(_) => match call.await {
                Ok(Ok(())) => Err(Failure::Error(
                    "the component returned without setting a response".into(),
                )),
                Ok(Err(failure)) => Err(failure),
                Err(join) => Err(Failure::Trap(format!("the request task failed: {join}"))),
            },
        }
    }
}
