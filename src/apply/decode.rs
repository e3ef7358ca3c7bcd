//! What a change asks of `Effects`: request values decoded from a `Change`.
//!
//! Pure. A saved plan may have been edited, so every decoder checks its input and says what
//! is wrong instead of panicking. Field names are the planner's (see the module docs of
//! `apply`): company `technical_meta_data`; service user `first_name`, `last_name`,
//! `middle_name`, `active`, `permissions.{biometry,collection,documents,quality}`.

use serde_json::{Map, Value};

use crate::model::{CompanyPatch, NewCompany, NewUser, Permissions, UserPatch};
use crate::plan::{Address, Change};
use crate::secret::Secret;

/// A change that cannot be carried out as written. The message names the address and field.
pub(super) fn invalid(change: &Change, what: &str) -> String {
    format!("the change of `{}` {what}", change.address)
}

fn after_object(change: &Change) -> Result<&Map<String, Value>, String> {
    change.after.as_ref().and_then(Value::as_object).ok_or_else(|| invalid(change, "has no `after` object"))
}

pub(super) fn new_company(change: &Change) -> Result<NewCompany, String> {
    let Address::Company(name) = &change.address else { return Err(invalid(change, "is not a company")) };
    // A create may carry no `after` fields beyond the name; then nothing else is managed.
    let meta = match &change.after {
        None => None,
        Some(_) => after_object(change)?.get("technical_meta_data").filter(|v| !v.is_null()).cloned(),
    };
    Ok(NewCompany { name: name.clone(), technical_meta_data: meta })
}

pub(super) fn company_patch(change: &Change) -> Result<CompanyPatch, String> {
    let mut patch = CompanyPatch::default();
    for field in &change.fields {
        match field.field.as_str() {
            "technical_meta_data" => patch.technical_meta_data = Some(field.after.clone()),
            other => return Err(invalid(change, &format!("has an unknown company field `{other}`"))),
        }
    }
    Ok(patch)
}

/// The company a service user create belongs to: its `company/…` dependency, else `after.company`.
pub(super) fn user_company(change: &Change) -> Result<String, String> {
    let from_deps = change.depends_on.iter().find_map(|a| match a {
        Address::Company(name) => Some(name.clone()),
        _ => None,
    });
    if let Some(name) = from_deps {
        return Ok(name);
    }
    after_object(change)?
        .get("company")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid(change, "names no company (no `company/…` dependency and no `after.company`)"))
}

pub(super) fn new_user(change: &Change, company_id: &str, password: Secret) -> Result<NewUser, String> {
    let Address::ServiceUser(email) = &change.address else {
        return Err(invalid(change, "is not a service user"));
    };
    let after = after_object(change)?;
    let text = |f: &str| -> Result<String, String> {
        match after.get(f) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(invalid(change, &format!("has a `{f}` that is not a string"))),
        }
    };
    let active = match after.get("active") {
        None | Some(Value::Null) => true,
        Some(v) => v.as_bool().ok_or_else(|| invalid(change, "has an `active` that is not a boolean"))?,
    };
    let permissions = match after.get("permissions") {
        None | Some(Value::Null) => Permissions::default(),
        // serde's message names the field and the expected type; permission values are not secret.
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| invalid(change, &format!("has invalid `permissions`: {e}")))?,
    };
    Ok(NewUser {
        email: email.clone(),
        company_id: company_id.to_string(),
        first_name: text("first_name")?,
        last_name: text("last_name")?,
        middle_name: text("middle_name")?,
        password,
        active,
        permissions,
    })
}

pub(super) fn user_patch(change: &Change) -> Result<UserPatch, String> {
    let mut patch = UserPatch::default();
    for field in &change.fields {
        let text = || field.after.as_str().map(str::to_string);
        let flag = || field.after.as_bool();
        let ok = match field.field.as_str() {
            "first_name" => text().map(|v| patch.first_name = Some(v)),
            "last_name" => text().map(|v| patch.last_name = Some(v)),
            "middle_name" => text().map(|v| patch.middle_name = Some(v)),
            "active" => flag().map(|v| patch.active = Some(v)),
            "permissions.biometry" => flag().map(|v| patch.permissions.biometry = Some(v)),
            "permissions.collection" => flag().map(|v| patch.permissions.collection = Some(v)),
            "permissions.documents" => flag().map(|v| patch.permissions.documents = Some(v)),
            "permissions.quality" => flag().map(|v| patch.permissions.quality = Some(v)),
            other => return Err(invalid(change, &format!("has an unknown service user field `{other}`"))),
        };
        if ok.is_none() {
            return Err(invalid(change, &format!("has a `{}` of the wrong type", field.field)));
        }
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Email;
    use crate::plan::{Action, FieldChange};

    fn change(address: Address, action: Action, after: Option<Value>) -> Change {
        Change {
            address,
            action,
            depends_on: vec![],
            before: None,
            after,
            fields: vec![],
            reason: None,
            live_id: None,
            fingerprint: None,
            password: None,
        }
    }

    #[test]
    fn a_user_create_takes_names_flags_and_permissions_from_after() {
        let mut c = change(
            Address::ServiceUser(Email::new("A@x")),
            Action::Create,
            Some(json!({"company": "Acme", "first_name": "Ann", "active": false,
                        "permissions": {"documents": false}, "password": "(sensitive)"})),
        );
        assert_eq!(user_company(&c), Ok("Acme".to_string()));
        c.depends_on = vec![Address::Company("Beta".into())];
        assert_eq!(user_company(&c), Ok("Beta".to_string()), "the dependency is the structural link");
        let u = new_user(&c, "c1", Secret::new("pw")).expect("valid");
        assert_eq!((u.first_name.as_str(), u.last_name.as_str(), u.active), ("Ann", "", false));
        assert_eq!(u.permissions, Permissions { documents: Some(false), ..Permissions::default() });
        assert_eq!(u.company_id, "c1");
    }

    #[test]
    fn a_user_patch_holds_only_the_changed_fields_and_rejects_unknown_ones() {
        let mut c = change(Address::ServiceUser(Email::new("a@x")), Action::Update, None);
        c.fields = vec![
            FieldChange { field: "active".into(), before: json!(true), after: json!(false) },
            FieldChange { field: "permissions.quality".into(), before: json!(true), after: json!(false) },
        ];
        let p = user_patch(&c).expect("valid");
        assert_eq!(p.active, Some(false));
        assert_eq!(p.permissions.quality, Some(false));
        assert_eq!(p.first_name, None);
        c.fields.push(FieldChange { field: "email".into(), before: json!("a"), after: json!("b") });
        let err = user_patch(&c).expect_err("unknown");
        assert!(err.contains("unknown service user field `email`"), "{err}");
    }

    #[test]
    fn a_company_patch_rejects_a_name_change() {
        let mut c = change(Address::Company("Acme".into()), Action::Update, None);
        c.fields = vec![FieldChange { field: "name".into(), before: json!("a"), after: json!("b") }];
        assert!(company_patch(&c).is_err());
    }
}
