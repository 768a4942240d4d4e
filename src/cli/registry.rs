//! The registry an everyday command talks to: a server over gRPC, or, with `--data-dir`, the same
//! services run in this process on a stopped server's data dir, so both give the same answers.
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::connection::{connect, ServerChannel};
use super::target::open_data_dir;
use crate::app::Limits;
use crate::config::TargetArgs;
use crate::grpc::conversation::ConversationApi;
use crate::grpc::profile::ProfileApi;
use crate::pb;
use crate::pb::conversation_service_client::ConversationServiceClient;
use crate::pb::conversation_service_server::ConversationService;
use crate::pb::profile_service_client::ProfileServiceClient;
use crate::pb::profile_service_server::ProfileService;
use crate::store::Store;

/// Either way of reaching the registry, with the same calls.
pub enum Registry {
    /// A running server.
    Remote {
        /// ProfileService.
        profiles: Box<ProfileServiceClient<ServerChannel>>,
        /// ConversationService.
        conversations: Box<ConversationServiceClient<ServerChannel>>,
    },
    /// The services on a data dir opened by this process.
    Local {
        /// ProfileService.
        profiles: ProfileApi,
        /// ConversationService.
        conversations: ConversationApi,
        /// Kept so that streams stay open: they end when the server's shutdown flag flips.
        _running: watch::Sender<bool>,
    },
}

/// A stream of messages from either side.
pub type Messages<T> = BoxStream<'static, Result<T, Status>>;

/// One page of a list call: its items, and the token of the next page (empty after the last).
pub type Page<'r, T> = BoxFuture<'r, Result<(Vec<T>, String), Status>>;

/// A request made on a data dir: its writes are kept as by `local`.
fn local<T>(req: T) -> Request<T> {
    let mut req = Request::new(req);
    req.extensions_mut().insert(crate::auth::Principal::local());
    req
}

/// One unary call on both sides: `$service.$method(request)` to its reply message.
macro_rules! unary {
    ($(#[$doc:meta])* $method:ident, $service:ident, $req:ty => $resp:ty) => {
        $(#[$doc])*
        pub async fn $method(&mut self, req: $req) -> Result<$resp, Status> {
            match self {
                Self::Remote { $service, .. } => {
                    $service.$method(req).await.map(Response::into_inner)
                }
                Self::Local { $service, .. } => {
                    $service.$method(local(req)).await.map(Response::into_inner)
                }
            }
        }
    };
}

/// One server-streaming call on both sides.
macro_rules! streaming {
    ($(#[$doc:meta])* $method:ident, $service:ident, $req:ty => $item:ty) => {
        $(#[$doc])*
        pub async fn $method(&mut self, req: $req) -> Result<Messages<$item>, Status> {
            match self {
                Self::Remote { $service, .. } => {
                    Ok($service.$method(req).await?.into_inner().boxed())
                }
                Self::Local { $service, .. } => Ok($service
                    .$method(local(req))
                    .await?
                    .into_inner()
                    .boxed()),
            }
        }
    };
}

impl Registry {
    /// Connects to `--server`, or opens `--data-dir` when given.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Self> {
        if let Some(dir) = &args.data_dir {
            // A mistyped path must not become a new, empty registry.
            if !dir.join("db").is_dir() {
                anyhow::bail!(
                    "--data-dir {}: no registry database there (no db/ folder); give the data dir of a stopped server",
                    dir.display()
                );
            }
            let sled = open_data_dir(args)?;
            let store = Arc::new(Store::Sled(sled));
            let (running, stopped) = watch::channel(false);
            let limits = Limits {
                page_key: store.page_key(),
                ..Limits::default()
            };
            return Ok(Self::Local {
                profiles: ProfileApi::new(Arc::clone(&store), limits.clone(), stopped.clone()),
                conversations: ConversationApi::new(store, limits, stopped),
                _running: running,
            });
        }
        let channel = connect(&args.client).await?;
        Ok(Self::Remote {
            profiles: Box::new(
                ProfileServiceClient::new(channel.clone())
                    .max_decoding_message_size(super::target::MAX_RESPONSE_BYTES),
            ),
            conversations: Box::new(
                ConversationServiceClient::new(channel)
                    .max_decoding_message_size(super::target::MAX_RESPONSE_BYTES),
            ),
        })
    }

    unary!(
        /// ListProfiles.
        list_profiles, profiles, pb::ListProfilesRequest => pb::ListProfilesResponse
    );
    unary!(
        /// CreateProfile.
        create_profile, profiles, pb::CreateProfileRequest => pb::Profile
    );
    unary!(
        /// ListProfileRevisions.
        list_profile_revisions, profiles, pb::ListProfileRevisionsRequest => pb::ListProfileRevisionsResponse
    );
    unary!(
        /// UndeleteProfile.
        undelete_profile, profiles, pb::UndeleteProfileRequest => pb::Profile
    );
    unary!(
        /// RollbackProfile.
        rollback_profile, profiles, pb::RollbackProfileRequest => pb::Profile
    );
    unary!(
        /// GetProfile.
        get_profile, profiles, pb::GetProfileRequest => pb::Profile
    );
    unary!(
        /// UpdateProfile.
        update_profile, profiles, pb::UpdateProfileRequest => pb::Profile
    );
    unary!(
        /// DeleteProfile.
        delete_profile, profiles, pb::DeleteProfileRequest => pb::DeleteProfileResponse
    );
    unary!(
        /// RenameProfile.
        rename_profile, profiles, pb::RenameProfileRequest => pb::Profile
    );
    unary!(
        /// ExportProfiles.
        export_profiles, profiles, pb::ExportProfilesRequest => pb::ExportProfilesResponse
    );
    streaming!(
        /// WatchProfiles.
        watch_profiles, profiles, pb::WatchProfilesRequest => pb::ProfileEvent
    );
    unary!(
        /// ListConversations.
        list_conversations, conversations, pb::ListConversationsRequest => pb::ListConversationsResponse
    );
    unary!(
        /// GetConversation.
        get_conversation, conversations, pb::GetConversationRequest => pb::Conversation
    );
    unary!(
        /// ListEvents.
        list_events, conversations, pb::ListEventsRequest => pb::ListEventsResponse
    );
    streaming!(
        /// WatchEvents.
        watch_events, conversations, pb::WatchEventsRequest => pb::Event
    );
}
