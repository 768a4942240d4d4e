//! Misbehaving clients do not hurt the others: a watcher that never reads, thousands of streams,
//! huge and malformed messages, clients that vanish mid-stream. Each test runs the real binary,
//! keeps a well-behaved client busy meanwhile (every call must succeed within a liveness deadline)
//! and samples the server's resident memory, which must stay under [`RSS_BOUND_MIB`].
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use prost::bytes::{Buf, BufMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::helpers::test_postgres;
use crate::helpers::{
    connect, conversation, create, create_conversation, inline, message_event, profile, rss_mib,
    ChildServer,
};

/// The most resident memory (VmRSS) the server may reach in any of these tests, debug build.
/// Measured peaks: 46 MiB (huge messages, vanishing clients), 53 MiB (event watcher), 88 MiB
/// (thousands of streams), 89 MiB (96 idle profile watchers; 311 MiB when each queued 64 events),
/// 166 MiB (profile watcher: ~130 MiB of it the database writing 40 MiB of profiles, ~30 MiB the
/// 4096-change backlog).
const RSS_BOUND_MIB: u64 = 256;

/// Liveness, not a benchmark: each call of the well-behaved client must finish within this.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Changes a profile watcher may fall behind before it is cut off (the server's backlog).
const WATCH_BACKLOG: usize = 4096;

/// A fresh server process on its own data dir (kept alive by the returned dir).
fn start() -> (tempfile::TempDir, ChildServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(&dir.path().join("data"), &[]);
    (dir, server)
}

/// Files a server may open besides the ones a test counts: one, and on PostgreSQL its connection
/// pool (up to 16 connections, opened as load needs them).
fn fd_slack() -> usize {
    if test_postgres().is_some() {
        17
    } else {
        1
    }
}

/// How many files (sockets included) process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The highest RSS of a process, sampled every 20 ms from a thread until [`PeakRss::finish`].
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_mib(pid).expect("the server runs")));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(rss) = rss_mib(pid) else { return };
                    peak.fetch_max(rss, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Self { peak, stop, thread }
    }

    /// Stops sampling and asserts the peak stayed under the bound.
    fn assert_bounded(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let peak = self.peak.load(Ordering::Relaxed);
        eprintln!("{what}: peak server RSS {peak} MiB");
        assert!(
            peak < RSS_BOUND_MIB,
            "{what}: the server's RSS reached {peak} MiB (bound {RSS_BOUND_MIB} MiB)"
        );
    }
}

/// A call's message, or a panic naming the call when it fails or outlasts [`CALL_DEADLINE`].
async fn within<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    what: &str,
) -> T {
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CALL_DEADLINE:?}"))
        .unwrap_or_else(|s| panic!("{what} failed: {s:?}"))
        .into_inner()
}

/// The well-behaved client, on its own connection: creates `name`, then 50 rounds of GetProfile
/// and UpdateProfile, each checked by value.
async fn well_behaved(addr: SocketAddr, name: &str) {
    let mut c = ProfileServiceClient::new(connect(addr).await);
    let req = pb::CreateProfileRequest {
        profile: Some(profile(name, "gpt-4o", None)),
    };
    within(c.create_profile(req), "CreateProfile").await;
    for i in 0..50 {
        let req = pb::GetProfileRequest {
            name: name.into(),
            reveal_secrets: false,
            resolve_connection: false,
            revision: None,
        };
        let got = within(c.get_profile(req), "GetProfile").await;
        assert_eq!((got.name.as_str(), got.revision), (name, i + 1));
        let req = pb::UpdateProfileRequest {
            profile: Some(profile(name, &format!("gpt-{i}"), None)),
            allow_missing: false,
            expected_revision: Some(i + 1),
        };
        let put = within(c.update_profile(req), "UpdateProfile").await;
        assert_eq!(put.revision, i + 2);
    }
}

/// A connection whose client grants the server only HTTP/2's smallest default flow-control window
/// (64 KiB): once that is full, nothing more leaves the server until the client reads.
async fn tiny_window(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects")
}

