//! profileregistry.v1.MetaProfileService: the SDK's meta-profiles (a classifier model that picks
//! one of several profiles), typed; its rpcs are [`Named`]'s.
use serde_json::{Map, Value};
use tonic::{Response, Status};

use super::{name_violation, DocumentApi, Named};
use crate::domain::{DocKind, Document, MetaProfile, MetaProfileClass, Violation};
use crate::openhands::meta_profiles;
use crate::pb;
use crate::store::{PutMode, StoreError};

fn meta_to_pb(doc: &Document) -> Result<pb::MetaProfile, Status> {
    let m = meta_profiles::parse_object(&doc.body).map_err(|reason| StoreError::Corrupt {
        key: format!("documents/meta_profile/{}", doc.name),
        reason,
    })?;
    let (revision, create_time, update_time) = super::stamps(doc);
    Ok(pb::MetaProfile {
        name: doc.name.clone(),
        classifier_model: m.classifier_model,
        classes: m
            .classes
            .into_iter()
            .map(|c| pb::MetaProfileClass {
                description: c.description,
                model: c.model,
            })
            .collect(),
        prompt_template: m.prompt_template,
        model_table: m.model_table,
        revision,
        create_time,
        update_time,
    })
}

/// A meta-profile from a request: its name and stored object, or every violation.
fn meta_from_pb(
    pb: Option<pb::MetaProfile>,
) -> Result<(String, Map<String, Value>), Vec<Violation>> {
    let pb = pb.ok_or_else(|| vec![Violation::new("meta_profile", "is required")])?;
    let mut violations = Vec::new();
    violations.extend(name_violation(&pb.name, "meta_profile.name"));
    let m = MetaProfile {
        classifier_model: pb.classifier_model,
        classes: pb
            .classes
            .into_iter()
            .map(|c| MetaProfileClass {
                description: c.description,
                model: c.model,
            })
            .collect(),
        prompt_template: pb.prompt_template,
        model_table: pb.model_table,
    };
    if m.classifier_model.is_empty() {
        violations.push(Violation::new(
            "meta_profile.classifier_model",
            "is required (a profile name)",
        ));
    }
    for (i, c) in m.classes.iter().enumerate() {
        if c.model.is_empty() {
            violations.push(Violation::new(
                format!("meta_profile.classes[{i}].model"),
                "is required (a profile name)",
            ));
        }
    }
    violations.extend(m.violations("meta_profile"));
    if m.classes.is_empty() && m.prompt_template.is_none() {
        violations.push(Violation::new(
            "meta_profile.classes",
            "a meta-profile needs classes or a prompt_template (the SDK's API refuses one with neither)",
        ));
    }
    if violations.is_empty() {
        Ok((pb.name, meta_profiles::to_object(&m)))
    } else {
        Err(violations)
    }
}

named_rpcs! {
    pb::MetaProfile: pb::meta_profile_service_server::MetaProfileService, DocKind::MetaProfile, builds_on_stored false, field meta_profile, listing meta_profiles;
    to_pb meta_to_pb, from_pb |msg, _old| meta_from_pb(msg);
    create_meta_profile(pb::CreateMetaProfileRequest), get_meta_profile(pb::GetMetaProfileRequest), list_meta_profiles(pb::ListMetaProfilesRequest) -> ListMetaProfilesResponse,
    update_meta_profile(pb::UpdateMetaProfileRequest), delete_meta_profile(pb::DeleteMetaProfileRequest) force |r| r.force,
    rename_meta_profile(pb::RenameMetaProfileRequest), validate_meta_profile(pb::ValidateMetaProfileRequest), import_meta_profiles, export_meta_profiles
}
