//! The call layer in front of every service: from the row of [`super::methods`] for the call's
//! path it checks the caller's role (when tokens are configured), opens the `rpc` span the
//! handler runs in, and when the answer is ready writes the one log line (method, resource, code,
//! latency) and the call metrics. Handlers do none of this themselves. A plain GetProfile (current,
//! masked) and a ListProfiles page it answers itself from the store's ready replies when the store
//! keeps them.
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as _, Frame};
use tonic::body::Body;
use tonic::{Code, Status};
use tracing::Instrument;

use super::methods::{self, Access, Method};
use super::pieces::in_pieces;
use crate::app::Limits;
use crate::auth::Authenticator;
use crate::store::Store;

/// The resource is read from the whole message (a client may send its fields in any order),
/// up to this size; a message that arrives in one chunk is read where it lies, one split across
/// chunks is gathered first.
const PEEK_LIMIT: usize = 64 << 20;

/// Installs [`CallService`] around the routes.
#[derive(Clone)]
pub struct CallLayer {
    auth: Option<Arc<Authenticator>>,
    ready: Option<Arc<Ready>>,
}

/// What the ready answers are made from: the store that keeps them, the limits a listing checks
/// (page size, page tokens) as the handler does, and the largest request message the services
/// decode (a larger one goes to them, which refuse it).
pub struct Ready {
    store: Arc<Store>,
    /// Whether the store makes ListProfiles pages (see [`Store::keeps_pages`]).
    pages: bool,
    limits: Limits,
    max_message: usize,
}

impl CallLayer {
    /// Authenticates with `auth`, or lets every call through as the anonymous admin when `None`.
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        Self { auth, ready: None }
    }

    /// Answers a plain GetProfile (the current profile, masked) and a ListProfiles page from
    /// `store`'s ready responses without the handler, when it has them, with the handler's
    /// `limits` and largest request message (`max_message` bytes). It hands the store the one
    /// builder of those responses (see [`Store::answer_with`]); listings on a store that makes
    /// no pages (PostgreSQL) go to the handler, their requests untouched.
    pub fn with_ready_profiles(
        self,
        store: Arc<Store>,
        limits: &Limits,
        max_message: usize,
    ) -> Self {
        store.answer_with(framed_profile);
        let ready = Ready {
            pages: store.keeps_pages(),
            store,
            limits: limits.clone(),
            max_message,
        };
        Self {
            ready: Some(Arc::new(ready)),
            ..self
        }
    }
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            auth: self.auth.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// The service of [`CallLayer`].
#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
    ready: Option<Arc<Ready>>,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

/// tonic's answer to a request its decoder refuses (INTERNAL "failed to decode Protobuf message",
/// e.g. a Struct nested past prost's recursion limit of 100) turned into what it is: the caller's
/// mistake, INVALID_ARGUMENT.
fn undecodable_as_invalid(mut res: http::Response<Body>) -> http::Response<Body> {
    let headers = res.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|v| v == "13");
    let undecodable = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            m.starts_with("failed%20to%20decode") || m.starts_with("failed to decode")
        });
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the%20request%20cannot%20be%20decoded:%20it%20is%20malformed,%20or%20nests%20deeper%20than%20the%20100%20levels%20protobuf%20allows",
            ),
        );
    }
    res
}

