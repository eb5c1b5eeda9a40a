//! Request/reply endpoints as a NATS service (async-nats service API, queue group), shared by
//! intake's API and the escalation inbox: each request's headers (its `Authorization`) and
//! payload go to the handler, whose JSON answer is the reply. Requests are handled concurrently; a reply that cannot be sent is
//! logged.

use std::future::Future;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One endpoint: its name (for metrics and `$SRV` discovery) and its subject.
pub struct Endpoint {
    pub name: &'static str,
    pub subject: String,
}

/// Serves `endpoints` as service `service` in queue group `queue_group` until `shutdown`;
/// `registered` is told once the server has every endpoint's subscription (a service must not
/// say it is ready before: a request would find no responder).
#[allow(clippy::too_many_arguments)]
pub async fn serve<H, F>(
    client: async_nats::Client,
    service: &str,
    description: String,
    queue_group: String,
    endpoints: Vec<Endpoint>,
    shutdown: CancellationToken,
    registered: tokio::sync::oneshot::Sender<()>,
    handle: H,
) -> Result<(), String>
where
    H: Fn(&'static str, Option<async_nats::HeaderMap>, bytes::Bytes) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Value> + Send + 'static,
{
    let svc = client
        .service_builder()
        .description(description)
        .queue_group(queue_group)
        .start(service, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| format!("nats service: {e}"))?;
    let mut tasks = Vec::new();
    for Endpoint { name, subject } in endpoints {
        let mut ep = svc
            .endpoint_builder()
            .name(name)
            .add(subject.clone())
            .await
            .map_err(|e| format!("nats endpoint {subject}: {e}"))?;
        let (handle, shutdown) = (handle.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = ep.next() => match r { Some(r) => r, None => break },
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let (headers, payload) = (request.message.headers.clone(), request.message.payload.clone());
                    let body = handle(name, headers, payload).await;
                    if let Err(e) = request.respond(Ok(serde_json::to_vec(&body).expect("serializes").into())).await {
                        tracing::warn!(error = %e, endpoint = name, "could not send a reply");
                    }
                });
            }
            let _ = ep.stop().await;
        }));
    }
    client.flush().await.map_err(|e| format!("nats service: {e}"))?;
    let _ = registered.send(());
    for t in tasks {
        let _ = t.await;
    }
    let _ = svc.stop().await;
    Ok(())
}