/// The next message of a stream, which must come within [`CALL_DEADLINE`].
async fn next_message<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(CALL_DEADLINE, stream.message())
        .await
        .expect("a message within the deadline")
        .expect("the stream stays OK")
        .expect("the stream stays open")
}

/// Reads a stream to its end: how many messages came, and the status it ended with.
async fn read_to_status<T>(stream: &mut Streaming<T>) -> (usize, Status) {
    let mut received = 0;
    loop {
        let next = tokio::time::timeout(CALL_DEADLINE, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no message or status within {CALL_DEADLINE:?}"));
        match next {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended with OK after {received} messages"),
            Err(s) => return (received, s),
        }
    }
}

/// An SDK profile file of about `kib` KiB.
fn big_profile_json(kib: usize) -> String {
    format!(
        r#"{{"model": "gpt-4o", "notes": "{}"}}"#,
        "x".repeat(kib * 1024)
    )
}

/// Imports `count` profiles of `kib` KiB in requests of `per_request`, as a well-behaved writer.
async fn import_big_profiles(addr: SocketAddr, count: usize, per_request: usize, kib: usize) {
    let mut p = ProfileServiceClient::new(connect(addr).await);
    for chunk in 0..count / per_request {
        let documents = (0..per_request)
            .map(|i| pb::ProfileDocument {
                name: format!("big-{chunk:03}-{i:03}.json"),
                json: big_profile_json(kib),
            })
            .collect();
        let req = pb::ImportProfilesRequest {
            documents,
            ..Default::default()
        };
        let report = within(p.import_profiles(req), "ImportProfiles").await;
        assert_eq!(report.results.len(), per_request);
        let created = pb::import_result::Outcome::Created as i32;
        assert!(
            report.results.iter().all(|r| r.outcome == created),
            "{:?}",
            report.results[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_watcher_that_never_reads_is_cut_off_after_the_backlog() {
    let (_dir, server) = start();
    let peak = PeakRss::start(server.child.id());
    let req = pb::WatchProfilesRequest {
        send_initial: false,
        ..Default::default()
    };
    let mut slow = ProfileServiceClient::new(tiny_window(server.addr).await)
        .watch_profiles(req)
        .await
        .expect("the watch opens")
        .into_inner();

    // 5,000 changes of 8 KiB profiles, more than the backlog, while the other client works.
    tokio::join!(
        import_big_profiles(server.addr, 5000, 250, 8),
        well_behaved(server.addr, "steady")
    );

    let (received, status) = read_to_status(&mut slow).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("behind") && status.message().contains("send_initial"),
        "the status says why and what to do: {status:?}"
    );
    assert!(
        received < WATCH_BACKLOG,
        "only what was in flight arrives first ({received} changes)"
    );
    peak.assert_bounded("profile watcher that never reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_profile_watchers_that_never_read_each_hold_only_a_few_changes() {
    const WATCHERS: usize = 96;
    let (_dir, server) = start();
    let peak = PeakRss::start(server.child.id());
    let client = ProfileServiceClient::new(tiny_window(server.addr).await);
    let mut slow = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let req = pb::WatchProfilesRequest {
            send_initial: false,
            ..Default::default()
        };
        let mut c = client.clone();
        slow.push(within(c.watch_profiles(req), "WatchProfiles").await);
    }

    // 100 changes of 40 KiB profiles reach every watcher's queue; then the other client works.
    import_big_profiles(server.addr, 100, 50, 40).await;
    well_behaved(server.addr, "steady").await;
    peak.assert_bounded("many profile watchers that never read");

    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_watcher_that_never_reads_pins_no_events_and_catches_up_from_the_store() {
    let (_dir, server) = start();
    let peak = PeakRss::start(server.child.id());
    let mut conv = ConversationServiceClient::new(connect(server.addr).await);
    let id = create_conversation(&mut conv, conversation(inline("gpt-4o", None), "flood"))
        .await
        .id;
    let req = pb::WatchEventsRequest {
        conversation_id: id.clone(),
        after_seq: None,
    };
    let mut slow = ConversationServiceClient::new(tiny_window(server.addr).await)
        .watch_events(req)
        .await
        .expect("the watch opens")
        .into_inner();

    // 4,400 appends of a 512-byte event (more than the 4,096 notifications the channel keeps),
    // sixteen appenders at a time, while the other client works.
    const APPENDERS: usize = 16;
    const APPENDS: usize = 275;
    let text = "y".repeat(512);
    let appenders = (0..APPENDERS).map(|w| {
        let (mut c, id, text) = (conv.clone(), id.clone(), text.clone());
        async move {
            for i in 0..APPENDS {
                let req = pb::AppendEventsRequest {
                    conversation_id: id.clone(),
                    events: vec![message_event(&format!("e-{w}-{i}"), "user", &text)],
                    expected_next_seq: None,
                };
                within(c.append_events(req), "AppendEvents").await;
            }
        }
    });
    tokio::join!(join_all(appenders), well_behaved(server.addr, "steady"));

    // Reading at last, it gets every event once, in order, from the store.
    for want in 0..APPENDERS * APPENDS {
        let e = next_message(&mut slow).await;
        assert_eq!(e.seq, i64::try_from(want).unwrap());
    }
    peak.assert_bounded("event watcher that never reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_are_held_to_the_per_connection_limit() {
    const CONNECTIONS: usize = 4;
    const STREAMS: usize = 500;
    const PER_CONNECTION: usize = 256; // --max-streams-per-connection's default
    let (_dir, server) = start();
    let pid = server.child.id();
    let fds_before = open_fds(pid);
    let peak = PeakRss::start(pid);

    // 2,000 watch streams over 4 connections, 500 on each: more than one connection may carry.
    let mut opens = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = ProfileServiceClient::new(connect(server.addr).await);
        opens.push(join_all((0..STREAMS).map(|_| {
            let mut c = client.clone();
            async move {
                let req = pb::WatchProfilesRequest {
                    send_initial: false,
                    ..Default::default()
                };
                tokio::time::timeout(Duration::from_secs(3), c.watch_profiles(req)).await
            }
        })));
    }
    let (per_connection, ()) = tokio::join!(join_all(opens), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        well_behaved(server.addr, "steady").await;
    });
    let mut held = Vec::new();
    for results in per_connection {
        let mut opened = 0;
        for r in results {
            match r {
                Ok(Ok(stream)) => {
                    opened += 1;
                    held.push(stream.into_inner());
                }
                Ok(Err(s)) => assert_eq!(s.code(), Code::Unavailable, "refused: {s:?}"),
                // The client queues streams beyond the server's SETTINGS limit; they time out.
                Err(_) => {}
            }
        }
        assert!(
            (1..=PER_CONNECTION).contains(&opened),
            "{opened} streams open on one connection (limit {PER_CONNECTION})"
        );
    }
    eprintln!("{} of {} streams opened", held.len(), CONNECTIONS * STREAMS);
    let held_peak = rss_mib(pid).expect("the server runs");

    // The open streams still get changes, and the well-behaved client works beside them.
    well_behaved(server.addr, "steady-2").await;
    let first = next_message(&mut held[0]).await;
    assert!(first.name.starts_with("steady"), "{first:?}");
    peak.assert_bounded("thousands of streams");

    drop(held);
    let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
    while open_fds(pid) > fds_before + 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = rss_mib(pid).expect("the server runs");
    eprintln!("RSS with the streams open {held_peak} MiB, after they closed {after} MiB");
    assert!(
        open_fds(pid) <= fds_before + fd_slack(),
        "the streams' connections are closed"
    );
    assert!(after < RSS_BOUND_MIB);
}

/// A codec that sends and receives raw bytes, to put anything on the wire as a request.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `bytes` as the request message of `method` (a path like `/pkg.Service/Method`).
async fn send_raw(
    addr: SocketAddr,
    method: &'static str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(connect(addr).await);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(method);
    tokio::time::timeout(
        CALL_DEADLINE,
        grpc.unary(tonic::Request::new(bytes), path, RawBytes),
    )
    .await
    .expect("an answer within the deadline")
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_malformed_and_non_http2_messages_are_refused_without_harm() {
    let (_dir, server) = start();
    let addr = server.addr;
    let peak = PeakRss::start(server.child.id());

    let abuse = async {
        // Over --max-request-bytes (4 MiB): 8 MiB names, ten at a time. tonic refuses them
        // from the length prefix, before reading the body, with OUT_OF_RANGE.
        let huge = (0..10).map(|_| async {
            let mut c = ProfileServiceClient::new(connect(addr).await);
            let req = pb::GetProfileRequest {
                name: "n".repeat(8 * 1024 * 1024),
                reveal_secrets: false,
                resolve_connection: false,
                revision: None,
            };
            let err = c.get_profile(req).await.expect_err("refused");
            assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
            assert!(err.message().contains("too large"), "{err:?}");
        });
        join_all(huge).await;

        // Not protobuf for the request type: a reserved wire type, a truncated field, a length
        // past the end.
        let malformed: [&[u8]; 3] = [&[0xff, 0xff, 0xff, 0xff], &[0x0a], &[0x0a, 0x7f, b'x']];
        for _ in 0..20 {
            for bytes in malformed {
                let method = "/profileregistry.v1.ProfileService/GetProfile";
                let err = send_raw(addr, method, bytes.to_vec())
                    .await
                    .expect_err("refused");
                // A message that does not parse is the caller's mistake: INVALID_ARGUMENT
                // (tonic's own answer, INTERNAL, is turned into it at the edge).
                assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
                assert!(err.message().contains("cannot be decoded"), "{err:?}");
            }
        }

        // Not HTTP/2 at all: the server drops the connection.
        let garbage: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for _ in 0..20 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = tcp.write_all(&garbage).await; // the server may close before the end
            let mut buf = vec![0; 4096];
            let closed = tokio::time::timeout(CALL_DEADLINE, async {
                while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            })
            .await;
            assert!(closed.is_ok(), "the server closes a connection of garbage");
        }
    };
    tokio::join!(abuse, well_behaved(addr, "steady"));
    peak.assert_bounded("huge and malformed messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_mid_stream_leave_nothing_behind() {
    let (_dir, server) = start();
    let (addr, pid) = (server.addr, server.child.id());
    let mut p = ProfileServiceClient::new(connect(addr).await);
    create(&mut p, profile("seen", "gpt-4o", None)).await;
    let mut conv = ConversationServiceClient::new(connect(addr).await);
    let id = create_conversation(&mut conv, conversation(inline("gpt-4o", None), "tail"))
        .await
        .id;
    let req = pb::AppendEventsRequest {
        conversation_id: id.clone(),
        events: vec![message_event("e0", "user", "hi")],
        expected_next_seq: Some(0),
    };
    within(conv.append_events(req), "AppendEvents").await;
    let fds_before = open_fds(pid);
    let peak = PeakRss::start(pid);

    // 200 clients each open a watch, read one message, and drop the connection under it.
    let vanish = async {
        for i in 0..200 {
            let channel = connect(addr).await;
            if i % 2 == 0 {
                let req = pb::WatchProfilesRequest {
                    send_initial: true,
                    ..Default::default()
                };
                let mut s = ProfileServiceClient::new(channel)
                    .watch_profiles(req)
                    .await
                    .expect("the watch opens")
                    .into_inner();
                let e = next_message(&mut s).await;
                assert!(e.initial);
            } else {
                let req = pb::WatchEventsRequest {
                    conversation_id: id.clone(),
                    after_seq: None,
                };
                let mut s = ConversationServiceClient::new(channel)
                    .watch_events(req)
                    .await
                    .expect("the watch opens")
                    .into_inner();
                let e = next_message(&mut s).await;
                assert_eq!(e.seq, 0);
            }
        }
    };
    tokio::join!(vanish, well_behaved(addr, "steady"));
    peak.assert_bounded("clients that vanish mid-stream");

    // Their connections (and the streams on them) are gone from the server.
    let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
    while open_fds(pid) > fds_before + 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open_fds(pid) <= fds_before + fd_slack(),
        "{} files open, {fds_before} before",
        open_fds(pid)
    );
}