/// The status code of an answer: in its headers when it is an error (trailers-only), else OK (a
/// stream's final status comes later, in trailers).
fn code_of(res: &http::Response<Body>) -> Code {
    res.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// Writes the call's log line and metrics.
fn finish(m: &Method, resource: &str, code: Code, started: Instant) {
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let method = m.name;
    crate::metrics::record_call(m.service, method, code, started.elapsed().as_secs_f64());
    match code {
        Code::Internal | Code::Unknown | Code::DataLoss => {
            tracing::error!(method, resource, code = ?code, latency_us, "rpc");
        }
        // Successful reads are the hot path: logging each at info cost about a tenth of the
        // server's CPU per call. Writes, refusals and failures stay at info.
        Code::Ok if m.access == Access::Read => {
            tracing::debug!(method, resource, code = ?code, latency_us, "rpc");
        }
        _ => tracing::info!(method, resource, code = ?code, latency_us, "rpc"),
    }
}

impl<S> tower::Service<http::Request<Body>> for CallService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path();
        let row = methods::find(path);
        if let Some(auth) = &self.auth {
            if let Some(role) = methods::required_role(row, path, auth.protect_reflection()) {
                let header = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let name = path.rsplit('/').next().unwrap_or_default();
                match auth
                    .authenticate(header)
                    .and_then(|p| p.require(role, &format!("call {name}")).map(|()| p))
                {
                    Ok(p) => {
                        req.extensions_mut().insert(p);
                    }
                    Err(status) => return refuse(row, path, status, started),
                }
            }
        }
        let Some(row) = row else {
            // Health, reflection, or a method we do not serve: no line, no metrics.
            let call = self.inner.call(req);
            return Box::pin(async move { call.await.map(undecodable_as_invalid) });
        };
        if let Some(ready) = self.ready.as_ref().filter(|r| answers_ready(r, row)) {
            // The service that was made ready goes into the future; a clone stays for the next.
            let next = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, next);
            let ready = Arc::clone(ready);
            return Box::pin(async move {
                let (parts, body) = req.into_parts();
                let (head, rest) = match gather(body).await {
                    Ok(read) => read,
                    Err(status) => {
                        finish(row, "", status.code(), started);
                        return Ok(status.into_http());
                    }
                };
                if rest.is_none() {
                    if let Some((name, answer)) = ready_answer(&ready, row, &head) {
                        finish(row, &name, Code::Ok, started);
                        return Ok(in_pieces(answer));
                    }
                }
                let body = Body::new(Prefixed {
                    head: Some(head),
                    then: Then::Rest(rest),
                });
                forward(
                    &mut inner,
                    http::Request::from_parts(parts, body),
                    row,
                    started,
                )
                .await
            });
        }
        forward(&mut self.inner, req, row, started)
    }
}

/// Whether `row` is one the ready answers serve: ProfileService/GetProfile, and ListProfiles
/// when the store makes pages.
fn answers_ready(ready: &Ready, row: &Method) -> bool {
    row.service == methods::PROFILES
        && (row.name == "GetProfile" || (row.name == "ListProfiles" && ready.pages))
}

/// A request body read whole, up to [`READY_PEEK`] bytes: its bytes, and the rest of it when it is
/// longer (then it goes to the handler as it came).
async fn gather(mut body: Body) -> Result<(Bytes, Option<Body>), Status> {
    let mut head = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok((head.freeze(), None)),
            Some(Err(status)) => return Err(status),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    head.extend_from_slice(data);
                }
                if head.len() > READY_PEEK {
                    return Ok((head.freeze(), Some(body)));
                }
            }
        }
    }
}

/// A GetProfile or ListProfiles request this large or larger is not a plain one: it goes to the
/// handler.
const READY_PEEK: usize = 16 << 10;

/// The answer to a request of `row` from the store's ready responses: a plain GetProfile (one
/// uncompressed message; neither a revision nor revealed secrets nor a resolved connection) or a
/// ListProfiles page, with the call's resource; `None` for any other request, a request the
/// handler refuses (a bad page size or token), an absent or damaged profile, or a store that keeps
/// none: the handler answers.
fn ready_answer(
    ready: &Ready,
    row: &'static Method,
    head: &[u8],
) -> Option<(String, http::Response<Body>)> {
    let message = whole_message(head)
        .filter(|m| m.len() + 5 == head.len() && m.len() <= ready.max_message)?;
    // ListProfiles names no resource (see `methods`).
    let (resource, framed) = match row.name {
        "GetProfile" => ready_profile(&ready.store, message)?,
        _ => (String::new(), ready_page(ready, message)?),
    };
    let answer = http::Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(Prefixed {
            head: Some(framed),
            then: Then::Ok { sent: false },
        }))
        .ok()?;
    Some((resource, answer))
}

