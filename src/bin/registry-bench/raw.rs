//! The load client of the measured rows: so that it measures the server rather than itself, each
//! request is encoded once before the row and sent as bytes, and a reply is read only to its
//! status (its bytes are dropped, not decoded).
use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Sends bytes that are already an encoded message; takes a reply's bytes without decoding them.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

pub struct Passthrough;

pub struct Discard;

impl Encoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Discard {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Passthrough;
    type Decoder = Discard;

    fn encoder(&mut self) -> Passthrough {
        Passthrough
    }

    fn decoder(&mut self) -> Discard {
        Discard
    }
}

/// A message encoded once, to be sent many times.
pub fn encoded(message: &impl Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Raw unary calls over several connections.
#[derive(Clone)]
pub struct RawClients {
    grpc: Vec<Grpc<Channel>>,
}

impl RawClients {
    pub fn new(channels: &[Channel]) -> Self {
        Self {
            grpc: channels
                .iter()
                .cloned()
                .map(|c| Grpc::new(c).max_decoding_message_size(usize::MAX))
                .collect(),
        }
    }

    /// Calls `path` (`/package.Service/Method`) with `body` on worker `w`'s connection; fails on any
    /// status but OK.
    pub async fn call(&self, w: usize, path: &'static str, body: Bytes) -> anyhow::Result<()> {
        let mut grpc = self.grpc[w % self.grpc.len()].clone();
        grpc.ready().await?;
        grpc.unary(
            Request::new(body),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?;
        Ok(())
    }
}
