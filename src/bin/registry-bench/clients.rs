//! How the benchmark reaches a server: gRPC clients spread over several connections, and the
//! `TargetArgs` of the `import` / `export` commands.
use profile_registry::config::{ClientArgs, TargetArgs};
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

use crate::procs::channels;
use crate::raw::RawClients;

/// Clients of one server, one per connection.
#[derive(Clone)]
pub struct Clients {
    profiles: Vec<ProfileServiceClient<Channel>>,
    conversations: Vec<ConversationServiceClient<Channel>>,
    raw: RawClients,
}

impl Clients {
    pub async fn connect(url: &str, n: usize) -> anyhow::Result<Self> {
        let chans = channels(url, n).await?;
        Ok(Self {
            raw: RawClients::new(&chans),
            profiles: chans
                .iter()
                .cloned()
                .map(|c| ProfileServiceClient::new(c).max_decoding_message_size(usize::MAX))
                .collect(),
            conversations: chans
                .iter()
                .cloned()
                .map(ConversationServiceClient::new)
                .collect(),
        })
    }

    /// The raw client of the rows that measure the server (requests encoded beforehand).
    pub fn raw(&self) -> &RawClients {
        &self.raw
    }

    pub fn profiles(&self, w: usize) -> ProfileServiceClient<Channel> {
        self.profiles[w % self.profiles.len()].clone()
    }

    pub fn conversations(&self, w: usize) -> ConversationServiceClient<Channel> {
        self.conversations[w % self.conversations.len()].clone()
    }
}

pub fn target_args(url: &str) -> TargetArgs {
    TargetArgs {
        client: ClientArgs::plain(url),
        data_dir: None,
        secret_key_file: None,
    }
}
