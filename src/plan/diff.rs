//! The field diff: which managed fields of a live object differ from what is wanted. One diff,
//! used by the planner (desired against observed) and by the executor when it adopts an object
//! a create found already there (the create's fields against the object read back), so both
//! change exactly the same fields. Also the requests a payload turns into (`NewCompany`,
//! `CompanyPatch`, `NewUser`, `UserPatch`).
//!
//! Pure. Only managed fields are compared: a `None` wanted field is never shown or changed.

use serde_json::{Value, json};

use super::{CompanyFields, FieldChange, Update, UserCreate, UserFields};
use crate::model::{
    CompanyPatch, LivePermissions, NewCompany, NewUser, ObservedCompany, ObservedUser, Permissions, UserPatch,
};
use crate::secret::Secret;

/// The update that brings `live` to `want`, if a managed field differs.
pub fn company_update(want: &CompanyFields, live: &ObservedCompany) -> Option<Update<CompanyFields>> {
    let meta = want.technical_meta_data.as_ref()?;
    if *meta == live.technical_meta_data {
        return None;
    }
    Some(Update {
        before: CompanyFields {
            name: live.name.clone(),
            technical_meta_data: Some(live.technical_meta_data.clone()),
        },
        after: want.clone(),
    })
}

/// The update that brings `live` to `want`, if a managed field differs. `before` shows the
/// live values of the fields `want` manages, under `want`'s company name.
pub fn user_update(want: &UserFields, live: &ObservedUser) -> Option<Update<UserFields>> {
    let managed = |wanted: &Option<String>, have: &String| wanted.as_ref().map(|_| have.clone());
    let before = UserFields {
        email: live.email.clone(),
        company: want.company.clone(),
        first_name: managed(&want.first_name, &live.first_name),
        last_name: managed(&want.last_name, &live.last_name),
        middle_name: managed(&want.middle_name, &live.middle_name),
        active: live.active,
        permissions: want.permissions.map(|p| live_flags(p, live.permissions)),
    };
    let update = Update { before, after: want.clone() };
    if update.fields().is_empty() { None } else { Some(update) }
}

/// The live values of the flags `wanted` manages.
fn live_flags(wanted: Permissions, live: LivePermissions) -> Permissions {
    Permissions {
        biometry: wanted.biometry.map(|_| live.biometry),
        collection: wanted.collection.map(|_| live.collection),
        documents: wanted.documents.map(|_| live.documents),
        quality: wanted.quality.map(|_| live.quality),
    }
}

impl Update<CompanyFields> {
    /// The fields that change, in a fixed order.
    pub fn fields(&self) -> Vec<FieldChange> {
        match (&self.before.technical_meta_data, &self.after.technical_meta_data) {
            (Some(before), Some(after)) if before != after => vec![FieldChange {
                field: "technical_meta_data".into(),
                before: before.clone(),
                after: after.clone(),
            }],
            (None, Some(after)) => vec![FieldChange {
                field: "technical_meta_data".into(),
                before: Value::Null,
                after: after.clone(),
            }],
            _ => Vec::new(),
        }
    }

    /// The request: only the fields that change.
    pub fn patch(&self) -> CompanyPatch {
        let changed = !self.fields().is_empty();
        CompanyPatch {
            name: None,
            technical_meta_data: if changed { self.after.technical_meta_data.clone() } else { None },
        }
    }
}

impl Update<UserFields> {
    /// The fields that change, in a fixed order: names, `active`, then each permission flag.
    pub fn fields(&self) -> Vec<FieldChange> {
        let (b, a) = (&self.before, &self.after);
        let mut out = Vec::new();
        let mut field = |name: &str, before: Value, after: Value| {
            if before != after {
                out.push(FieldChange { field: name.to_string(), before, after });
            }
        };
        for (name, before, after) in [
            ("first_name", &b.first_name, &a.first_name),
            ("last_name", &b.last_name, &a.last_name),
            ("middle_name", &b.middle_name, &a.middle_name),
        ] {
            if let Some(after) = after {
                field(name, json!(before), json!(after));
            }
        }
        field("active", json!(b.active), json!(a.active));
        if let Some(after) = &a.permissions {
            let before = b.permissions.unwrap_or_default();
            for (name, before, after) in [
                ("permissions.biometry", before.biometry, after.biometry),
                ("permissions.collection", before.collection, after.collection),
                ("permissions.documents", before.documents, after.documents),
                ("permissions.quality", before.quality, after.quality),
            ] {
                if let Some(after) = after {
                    field(name, json!(before), json!(after));
                }
            }
        }
        out
    }

