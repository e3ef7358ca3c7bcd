//! What a change asks of `apply::Effects`: the request types decoded from a `Change`, so the
//! executor (and the convergence test's simulator) read a plan the one way the planner meant.
//! Pure. A saved plan may have been edited, so every accessor checks its input and says what
//! is wrong instead of panicking.

use serde_json::Value;

use super::{Action, Address, Change, PlanError};
use crate::model::{CompanyPatch, NewCompany, NewUser, Permissions, UserPatch};
use crate::secret::Secret;

impl Change {
    /// The company to create (`create` of a `company/<name>`).
    pub fn new_company(&self) -> Result<NewCompany, PlanError> {
        let Address::Company(name) = &self.address else { return Err(self.invalid("is not a company")) };
        self.expect_action(Action::Create)?;
        let after = self.after_object()?;
        Ok(NewCompany { name: name.clone(), technical_meta_data: after.get("technical_meta_data").cloned() })
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

    /// The service user to create (`create` of a `service_user/<email>`): fields the manifest
    /// leaves out are sent empty (names) or left to the API's default (permission flags).
    pub fn new_user(&self, company_id: &str, password: Secret) -> Result<NewUser, PlanError> {
        let Address::ServiceUser(email) = &self.address else {
            return Err(self.invalid("is not a service user"));
        };
        self.expect_action(Action::Create)?;
        let after = self.after_object()?;
        let text = |f: &str| -> Result<String, PlanError> {
            match after.get(f) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(self.invalid(&format!("has a `{f}` that is not a string"))),
            }
        };
        let active = match after.get("active") {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| self.invalid("has an `active` that is not a boolean"))?,
        };
        let permissions = match after.get("permissions") {
            None => Permissions::default(),
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

    fn after_object(&self) -> Result<&serde_json::Map<String, Value>, PlanError> {
        self.after.as_ref().and_then(Value::as_object).ok_or_else(|| self.invalid("has no `after` object"))
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
    fn an_edited_change_is_refused_with_its_address() {
        let mut c = change(Address::Company("Acme".into()), Action::Update, json!({}));
        c.fields = vec![FieldChange { field: "name".into(), before: json!("a"), after: json!("b") }];
        let err = c.company_patch().expect_err("an unknown field").to_string();
        assert!(err.ends_with("the change of `company/Acme` has an unknown company field `name`"), "{err}");
        assert!(c.new_company().is_err());
    }
}
