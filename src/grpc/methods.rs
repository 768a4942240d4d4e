//! The one table of methods: for every rpc of our services, the role it needs, whether it only
//! reads, and which request field names the resource it acts on. The call layer (`layer.rs`)
//! reads it for the role check, the request log line and the metrics; a new rpc gets a row here
//! and nowhere else (a test checks that every rpc of the protos has one).
use std::sync::OnceLock;

use crate::auth::Role;

/// Whether a method changes anything, and how a success is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Gets, lists, watches and validations: the hot path, logged at debug level.
    Read,
    /// Reads that copy data out (exports, backups): logged at info, like writes, so that every
    /// copy leaves a line at the default level.
    Export,
    /// Everything else.
    Write,
}

/// What the log line and the span name as the call's resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Nothing in particular (a listing, an import of a whole conversation).
    None,
    /// The value of this request field (a dotted path through nested messages); the last one
    /// when a hostile request repeats it, as the decoder takes the last.
    Field(&'static str),
    /// The values of this repeated request field, comma-joined.
    Fields(&'static str),
    /// How many values this repeated request field has: "N documents".
    Count(&'static str),
    /// Always this text (the whole store).
    Fixed(&'static str),
}

/// One row of the table.
#[derive(Debug)]
pub struct Method {
    /// The full proto service name.
    pub service: &'static str,
    /// The rpc's name.
    pub name: &'static str,
    /// The role a caller needs.
    pub role: Role,
    /// Read or write.
    pub access: Access,
    /// Which field names the resource.
    pub resource: Resource,
}

pub(crate) const PROFILES: &str = "profileregistry.v1.ProfileService";
const CONVERSATIONS: &str = "profileregistry.v1.ConversationService";
const ADMIN: &str = "profileregistry.v1.AdminService";
const CONNECTIONS: &str = "profileregistry.v1.ProviderConnectionService";
const META: &str = "profileregistry.v1.MetaProfileService";
const AGENTS: &str = "profileregistry.v1.AgentProfileService";

const fn row(
    service: &'static str,
    name: &'static str,
    access: Access,
    resource: Resource,
) -> Method {
    let role = match access {
        Access::Read | Access::Export => Role::Reader,
        Access::Write => Role::Writer,
    };
    Method {
        service,
        name,
        role,
        access,
        resource,
    }
}

use Access::{Export, Read, Write};
use Resource::{Count, Field, Fields, Fixed};

/// Every rpc of our services (one line a row: kept as a table, not as rustfmt would wrap it).
#[rustfmt::skip]
pub static METHODS: &[Method] = &[
    row(PROFILES, "CreateProfile", Write, Field("profile.name")),
    row(PROFILES, "GetProfile", Read, Field("name")),
    row(PROFILES, "ListProfiles", Read, Resource::None),
    row(PROFILES, "UpdateProfile", Write, Field("profile.name")),
    row(PROFILES, "DeleteProfile", Write, Field("name")),
    row(PROFILES, "RenameProfile", Write, Field("name")),
    row(PROFILES, "ValidateProfile", Read, Field("profile.name")),
    row(PROFILES, "WatchProfiles", Read, Resource::None),
    row(PROFILES, "ImportProfiles", Write, Count("documents")),
    row(PROFILES, "ExportProfiles", Export, Fields("names")),
    row(PROFILES, "ListProfileRevisions", Read, Field("name")),
    row(PROFILES, "RollbackProfile", Write, Field("name")),
    row(PROFILES, "UndeleteProfile", Write, Field("name")),
    row(CONVERSATIONS, "CreateConversation", Write, Field("conversation.id")),
    row(CONVERSATIONS, "GetConversation", Read, Field("id")),
    row(CONVERSATIONS, "ListConversations", Read, Field("profile")),
    row(CONVERSATIONS, "UpdateConversation", Write, Field("conversation.id")),
    row(CONVERSATIONS, "DeleteConversation", Write, Field("id")),
    row(CONVERSATIONS, "SwitchLlm", Write, Field("id")),
    row(CONVERSATIONS, "AppendEvents", Write, Field("conversation_id")),
    row(CONVERSATIONS, "ListEvents", Read, Field("conversation_id")),
    row(CONVERSATIONS, "WatchEvents", Read, Field("conversation_id")),
    row(CONVERSATIONS, "ImportConversation", Write, Resource::None),
    row(CONVERSATIONS, "ExportConversation", Export, Field("id")),
    row(CONNECTIONS, "CreateProviderConnection", Write, Field("connection.id")),
    row(CONNECTIONS, "GetProviderConnection", Read, Field("id")),
    row(CONNECTIONS, "ListProviderConnections", Read, Resource::None),
    row(CONNECTIONS, "UpdateProviderConnection", Write, Field("connection.id")),
    row(CONNECTIONS, "DeleteProviderConnection", Write, Field("id")),
    row(CONNECTIONS, "ValidateProviderConnection", Read, Field("connection.id")),
    row(CONNECTIONS, "ImportProviderConnections", Write, Resource::None),
    row(CONNECTIONS, "ExportProviderConnections", Export, Resource::None),
    row(META, "CreateMetaProfile", Write, Field("meta_profile.name")),
    row(META, "GetMetaProfile", Read, Field("name")),
    row(META, "ListMetaProfiles", Read, Resource::None),
    row(META, "UpdateMetaProfile", Write, Field("meta_profile.name")),
    row(META, "DeleteMetaProfile", Write, Field("name")),
    row(META, "RenameMetaProfile", Write, Field("name")),
    row(META, "ValidateMetaProfile", Read, Field("meta_profile.name")),
    row(META, "ImportMetaProfiles", Write, Count("documents")),
    row(META, "ExportMetaProfiles", Export, Fields("names")),
    row(AGENTS, "CreateAgentProfile", Write, Field("agent_profile.name")),
    row(AGENTS, "GetAgentProfile", Read, Field("name")),
    row(AGENTS, "ListAgentProfiles", Read, Resource::None),
    row(AGENTS, "UpdateAgentProfile", Write, Field("agent_profile.name")),
    row(AGENTS, "DeleteAgentProfile", Write, Field("name")),
    row(AGENTS, "RenameAgentProfile", Write, Field("name")),
    row(AGENTS, "ValidateAgentProfile", Read, Field("agent_profile.name")),
    row(AGENTS, "ImportAgentProfiles", Write, Count("documents")),
    row(AGENTS, "ExportAgentProfiles", Export, Fields("names")),
    // A backup carries every record (secrets sealed): admin only.
    Method { role: Role::Admin, ..row(ADMIN, "Backup", Export, Fixed("*")) },
];

/// The row of a gRPC path (`/package.Service/Method`).
pub fn find(path: &str) -> Option<&'static Method> {
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .iter()
        .find(|m| m.name == name && m.service == service)
}

/// The role a path needs before its request is decoded: its row's (`row`, from [`find`]); none
/// for health checks; reader for reflection when it is protected; admin for anything else.
pub fn required_role(row: Option<&Method>, path: &str, protect_reflection: bool) -> Option<Role> {
    if let Some(m) = row {
        return Some(m.role);
    }
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match service {
        "grpc.health.v1.Health" => None,
        s if s.starts_with("grpc.reflection.") => protect_reflection.then_some(Role::Reader),
        _ => Some(Role::Admin),
    }
}

/// The field numbers of each row's resource path, in table order, read once from the descriptors.
fn numbers() -> &'static [Vec<u32>] {
    static NUMBERS: OnceLock<Vec<Vec<u32>>> = OnceLock::new();
    NUMBERS.get_or_init(|| {
        let pool = prost_reflect::DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set built from proto/ decodes");
        METHODS.iter().map(|m| field_numbers(&pool, m).0).collect()
    })
}

/// The field numbers along a row's resource path (empty when it names no field or a name is not
/// in the descriptors: the unit test below keeps the table and the protos in step), and whether
/// the last one is repeated.
fn field_numbers(pool: &prost_reflect::DescriptorPool, m: &Method) -> (Vec<u32>, bool) {
    let path = match m.resource {
        Field(p) | Fields(p) | Count(p) => p,
        Resource::None | Fixed(_) => return (Vec::new(), false),
    };
    let Some(mut message) = pool
        .get_service_by_name(m.service)
        .and_then(|s| s.methods().find(|x| x.name() == m.name))
        .map(|x| x.input())
    else {
        return (Vec::new(), false);
    };
    let (mut out, mut repeated) = (Vec::new(), false);
    for part in path.split('.') {
        let Some(field) = message.get_field_by_name(part) else {
            return (Vec::new(), false);
        };
        out.push(field.number());
        repeated = field.is_list();
        if let prost_reflect::Kind::Message(inner) = field.kind() {
            message = inner;
        }
    }
    (out, repeated)
}

/// The resource a request names, read from its encoded message (`None` when the row names no
/// field). A malformed message yields what could be read before the damage.
pub fn resource_of(m: &'static Method, message: &[u8]) -> Option<String> {
    let index = METHODS.iter().position(|x| std::ptr::eq(x, m))?;
    let path = &numbers()[index];
    match m.resource {
        Resource::None => None,
        Fixed(text) => Some(text.to_owned()),
        Field(_) => {
            let mut last: &[u8] = &[];
            scan(message, path, &mut |v| last = v);
            Some(String::from_utf8_lossy(last).into_owned())
        }
        Fields(_) => {
            let mut found = Vec::new();
            scan(message, path, &mut |v| {
                found.push(String::from_utf8_lossy(v).into_owned());
            });
            Some(found.join(","))
        }
        Count(p) => {
            let mut n = 0usize;
            scan(message, path, &mut |_| n += 1);
            Some(format!("{n} {p}"))
        }
    }
}

/// A base-128 varint at the start of `buf`, and what follows it.
fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

/// Calls `found` with every length-delimited value at `path` (field numbers, outermost first) in
/// the protobuf-encoded `buf`; stops quietly where the encoding is damaged or cut short.
fn scan<'a>(mut buf: &'a [u8], path: &[u32], found: &mut dyn FnMut(&'a [u8])) {
    let Some((&want, rest_of_path)) = path.split_first() else {
        return;
    };
    while let Some((key, rest)) = varint(buf) {
        let skip = match key & 7 {
            0 => varint(rest).map(|(_, r)| rest.len() - r.len()),
            1 => Some(8),
            5 => Some(4),
            2 => {
                let Some((len, body)) = varint(rest) else {
                    return;
                };
                let Some(value) = usize::try_from(len).ok().and_then(|l| body.get(..l)) else {
                    return;
                };
                if u64::from(want) == key >> 3 {
                    if rest_of_path.is_empty() {
                        found(value);
                    } else {
                        scan(value, rest_of_path, found);
                    }
                }
                Some(rest.len() - body.len() + value.len())
            }
            _ => None,
        };
        match skip.and_then(|n| rest.get(n..)) {
            Some(r) => buf = r,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    #[test]
    fn every_rpc_of_the_protos_has_one_row_and_every_resource_field_exists() {
        let pool = prost_reflect::DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut rpcs = 0;
        for service in pool.services() {
            for method in service.methods() {
                rpcs += 1;
                let path = format!("/{}/{}", service.full_name(), method.name());
                let m = find(&path).unwrap_or_else(|| panic!("{path} has no row"));
                let (resolved, repeated) = field_numbers(&pool, m);
                match m.resource {
                    Field(p) | Fields(p) | Count(p) => assert_eq!(
                        resolved.len(),
                        p.split('.').count(),
                        "{path}: {p} is not a field path of its request"
                    ),
                    Resource::None | Fixed(_) => assert!(resolved.is_empty()),
                }
                let lists = matches!(m.resource, Fields(_) | Count(_));
                assert_eq!(
                    repeated, lists,
                    "{path}: Fields and Count name repeated fields"
                );
            }
        }
        assert_eq!(rpcs, METHODS.len(), "a row names an rpc the protos lack");
    }

    #[test]
    fn roles_come_from_the_table_and_the_rest_is_admin() {
        const P: &str = "/profileregistry.v1.";
        #[rustfmt::skip]
        let cases = [
            ("/grpc.health.v1.Health/Check".to_owned(), true, None),
            ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".to_owned(), true, Some(Role::Reader)),
            ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned(), false, None),
            (format!("{P}ProfileService/GetProfile"), false, Some(Role::Reader)),
            (format!("{P}ProfileService/CreateProfile"), false, Some(Role::Writer)),
            (format!("{P}ConversationService/WatchEvents"), false, Some(Role::Reader)),
            (format!("{P}AdminService/Backup"), false, Some(Role::Admin)),
            ("/other.Service/X".to_owned(), false, Some(Role::Admin)),
            (format!("{P}ProfileService/Nope"), false, Some(Role::Admin)),
        ];
        for (path, protect, want) in cases {
            assert_eq!(required_role(find(&path), &path, protect), want, "{path}");
        }
    }

    #[test]
    fn resources_are_read_from_the_encoded_request() {
        let get = pb::GetProfileRequest {
            name: "gpt-4o".into(),
            ..Default::default()
        };
        let create = pb::CreateProfileRequest {
            profile: Some(pb::Profile {
                name: "nested\u{1F600}".into(),
                ..Default::default()
            }),
        };
        let export = pb::ExportProfilesRequest {
            names: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let import = pb::ImportProfilesRequest {
            documents: vec![Default::default(); 3],
            ..Default::default()
        };
        let at = |path: &str| find(path).unwrap();
        let cases: [(&str, Vec<u8>, Option<&str>); 6] = [
            (
                "/profileregistry.v1.ProfileService/GetProfile",
                get.encode_to_vec(),
                Some("gpt-4o"),
            ),
            (
                "/profileregistry.v1.ProfileService/CreateProfile",
                create.encode_to_vec(),
                Some("nested\u{1F600}"),
            ),
            (
                "/profileregistry.v1.ProfileService/ExportProfiles",
                export.encode_to_vec(),
                Some("a,b"),
            ),
            (
                "/profileregistry.v1.ProfileService/ImportProfiles",
                import.encode_to_vec(),
                Some("3 documents"),
            ),
            (
                "/profileregistry.v1.ProfileService/ListProfiles",
                Vec::new(),
                None,
            ),
            (
                "/profileregistry.v1.AdminService/Backup",
                Vec::new(),
                Some("*"),
            ),
        ];
        for (path, bytes, want) in cases {
            assert_eq!(resource_of(at(path), &bytes).as_deref(), want, "{path}");
        }
        // A single field given twice reads as the decoder takes it: the last.
        let twice = [0x0a, 1, b'a', 0x0a, 1, b'b'];
        let m = at("/profileregistry.v1.ProfileService/GetProfile");
        assert_eq!(resource_of(m, &twice).as_deref(), Some("b"));
        // Cut short or damaged: what could be read, never a panic.
        let bytes = get.encode_to_vec();
        assert_eq!(resource_of(m, &bytes[..3]).as_deref(), Some(""));
        assert_eq!(resource_of(m, &[0xff; 12]).as_deref(), Some(""));
    }
}
