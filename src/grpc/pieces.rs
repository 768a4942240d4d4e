//! Small replies sent in pieces that h2 copies, so that the replies of many calls leave in one
//! write.
//!
//! h2 0.4 copies a DATA frame of under 256 bytes (1 KiB on a connection without vectored writes;
//! plain TCP and rustls have them) into its write buffer, but sends a larger one from the
//! caller's bytes, and writes out everything buffered before it takes the next frame: a reply of
//! 256 bytes or more costs a `writev` of its own. A masked profile (about 1 KiB) then cost the
//! server 21 us a GetProfile at concurrency 64, against 13 us a Health/Check, whose reply is a few
//! bytes; sent in pieces of 255 bytes, 15 to 17 us. A reply larger than [`PIECES_UP_TO`] (a page of
//! a listing, a page of events) goes as it is: its own write costs less than the frames.
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::Status;

/// The largest DATA frame h2 copies into its buffer.
const PIECE: usize = 255;

/// The largest chunk of a reply that is cut into pieces.
const PIECES_UP_TO: usize = 2 << 10;

/// `res` with every chunk of its body from 256 bytes up to [`PIECES_UP_TO`] cut into pieces of
/// [`PIECE`] bytes (a gRPC message may span DATA frames; clients join them).
pub(super) fn in_pieces(res: http::Response<Body>) -> http::Response<Body> {
    res.map(|inner| {
        Body::new(InPieces {
            inner,
            rest: Bytes::new(),
        })
    })
}

struct InPieces {
    inner: Body,
    /// What is left of the chunk being cut.
    rest: Bytes,
}

impl http_body::Body for InPieces {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if (PIECE + 1..=PIECES_UP_TO).contains(&data.len()) => {
                        this.rest = data;
                    }
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                polled => return Poll::Ready(polled),
            }
        }
        let piece = this.rest.split_to(this.rest.len().min(PIECE));
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    /// The frames of `res`'s body: each data chunk's length, and "trailers" for the trailers.
    async fn frames(res: http::Response<Body>) -> (Vec<usize>, Vec<u8>) {
        let mut body = res.into_body();
        let (mut lens, mut bytes) = (Vec::new(), Vec::new());
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame.expect("a frame").into_data() {
                Ok(data) => {
                    lens.push(data.len());
                    bytes.extend_from_slice(&data);
                }
                Err(f) => {
                    assert!(f.is_trailers(), "a frame that is neither data nor trailers");
                    lens.push(usize::MAX);
                }
            }
        }
        assert!(body.is_end_stream());
        (lens, bytes)
    }

    fn chunks(lens: &[usize]) -> (http::Response<Body>, Vec<u8>) {
        let mut all = Vec::new();
        let mut frames = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let chunk: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
            all.extend_from_slice(&chunk);
            frames.push(Ok::<_, Status>(Frame::data(Bytes::from(chunk))));
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        frames.push(Ok(Frame::trailers(trailers)));
        (http::Response::new(Body::new(Frames(frames.into()))), all)
    }

    /// A body of frames at hand.
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, Status>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front())
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    #[tokio::test]
    async fn small_chunks_go_in_pieces_h2_copies_and_large_ones_whole() {
        let trailers = usize::MAX;
        type Case<'a> = (&'a str, &'a [usize], &'a [usize]);
        let cases: [Case; 5] = [
            ("a few bytes", &[7], &[7, trailers]),
            ("one piece exactly", &[255], &[255, trailers]),
            ("just over a piece", &[256], &[255, 1, trailers]),
            ("a profile", &[1100], &[255, 255, 255, 255, 80, trailers]),
            (
                "the largest cut, then a larger chunk whole",
                &[2048, 2049],
                &[255, 255, 255, 255, 255, 255, 255, 255, 8, 2049, trailers],
            ),
        ];
        for (case, sent, want) in cases {
            let (res, all) = chunks(sent);
            let (lens, bytes) = frames(in_pieces(res)).await;
            assert_eq!(lens, want, "{case}");
            assert_eq!(bytes, all, "{case}: the bytes in their order");
        }
    }
}