/// One gRPC frame: no compression, the length of the message, then the message `write` puts in
/// place (`len` bytes).
fn frame(len: usize, write: impl FnOnce(&mut BytesMut)) -> Option<Bytes> {
    let mut framed = BytesMut::with_capacity(5 + len);
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
    write(&mut framed);
    Some(framed.freeze())
}

/// A masked profile's reply as one gRPC frame, the message encoded in place: the store's ready
/// response (a profile is far under the 4 GiB a frame can say).
fn framed_profile(profile: &crate::domain::Profile) -> Bytes {
    use prost::Message;
    let message = super::convert::masked_profile_to_pb(profile);
    frame(message.encoded_len(), |out| message.encode_raw(out)).unwrap_or_default()
}

/// A plain GetProfile's reply and the profile's name.
fn ready_profile(store: &Store, message: &[u8]) -> Option<(String, Bytes)> {
    use prost::Message;
    let req = crate::pb::GetProfileRequest::decode(message).ok()?;
    if req.reveal_secrets || req.resolve_connection || req.revision.is_some_and(|r| r != 0) {
        return None;
    }
    let framed = store.ready_profile(&req.name).ok()??;
    Some((req.name, framed))
}

/// A ListProfiles page as the handler makes it (the same page size rule and page tokens), its
/// `profiles` the ready replies' messages as they are (a repeated message field is each message
/// behind its tag and length; the fields of a message may come in any order, so prost encodes the
/// rest, the page token, after them).
fn ready_page(ready: &Ready, message: &[u8]) -> Option<Bytes> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    use prost::Message;
    let req = crate::pb::ListProfilesRequest::decode(message).ok()?;
    let size = ready.limits.page_size(req.page_size).ok()?;
    let key = &ready.limits.page_key;
    let after = super::page_token::decode(key, super::profile::LISTING, &req.page_token).ok()?;
    let mut page = ready
        .store
        .ready_profiles(after.as_deref(), size + 1)
        .ok()??;
    let next_page_token =
        super::page_token::cut(key, super::profile::LISTING, &mut page, size, |(n, _)| {
            n.clone()
        });
    // Each reply is a gRPC frame (`framed_profile`): its message follows the 5-byte header.
    let messages: Vec<&[u8]> = page
        .iter()
        .map(|(_, f)| f.get(5..))
        .collect::<Option<_>>()?;
    let rest = crate::pb::ListProfilesResponse {
        profiles: Vec::new(),
        next_page_token,
    };
    let len = messages
        .iter()
        .map(|m| 1 + encoded_len_varint(m.len() as u64) + m.len())
        .sum::<usize>()
        + rest.encoded_len();
    frame(len, |out| {
        for message in messages {
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(message.len() as u64, out);
            out.extend_from_slice(message);
        }
        rest.encode_raw(out);
    })
}

/// A body that starts with bytes at hand: a request gathered for a look, given again whole to the
/// handler (the rest of it follows), or a ready answer (an OK status's trailers follow).
struct Prefixed {
    head: Option<Bytes>,
    then: Then,
}

