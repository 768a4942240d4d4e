//! The two calls of etcd's `etcdserverpb.KV` the comparison needs, as hand-written prost messages
//! (field numbers from etcd's rpc.proto) over tonic's generic client: no .proto to compile.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// `etcdserverpb.RangeRequest`: only the fields used.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    /// Served by the member without a round of consensus (etcd's fastest read).
    #[prost(bool, tag = "7")]
    serializable: bool,
}

/// `etcdserverpb.KeyValue`: only the fields read.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
}

/// `etcdserverpb.RangeResponse`: only the values.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.PutResponse`: nothing read.
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

/// A KV client on one channel.
#[derive(Clone)]
pub struct Kv(Grpc<Channel>);

impl Kv {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self(Grpc::new(channel))
    }

    /// Range of one key, serializable; returns how many values came back.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<usize> {
        self.0.ready().await?;
        let answer: tonic::Response<RangeResponse> = self
            .0
            .unary(
                tonic::Request::new(RangeRequest {
                    key: key.as_bytes().to_vec(),
                    serializable: true,
                }),
                PathAndQuery::from_static("/etcdserverpb.KV/Range"),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner().kvs.len())
    }

    /// Put of one key (durable: etcd fsyncs its WAL before answering).
    pub async fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.0.ready().await?;
        let _: tonic::Response<PutResponse> = self
            .0
            .unary(
                tonic::Request::new(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.to_vec(),
                }),
                PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                ProstCodec::default(),
            )
            .await?;
        Ok(())
    }

    /// Waits until etcd answers (it takes a moment to elect itself).
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.get("bench-ready").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("etcd did not answer in time")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Checks that `key` is stored.
    pub async fn expect(&mut self, key: &str) -> anyhow::Result<()> {
        let n = self.get(key).await?;
        ensure!(n == 1, "etcd has no value for {key}");
        Ok(())
    }
}
