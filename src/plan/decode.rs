//! What a change asks of `apply::Effects`: the request types decoded from a `Change`, so the
//! executor (and the convergence test's simulator) read a plan the one way the planner meant.
//! These are the plan format's only decoders; the executor calls them, it has none of its own.
//!
//! Pure. A saved plan may have been edited, so every accessor checks its input and says what
//! is wrong instead of panicking; every error names the change's address. A `null` field is
//! read as an absent one (an edited plan may spell "not managed" either way). Field names of
//! updates are the planner's: company `technical_meta_data`; service user `first_name`,
//! `last_name`, `middle_name`, `active`, `permissions.{biometry,collection,documents,quality}`;
//! any other name is refused.

use serde_json::Value;

use super::{Action, Address, Change, PlanError};
use crate::model::{CompanyPatch, NewCompany, NewUser, Permissions, UserPatch};
use crate::secret::Secret;

impl Change {
    /// The company to create (`create` of a `company/<name>`).
    pub fn new_company(&self) -> Result<NewCompany, PlanError> {
        let Address::Company(name) = &self.address else { return Err(self.invalid("is not a company")) };
        self.expect_action(Action::Create)?;
        // A create may carry no `after` fields beyond the name; then nothing else is managed.
        let meta = match &self.after {
            None => None,
            Some(_) => self.after_field("technical_meta_data")?.cloned(),
        };
        Ok(NewCompany { name: name.clone(), technical_meta_data: meta })
    }

    /// The fields to change (`update` of a `company/<name>`); only the fields that differ.
    pub fn company_patch(&self) -> Result<CompanyPatch, PlanError> {
        if !matches!(self.address, Address::Company(_)) {
            return Err(self.invalid("is not a company"));
        }
        self.expect_action(Action::Update)?;
        let mut patch = CompanyPatch::default();
        for field in &self.fields {
            match field.field.as_str() {
                "technical_meta_data" => patch.technical_meta_data = Some(field.after.clone()),
                other => return Err(self.invalid(&format!("has an unknown company field `{other}`"))),
            }
        }
        Ok(patch)
    }

    /// For a service user create: the id of its live company, when the company was live at
    /// plan time. `None` means the company is created by the change this one depends on, and
    /// the executor takes the id from that change's result.
    pub fn planned_company_id(&self) -> Option<&str> {
        self.after.as_ref()?.get("company_id")?.as_str()
    }

    /// For a service user create: the name of its company. The `company/…` dependency is the
    /// structural link and wins; a plan without one (edited, or its company unchanged) names
    /// the company in `after.company`.
    pub fn user_company(&self) -> Result<&str, PlanError> {
        let from_deps = self.depends_on.iter().find_map(|a| match a {
            Address::Company(name) => Some(name.as_str()),
            _ => None,
        });
        if let Some(name) = from_deps {
            return Ok(name);
        }
        self.after_field("company")?.and_then(Value::as_str).ok_or_else(|| {
            self.invalid("names no company (no `company/…` dependency and no `after.company`)")
        })
    }

    /// The service user to create (`create` of a `service_user/<email>`): fields the manifest
    /// leaves out are sent empty (names) or left to the API's default (permission flags).
    pub fn new_user(&self, company_id: &str, password: Secret) -> Result<NewUser, PlanError> {
        let Address::ServiceUser(email) = &self.address else {
            return Err(self.invalid("is not a service user"));
        };
        self.expect_action(Action::Create)?;
        let text = |f: &str| -> Result<String, PlanError> {
            match self.after_field(f)? {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(self.invalid(&format!("has a `{f}` that is not a string"))),
            }
        };
        let active = match self.after_field("active")? {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| self.invalid("has an `active` that is not a boolean"))?,
        };
        let permissions = match self.after_field("permissions")? {
            None => Permissions::default(),
            // serde's message names the field and the expected type; permission values are not secret.
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| self.invalid(&format!("has invalid `permissions`: {e}")))?,
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

