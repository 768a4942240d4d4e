//! The OpenHands SDK's JSON formats: profile files and their secret forms. No tonic or sled types here.
pub mod agent_profiles;
pub mod connections;
pub mod conversation;
pub mod folder;
pub mod meta_profiles;
pub mod profile;
pub mod secrets;