enum Then {
    /// The rest of a request body, if any.
    Rest(Option<Body>),
    /// The trailers of an OK status; whether they went out.
    Ok { sent: bool },
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(head) = self.head.take().filter(|h| !h.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match &mut self.then {
            Then::Rest(Some(rest)) => Pin::new(rest).poll_frame(cx),
            Then::Rest(None) | Then::Ok { sent: true } => Poll::Ready(None),
            Then::Ok { sent } => {
                *sent = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.as_ref().is_none_or(Bytes::is_empty)
            && match &self.then {
                Then::Rest(rest) => rest.as_ref().is_none_or(http_body::Body::is_end_stream),
                Then::Ok { sent } => *sent,
            }
    }
}

/// The call as the services answer it: the body peeked for the resource, the handler in the `rpc`
/// span, the line and the metrics at the end.
fn forward<S>(
    inner: &mut S,
    req: http::Request<Body>,
    row: &'static Method,
    started: Instant,
) -> BoxFuture<http::Response<Body>, S::Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    let resource = Arc::new(OnceLock::new());
    let span = tracing::info_span!("rpc", method = row.name, resource = tracing::field::Empty);
    let req = req.map(|body| {
        Body::new(Peek {
            inner: body,
            row,
            seen: BytesMut::new(),
            resource: Arc::clone(&resource),
            span: span.clone(),
        })
    });
    let call = inner.call(req).instrument(span);
    Box::pin(async move {
        let res = call.await.map(|r| in_pieces(undecodable_as_invalid(r)));
        let code = match &res {
            Ok(r) => code_of(r),
            Err(_) => Code::Unknown,
        };
        let resource = resource.get().map_or("", String::as_str);
        finish(row, resource, code, started);
        res
    })
}

/// The answer to a caller without the role: the status, with its line and metrics.
fn refuse<E: Send + 'static>(
    row: Option<&'static Method>,
    path: &str,
    status: Status,
    started: Instant,
) -> BoxFuture<http::Response<Body>, E> {
    match row {
        Some(m) => finish(m, "", status.code(), started),
        None => tracing::info!(path, code = ?status.code(), "rpc refused"),
    }
    Box::pin(async move { Ok(status.into_http()) })
}

/// The request body as it goes to the handler, unchanged; on the way it reads the resource from
/// the first message (gRPC frame: a compression flag, a 4-byte length, the message).
struct Peek {
    inner: Body,
    row: &'static Method,
    seen: BytesMut,
    resource: Arc<OnceLock<String>>,
    span: tracing::Span,
}

impl Peek {
    fn look(&mut self, data: &Bytes) {
        if self.resource.get().is_some() || self.seen.len() >= PEEK_LIMIT + 5 {
            return;
        }
        // The common case, a whole message in one chunk, is read where it lies.
        if self.seen.is_empty() {
            if let Some(message) = whole_message(data) {
                self.settle(message);
                return;
            }
        }
        self.seen.extend_from_slice(data);
        let mut header = &self.seen[..self.seen.len().min(5)];
        if header.len() < 5 {
            return;
        }
        let compressed = header.get_u8() != 0;
        let len = header.get_u32() as usize;
        let have = self.seen.len() - 5;
        if compressed {
            let _ = self.resource.set(String::new());
        } else if have >= len || have >= PEEK_LIMIT {
            let seen = std::mem::take(&mut self.seen);
            self.settle(&seen[5..5 + have.min(len)]);
        }
    }

    fn settle(&mut self, message: &[u8]) {
        let found = methods::resource_of(self.row, message).unwrap_or_default();
        self.span.record("resource", found.as_str());
        let _ = self.resource.set(found);
    }
}

/// The message of a gRPC frame that `data` holds whole and uncompressed.
fn whole_message(data: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = data.split_first()?;
    let (len, message) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (flag == 0).then_some(())?;
    message.get(..len)
}

impl http_body::Body for Peek {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.look(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::whole_message;

    #[test]
    fn a_whole_uncompressed_frame_is_read_where_it_lies() {
        let frame = |flag: u8, len: u32, body: &[u8]| {
            let mut f = vec![flag];
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(body);
            f
        };
        type Case<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>);
        let cases: [Case; 5] = [
            ("whole", frame(0, 3, b"abc"), Some(b"abc")),
            ("whole, more after", frame(0, 2, b"abc"), Some(b"ab")),
            ("cut short", frame(0, 4, b"abc"), None),
            ("compressed", frame(1, 3, b"abc"), None),
            ("no header", vec![0, 0, 0], None),
        ];
        for (case, bytes, want) in cases {
            assert_eq!(whole_message(&bytes), want, "{case}");
        }
    }
}