    /// The request: only the fields that change.
    pub fn patch(&self) -> UserPatch {
        let (b, a) = (&self.before, &self.after);
        let text = |before: &Option<String>, after: &Option<String>| {
            after.clone().filter(|v| Some(v) != before.as_ref())
        };
        let before_flags = b.permissions.unwrap_or_default();
        let flag = |before: Option<bool>, after: Option<bool>| after.filter(|v| Some(*v) != before);
        let permissions = match &a.permissions {
            None => Permissions::default(),
            Some(after) => Permissions {
                biometry: flag(before_flags.biometry, after.biometry),
                collection: flag(before_flags.collection, after.collection),
                documents: flag(before_flags.documents, after.documents),
                quality: flag(before_flags.quality, after.quality),
            },
        };
        UserPatch {
            first_name: text(&b.first_name, &a.first_name),
            last_name: text(&b.last_name, &a.last_name),
            middle_name: text(&b.middle_name, &a.middle_name),
            active: (a.active != b.active).then_some(a.active),
            permissions,
            make_service: false,
        }
    }
}

impl CompanyFields {
    /// The request of a create.
    pub fn new_company(&self) -> NewCompany {
        NewCompany { name: self.name.clone(), technical_meta_data: self.technical_meta_data.clone() }
    }
}

impl UserCreate {
    /// The request of a create, in the company `company_id`: names the manifest leaves out
    /// are sent empty, permission flags it leaves out are left to the API's default.
    pub fn new_user(&self, company_id: &str, password: Secret) -> NewUser {
        let f = &self.fields;
        NewUser {
            email: f.email.clone(),
            company_id: company_id.to_string(),
            first_name: f.first_name.clone().unwrap_or_default(),
            last_name: f.last_name.clone().unwrap_or_default(),
            middle_name: f.middle_name.clone().unwrap_or_default(),
            password,
            active: f.active,
            permissions: f.permissions.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Email;

    fn live() -> ObservedUser {
        ObservedUser::sample("u1", "a@x", "Ann", "Lee")
    }

    fn want() -> UserFields {
        UserFields {
            email: Email::new("A@x"),
            company: "Acme".into(),
            first_name: None,
            last_name: None,
            middle_name: None,
            active: true,
            permissions: None,
        }
    }

    #[test]
    fn unmanaged_fields_are_never_a_difference() {
        assert_eq!(user_update(&want(), &live()), None);
    }

    #[test]
    fn only_the_fields_that_differ_are_changed_and_patched() {
        let mut w = want();
        w.first_name = Some("Ann".into());
        w.last_name = Some("Kim".into());
        w.active = false;
        w.permissions =
            Some(Permissions { quality: Some(false), biometry: Some(true), ..Permissions::default() });
        let update = user_update(&w, &live()).expect("a difference");
        let names: Vec<String> = update.fields().into_iter().map(|f| f.field).collect();
        assert_eq!(names, ["last_name", "active", "permissions.quality"]);
        let patch = update.patch();
        assert_eq!(patch.first_name, None);
        assert_eq!(patch.last_name.as_deref(), Some("Kim"));
        assert_eq!(patch.active, Some(false));
        assert_eq!(patch.permissions, Permissions { quality: Some(false), ..Permissions::default() });
        assert_eq!(
            update.before.permissions,
            Some(Permissions { quality: Some(true), biometry: Some(true), ..Permissions::default() })
        );
    }

    #[test]
    fn a_company_differs_only_in_managed_metadata() {
        let live = ObservedCompany {
            id: "c1".into(),
            name: "Acme".into(),
            in_deletion: false,
            technical_meta_data: json!({"a": 1}),
        };
        let unmanaged = CompanyFields { name: "Acme".into(), technical_meta_data: None };
        assert_eq!(company_update(&unmanaged, &live), None);
        let same = CompanyFields { name: "Acme".into(), technical_meta_data: Some(json!({"a": 1})) };
        assert_eq!(company_update(&same, &live), None);
        let other = CompanyFields { name: "Acme".into(), technical_meta_data: Some(json!({"a": 2})) };
        let update = company_update(&other, &live).expect("a difference");
        assert_eq!(update.fields().len(), 1);
        assert_eq!(update.patch().technical_meta_data, Some(json!({"a": 2})));
    }
}