    /// The fields to change (`update` of a `service_user/<email>`); only the fields that differ.
    pub fn user_patch(&self) -> Result<UserPatch, PlanError> {
        if !matches!(self.address, Address::ServiceUser(_)) {
            return Err(self.invalid("is not a service user"));
        }
        self.expect_action(Action::Update)?;
        let mut patch = UserPatch::default();
        for field in &self.fields {
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
                other => return Err(self.invalid(&format!("has an unknown service user field `{other}`"))),
            };
            if ok.is_none() {
                return Err(self.invalid(&format!("has a `{}` of the wrong type", field.field)));
            }
        }
        Ok(patch)
    }

    /// The field `name` of `after`, `None` when absent or `null`; an error when `after` is
    /// missing or not an object.
    fn after_field(&self, name: &str) -> Result<Option<&Value>, PlanError> {
        let after = self
            .after
            .as_ref()
            .and_then(Value::as_object)
            .ok_or_else(|| self.invalid("has no `after` object"))?;
        Ok(after.get(name).filter(|v| !v.is_null()))
    }

    fn expect_action(&self, action: Action) -> Result<(), PlanError> {
        if self.action == action {
            Ok(())
        } else {
            Err(self.invalid(&format!("is a `{}`, not a `{action}`", self.action)))
        }
    }

    fn invalid(&self, what: &str) -> PlanError {
        PlanError::Invalid { reason: format!("the change of `{}` {what}", self.address) }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Email;
    use crate::plan::FieldChange;

    fn change(address: Address, action: Action, after: Value) -> Change {
        Change {
            address,
            action,
            depends_on: vec![],
            before: None,
            after: Some(after),
            fields: vec![],
            reason: None,
            live_id: None,
            fingerprint: None,
            password: None,
        }
    }

    #[test]
    fn a_user_create_fills_unmanaged_names_with_empty_strings() {
        let c = change(
            Address::ServiceUser(Email::new("A@x")),
            Action::Create,
            json!({"email": "A@x", "company": "Acme", "company_id": "c1", "active": false, "first_name": "Ann",
                   "permissions": {"documents": false}, "password": "(sensitive)"}),
        );
        assert_eq!(c.planned_company_id(), Some("c1"));
        let u = c.new_user("c1", Secret::new("pw")).expect("valid create");
        assert_eq!((u.email.as_str(), u.first_name.as_str(), u.last_name.as_str()), ("A@x", "Ann", ""));
        assert!(!u.active);
        assert_eq!(u.permissions, Permissions { documents: Some(false), ..Permissions::default() });
    }

    #[test]
    fn a_user_patch_holds_only_the_changed_fields() {
        let mut c = change(Address::ServiceUser(Email::new("a@x")), Action::Update, json!({}));
        c.fields = vec![
            FieldChange { field: "active".into(), before: json!(true), after: json!(false) },
            FieldChange { field: "permissions.quality".into(), before: json!(true), after: json!(false) },
        ];
        let p = c.user_patch().expect("valid update");
        assert_eq!(p.active, Some(false));
        assert_eq!(p.permissions.quality, Some(false));
        assert_eq!((p.first_name, p.permissions.biometry), (None, None));
    }

    #[test]
    fn a_user_create_takes_its_company_from_the_dependency_else_from_after() {
        let mut c =
            change(Address::ServiceUser(Email::new("a@x")), Action::Create, json!({"company": "Acme"}));
        assert_eq!(c.user_company().ok(), Some("Acme"));
        c.depends_on = vec![Address::Company("Beta".into())];
        assert_eq!(c.user_company().ok(), Some("Beta"), "the dependency is the structural link");
        c.depends_on.clear();
        c.after = Some(json!({"company": null}));
        let err = c.user_company().expect_err("no company").to_string();
        assert!(err.contains("the change of `service_user/a@x` names no company"), "{err}");
    }

    #[test]
    fn a_null_field_of_a_create_is_read_as_absent() {
        let c = change(
            Address::ServiceUser(Email::new("a@x")),
            Action::Create,
            json!({"first_name": null, "active": null, "permissions": null}),
        );
        let u = c.new_user("c1", Secret::new("pw")).expect("nulls are absent");
        assert_eq!((u.first_name.as_str(), u.active), ("", true));
        assert_eq!(u.permissions, Permissions::default());
        let c = change(Address::Company("Acme".into()), Action::Create, json!({"technical_meta_data": null}));
        assert_eq!(c.new_company().expect("null is absent").technical_meta_data, None);
    }

    #[test]
    fn a_company_create_without_after_manages_only_the_name() {
        let mut c = change(Address::Company("Acme".into()), Action::Create, json!({}));
        c.after = None;
        let new = c.new_company().expect("the name is enough");
        assert_eq!((new.name.as_str(), new.technical_meta_data), ("Acme", None));
    }

    #[test]
    fn a_user_patch_refuses_an_unknown_field_or_a_wrong_type() {
        let mut c = change(Address::ServiceUser(Email::new("a@x")), Action::Update, json!({}));
        c.fields = vec![FieldChange { field: "email".into(), before: json!("a"), after: json!("b") }];
        let err = c.user_patch().expect_err("unknown").to_string();
        assert!(
            err.contains("the change of `service_user/a@x` has an unknown service user field `email`"),
            "{err}"
        );
        c.fields = vec![FieldChange { field: "active".into(), before: json!(true), after: json!("no") }];
        let err = c.user_patch().expect_err("wrong type").to_string();
        assert!(err.contains("has a `active` of the wrong type"), "{err}");
    }

    #[test]
    fn an_edited_change_is_refused_with_its_address() {
        let mut c = change(Address::Company("Acme".into()), Action::Update, json!({}));
        c.fields = vec![FieldChange { field: "name".into(), before: json!("a"), after: json!("b") }];
        let err = c.company_patch().expect_err("an unknown field").to_string();
        assert!(err.ends_with("the change of `company/Acme` has an unknown company field `name`"), "{err}");
        assert!(c.new_company().is_err());
    }
}
