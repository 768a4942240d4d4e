//! grpc.health.v1: overall ("") and per-service status. Ours rather than tonic-health's reporter so
//! that Watch streams end at shutdown (after telling NOT_SERVING) instead of holding the server open.
use std::collections::BTreeMap;
use std::pin::Pin;

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The status of every registered service, shared by the health service and the server.
#[derive(Clone)]
pub struct HealthState {
    statuses: watch::Sender<BTreeMap<String, ServingStatus>>,
}

impl HealthState {
    /// Serving "" and each of `services`.
    pub fn serving(services: &[&str]) -> Self {
        let map = std::iter::once("")
            .chain(services.iter().copied())
            .map(|s| (s.to_owned(), ServingStatus::Serving))
            .collect();
        Self {
            statuses: watch::channel(map).0,
        }
    }

    /// Flips every service, and the overall status, to SERVING.
    pub fn set_serving(&self) {
        self.set_all(ServingStatus::Serving);
    }

    /// Flips every service, and the overall status, to NOT_SERVING.
    pub fn set_not_serving(&self) {
        self.set_all(ServingStatus::NotServing);
    }

    fn set_all(&self, status: ServingStatus) {
        self.statuses.send_if_modified(|m| {
            let mut changed = false;
            for s in m.values_mut() {
                changed |= *s != status;
                *s = status;
            }
            changed
        });
    }

    /// The health service; its Watch streams end when `shutdown` turns true.
    pub fn service(&self, shutdown: watch::Receiver<bool>) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            state: self.clone(),
            shutdown,
        })
    }
}

/// The grpc.health.v1.Health implementation.
pub struct HealthService {
    state: HealthState,
    shutdown: watch::Receiver<bool>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match self.state.statuses.borrow().get(&service) {
            Some(s) => Ok(Response::new(response(*s))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = req.into_inner().service;
        let mut statuses = self.state.statuses.subscribe();
        let mut shutdown = self.shutdown.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = None;
            loop {
                let now = statuses
                    .borrow_and_update()
                    .get(&service)
                    .copied()
                    .unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    if tx.send(Ok(response(now))).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    r = statuses.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// How many messages a stream's task may get ahead of what HTTP/2 lets out. Each is the task's own
/// copy (a watch event holds a whole profile), so a client that stops reading holds this many per
/// stream: with 64, 96 idle watchers of 40 KiB profiles held 240 MiB. The shared watch backlog, not
/// this, is what absorbs bursts.
const STREAM_QUEUE: usize = 4;

/// A stream fed by a task: `body` gets the sender; the stream ends when it returns.
pub(crate) fn async_stream<T, F, Fut>(body: F) -> tokio_stream::wrappers::ReceiverStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
    tokio::spawn(body(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
