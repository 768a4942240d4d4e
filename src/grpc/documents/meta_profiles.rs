//! profileregistry.v1.MetaProfileService: the SDK's meta-profiles (a classifier model that picks
//! one of several profiles), typed; its rpcs are [`Named`]'s.
use serde_json::{Map, Value};
use tonic::{Response, Status};

use super::{name_violation, validate, DocumentApi, Named};
use crate::auth::principal;
use crate::domain::{DocKind, Document, MetaProfile, MetaProfileClass, Violation};
use crate::grpc::convert::timestamp_to_pb;
use crate::openhands::meta_profiles;
use crate::pb;
use crate::store::{PutMode, StoreError};

fn meta_to_pb(doc: &Document) -> Result<pb::MetaProfile, Status> {
    let m = meta_profiles::parse_object(&doc.body).map_err(|reason| StoreError::Corrupt {
        key: format!("documents/meta_profile/{}", doc.name),
        reason,
    })?;
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
        revision: doc.revision,
        create_time: Some(timestamp_to_pb(doc.create_time)),
        update_time: Some(timestamp_to_pb(doc.update_time)),
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

impl Named for pb::MetaProfile {
    const KIND: DocKind = DocKind::MetaProfile;
    const FIELD: &'static str = "meta_profile";
    const BUILDS_ON_STORED: bool = false;
    type Msg = Self;

    fn to_pb(doc: &Document) -> Result<Self, Status> {
        meta_to_pb(doc)
    }

    fn from_pb(
        msg: Option<Self>,
        _old: Option<&Document>,
    ) -> Result<(String, Map<String, Value>), Vec<Violation>> {
        meta_from_pb(msg)
    }

    fn name_of(msg: &Self) -> &str {
        &msg.name
    }
}

type Meta = pb::MetaProfile;

rpcs! {
    impl pb::meta_profile_service_server::MetaProfileService for DocumentApi {
        fn create_meta_profile(self, req: pb::CreateMetaProfileRequest) -> Meta {
            let msg = req.into_inner().meta_profile;
            self.put::<Meta>(msg, PutMode::Create, None).await
        }

        fn get_meta_profile(self, req: pb::GetMetaProfileRequest) -> Meta {
            self.read::<Meta>(&req.into_inner().name).await
        }

        fn list_meta_profiles(self, req: pb::ListMetaProfilesRequest) -> pb::ListMetaProfilesResponse {
            let r = req.into_inner();
            let (meta_profiles, next_page_token) =
                self.list::<Meta>(r.page_size, &r.page_token).await?;
            Ok(Response::new(pb::ListMetaProfilesResponse {
                meta_profiles,
                next_page_token,
            }))
        }

        fn update_meta_profile(self, req: pb::UpdateMetaProfileRequest) -> Meta {
            let r = req.into_inner();
            let mode = PutMode::of_update(r.allow_missing);
            self.put::<Meta>(r.meta_profile, mode, r.expected_revision)
                .await
        }

        fn delete_meta_profile(self, req: pb::DeleteMetaProfileRequest) -> pb::DeleteDocumentResponse {
            let who = principal(&req);
            let r = req.into_inner();
            let (revision, missing) = (r.expected_revision, r.allow_missing);
            self.delete_named::<Meta>(&who, r.name, revision, missing, r.force)
                .await
        }

        fn rename_meta_profile(self, req: pb::RenameMetaProfileRequest) -> Meta {
            let r = req.into_inner();
            self.rename::<Meta>(&r.name, &r.new_name).await
        }

        fn validate_meta_profile(self, req: pb::ValidateMetaProfileRequest) -> pb::ValidateProfileResponse {
            Ok(validate::<Meta>(req.into_inner().meta_profile))
        }

        fn import_meta_profiles(self, req: pb::ImportDocumentsRequest) -> pb::ImportProfilesResponse {
            self.import_files(DocKind::MetaProfile, req.into_inner())
                .await
        }

        fn export_meta_profiles(self, req: pb::ExportDocumentsRequest) -> pb::ExportDocumentsResponse {
            self.export_files(DocKind::MetaProfile, req.into_inner().names)
                .await
        }
    }
}
