//! The saved plan format, version 1: the only writer (`to_json`, also `plan --format json` and
//! `--out`) and the only reader (`from_json`, for `apply --plan`) of the plan file, the only
//! version check and the only summary count. `docs/plan-format.md` is its contract.
//!
//! Pure. The wire shapes are private serde structs; a `Change`'s typed payload is converted to
//! them and back, so the JSON is decoded generically (by kind and action), as Terraform's
//! planfile does, with no field looked up by name outside serde. Reading is strict where
//! executing depends on it (a change's kind and action, its payload, its `summary` count, the
//! `fields` of an update agreeing with its `before`/`after`) and lenient elsewhere: unknown
//! fields are ignored, a `null` optional field reads as an absent one. Every error names the
//! change's address.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Action, Address, Change, CompanyFields, Conflict, FieldChange, Payload, Plan, PlanError, PruneScope,
    Summary, TokenIssue, TokenReason, Unmanaged, Update, UserCreate, UserFields,
};
use crate::model::{ApiVersion, Email, Permissions, Prune, StoredToken};
use crate::secret::PasswordSource;

/// The saved plan format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a secret field shows in a plan.
pub const SENSITIVE: &str = "(sensitive)";

/// The plan as the contract's versioned JSON: pretty, keys in a fixed order, trailing newline.
/// Strings are escaped for JSON by `escape::json_pretty`: control, bidirectional and invisible
/// characters as `\uXXXX`, so that a plan shown on a terminal or in a pull request holds none
/// raw; a plan without them is written exactly as `serde_json` writes it.
pub fn to_json(plan: &Plan) -> String {
    // Serializing the wire types cannot fail: every map has string keys and serde_json writes
    // non-finite floats as `null` instead of failing.
    let mut out = crate::escape::json_pretty(&WirePlan::from(plan)).unwrap_or_else(|_| unreachable!());
    out.push('\n');
    out
}

/// Read a saved plan. The version is checked before the shape, so a plan from a newer ozform
/// is refused with a clear message instead of a confusing field error. A `plan_id` must be the
/// id of the changes read (`id::plan_id`): a plan edited after it was written is refused
/// (`PlanError::IdMismatch`); a plan without one (written before plan ids) is read as it is.
pub fn from_json(text: &str) -> Result<Plan, PlanError> {
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    match value.get("format_version") {
        None => return Err(invalid("it has no `format_version`")),
        Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
        Some(v) => {
            return Err(PlanError::UnsupportedVersion { found: v.to_string(), supported: FORMAT_VERSION });
        }
    }
    // Parsed from the text again (not from `value`) so that errors carry line and column.
    let wire: WirePlan = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let changes = wire.changes.into_iter().map(WireChange::decode).collect::<Result<Vec<_>, _>>()?;
    if Summary::of(&changes) != wire.summary.read() {
        return Err(invalid("its `summary` does not match its `changes`"));
    }
    check_prune_scopes(&changes, &wire.prune)?;
    check_source_ids(&changes, &wire.source_ids)?;
    let plan = Plan {
        installation: wire.installation,
        api_url: wire.api_url,
        api_version: wire.api_version,
        api_version_detected: wire.api_version_detected,
        changes,
        conflicts: wire.conflicts,
        unmanaged: wire.unmanaged,
        warnings: wire.warnings,
        prune: wire.prune,
        source_ids: wire.source_ids,
    };
    if let Some(written) = wire.plan_id {
        if !super::id::is_plan_id(&written) {
            return Err(invalid("its `plan_id` is not 64 lower-case hexadecimal digits"));
        }
        let computed = super::id::plan_id(&plan);
        if written != computed {
            return Err(PlanError::IdMismatch { written, computed });
        }
    }
    Ok(plan)
}

/// Every removal must be of a company the plan's `prune` lists with that mode: the guard of
/// `apply --plan` counts from there, so a removal outside it would escape the guard.
fn check_prune_scopes(changes: &[Change], scopes: &[PruneScope]) -> Result<(), PlanError> {
    for change in changes {
        let Some(user) = change.removed() else { continue };
        let mode = if change.action() == Action::Delete { Prune::Delete } else { Prune::Deactivate };
        if !scopes.iter().any(|s| s.company == user.company && s.mode == mode) {
            return Err(invalid(format!(
                "the change of `{}` removes a user of company `{}`, which its `prune` does not list with `{mode}`",
                change.address, user.company
            )));
        }
    }
    Ok(())
}

/// Each `source_ids` entry must name a create of the plan, with an id that is one line of
/// printable text: the map is written to `--id-map`, where nothing else may hide.
fn check_source_ids(changes: &[Change], source_ids: &BTreeMap<String, String>) -> Result<(), PlanError> {
    for (address, id) in source_ids {
        let created =
            changes.iter().any(|c| c.action() == Action::Create && c.address.to_string() == *address);
        if !created {
            return Err(invalid(format!(
                "its `source_ids` names `{address}`, which none of its changes creates"
            )));
        }
        if !crate::model::is_source_id(id) {
            return Err(invalid(format!(
                "the `source_ids` entry of `{address}` is not an id (blank, a control character, or over {} bytes)",
                crate::model::MAX_SOURCE_ID_BYTES
            )));
        }
    }
    Ok(())
}

impl Change {
    /// `before` as the plan shows it: the managed fields of the live object, or of the stored
    /// token; `None` for a create and a token the store does not hold.
    pub fn before_json(&self) -> Option<Value> {
        WireChange::from(self).before
    }

    /// `after` as the plan shows it: the managed fields after the change, a secret as
    /// `"(sensitive)"`.
    pub fn after_json(&self) -> Option<Value> {
        WireChange::from(self).after
    }
}

fn invalid(reason: impl Into<String>) -> PlanError {
    PlanError::Invalid { reason: reason.into() }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes.

#[derive(Serialize, Deserialize)]
struct WirePlan {
    #[serde(default)]
    format_version: u32,
    /// The id of the changes (`id::plan_id`); always written, optional to read (plans written
    /// before plan ids have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan_id: Option<String>,
    /// The project file's installation the plan was made for; written only then (an optional
    /// field of format version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    installation: Option<String>,
    api_url: String,
    api_version: ApiVersion,
    /// Written only when true (an optional field of format version 1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    api_version_detected: bool,
    changes: Vec<WireChange>,
    summary: WireSummary,
    #[serde(default)]
    conflicts: Vec<Conflict>,
    #[serde(default)]
    unmanaged: Vec<Unmanaged>,
    #[serde(default)]
    warnings: Vec<String>,
    /// The companies that prune, with the guard's figures; written only when one does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    prune: Vec<PruneScope>,
    /// The `source_id` of each object created whose manifest names one, by address; written
    /// only when there is one (an optional field of format version 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    source_ids: BTreeMap<String, String>,
}

impl From<&Plan> for WirePlan {
    fn from(plan: &Plan) -> Self {
        WirePlan {
            format_version: FORMAT_VERSION,
            plan_id: Some(super::id::plan_id(plan)),
            installation: plan.installation.clone(),
            api_url: plan.api_url.clone(),
            api_version: plan.api_version,
            api_version_detected: plan.api_version_detected,
            changes: plan.changes.iter().map(WireChange::from).collect(),
            summary: WireSummary::of(plan.summary(), !plan.prune.is_empty()),
            conflicts: plan.conflicts.clone(),
            unmanaged: plan.unmanaged.clone(),
            warnings: plan.warnings.clone(),
            prune: plan.prune.clone(),
            source_ids: plan.source_ids.clone(),
        }
    }
}

/// The `summary`. `deactivate` and `delete` are written when some company prunes (the plan
/// has a `prune` section), so that a plan without removals is written as before removals
/// existed; absent, they read as 0.
#[derive(Serialize, Deserialize)]
struct WireSummary {
    create: usize,
    update: usize,
    issue: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deactivate: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delete: Option<usize>,
}

impl WireSummary {
    fn of(s: Summary, removals: bool) -> Self {
        WireSummary {
            create: s.create,
            update: s.update,
            issue: s.issue,
            deactivate: removals.then_some(s.deactivate),
            delete: removals.then_some(s.delete),
        }
    }

    fn read(&self) -> Summary {
        Summary {
            create: self.create,
            update: self.update,
            issue: self.issue,
            deactivate: self.deactivate.unwrap_or(0),
            delete: self.delete.unwrap_or(0),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireChange {
    address: Address,
    action: Action,
    #[serde(default)]
    depends_on: Vec<Address>,
    before: Option<Value>,
    after: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fields: Vec<FieldChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The token reason as data (`kind` and its figures); absent in plans saved by an earlier
    /// ozform, which are read with the `reason` sentence alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_reason: Option<TokenReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<PasswordSource>,
}

/// A company's `before`/`after`.
#[derive(Serialize, Deserialize)]
struct WireCompany {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    technical_meta_data: Option<Value>,
}

/// A service user's `before`/`after` (a create's `after` also names `company_id` and shows
/// the password as `"(sensitive)"`).
#[derive(Serialize, Deserialize)]
struct WireUser {
    #[serde(default)]
    email: Option<Email>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    company_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    middle_name: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permissions: Option<Permissions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// A token's `before`: the stored token (never its value).
#[derive(Serialize, Deserialize)]
struct WireStored {
    user_id: String,
    api_url: String,
    expire_date: f64,
}

/// A token's `after`.
#[derive(Serialize, Deserialize)]
struct WireToken {
    #[serde(default)]
    email: Option<Email>,
    /// Written as `null` while the user is being created.
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// The user's company, kept in the token record; absent in plans of earlier ozforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    company: Option<String>,
}

/// The wire shapes become JSON values through `serde_json`'s sorted maps, so keys come out in
/// a fixed (alphabetical) order whatever the struct order.
fn value<T: Serialize>(wire: &T) -> Value {
    // Serializing these plain structs cannot fail (string keys, no custom serializers).
    serde_json::to_value(wire).unwrap_or(Value::Null)
}

impl WireCompany {
    fn of(fields: &CompanyFields) -> Value {
        value(&WireCompany {
            name: Some(fields.name.clone()),
            technical_meta_data: fields.technical_meta_data.clone(),
        })
    }
}

impl WireUser {
    fn of(fields: &UserFields) -> Self {
        WireUser {
            email: Some(fields.email.clone()),
            company: Some(fields.company.clone()),
            company_id: None,
            first_name: fields.first_name.clone(),
            last_name: fields.last_name.clone(),
            middle_name: fields.middle_name.clone(),
            active: Some(fields.active),
            permissions: fields.permissions,
            password: None,
        }
    }
}

impl From<&Change> for WireChange {
    fn from(change: &Change) -> Self {
        let mut wire = WireChange {
            address: change.address.clone(),
            action: change.action(),
            depends_on: change.depends_on.clone(),
            before: None,
            after: None,
            fields: change.fields(),
            reason: None,
            token_reason: None,
            live_id: change.live_id.clone(),
            fingerprint: change.fingerprint.clone(),
            password: None,
        };
        match &change.payload {
            Payload::CreateCompany(fields) => wire.after = Some(WireCompany::of(fields)),
            Payload::UpdateCompany(update) => {
                wire.before = Some(WireCompany::of(&update.before));
                wire.after = Some(WireCompany::of(&update.after));
            }
            Payload::CreateUser(create) => {
                let mut after = WireUser::of(&create.fields);
                after.company_id.clone_from(&create.company_id);
                after.password = Some(SENSITIVE.to_string());
                wire.after = Some(value(&after));
                wire.password = Some(create.password.clone());
            }
            Payload::UpdateUser(update) => {
                wire.before = Some(value(&WireUser::of(&update.before)));
                wire.after = Some(value(&WireUser::of(&update.after)));
            }
            Payload::IssueToken(issue) => {
                wire.before = issue.stored.as_ref().map(|s| {
                    value(&WireStored {
                        user_id: s.user_id.clone(),
                        api_url: s.api_url.clone(),
                        expire_date: s.expire_date,
                    })
                });
                let email = match &change.address {
                    Address::Token(email) => Some(email.clone()),
                    _ => None,
                };
                wire.after = Some(value(&WireToken {
                    email,
                    user_id: issue.user_id.clone(),
                    api_url: Some(issue.api_url.clone()),
                    access_token: Some(SENSITIVE.to_string()),
                    company: issue.company.clone(),
                }));
                wire.reason = Some(issue.reason.to_string());
                wire.token_reason = match &issue.reason {
                    TokenReason::Stated(_) => None,
                    other => Some(other.clone()),
                };
            }
            Payload::DeactivateUser(user) => {
                wire.before = Some(value(&WireUser::of(user)));
                wire.after = Some(value(&WireUser::of(&UserFields { active: false, ..user.clone() })));
                wire.reason = change.reason_text();
            }
            Payload::DeleteUser(user) => {
                wire.before = Some(value(&WireUser::of(user)));
                wire.reason = change.reason_text();
            }
        }
        wire
    }
}

impl WireChange {
    fn decode(self) -> Result<Change, PlanError> {
        let payload = match (&self.address, self.action) {
            (Address::Company(name), Action::Create) => Payload::CreateCompany(self.company_after(name)?),
            (Address::Company(name), Action::Update) => {
                let before = self.company(name, self.before.as_ref(), "before")?;
                let after = self.company_after(name)?;
                self.require_live_id()?;
                Payload::UpdateCompany(
                    self.checked(Update { before, after }, Update::<CompanyFields>::fields)?,
                )
            }
            (Address::ServiceUser(email), Action::Create) => Payload::CreateUser(self.user_create(email)?),
            (Address::ServiceUser(email), Action::Update) => {
                let before = self.user(email, self.required(self.before.as_ref(), "before")?, false)?;
                let after = self.user(email, self.required(self.after.as_ref(), "after")?, true)?;
                self.require_live_id()?;
                Payload::UpdateUser(self.checked(Update { before, after }, Update::<UserFields>::fields)?)
            }
            (Address::Token(_), Action::Issue) => Payload::IssueToken(self.token_issue()?),
            (Address::ServiceUser(email), Action::Delete) => {
                let user = self.removed_user(email)?;
                if self.after.is_some() {
                    return Err(self.refuse("deletes its user but has an `after`: it must be null"));
                }
                Payload::DeleteUser(user)
            }
            (Address::ServiceUser(email), Action::Deactivate) => {
                let user = self.removed_user(email)?;
                let after = self.user(email, self.required(self.after.as_ref(), "after")?, true)?;
                if !user.active || after != (UserFields { active: false, ..user.clone() }) {
                    return Err(self.refuse(
                        "must have an `after` equal to its `before` but for `active`, from `true` to `false`",
                    ));
                }
                let payload = Payload::DeactivateUser(user);
                let derived = Change {
                    address: self.address.clone(),
                    depends_on: Vec::new(),
                    live_id: None,
                    fingerprint: None,
                    payload,
                };
                if derived.fields() != self.fields {
                    return Err(
                        self.refuse("has `fields` that do not match what its `before` and `after` differ in")
                    );
                }
                derived.payload
            }
            (address, action) => {
                return Err(self.refuse(&format!("is a `{action}`, which is not an action of `{address}`")));
            }
        };
        Ok(Change {
            address: self.address,
            depends_on: self.depends_on,
            live_id: self.live_id,
            fingerprint: self.fingerprint,
            payload,
        })
    }

    fn refuse(&self, what: &str) -> PlanError {
        invalid(format!("the change of `{}` {what}", self.address))
    }

    fn required<'a>(&self, side: Option<&'a Value>, name: &str) -> Result<&'a Value, PlanError> {
        side.ok_or_else(|| self.refuse(&format!("has no `{name}` object")))
    }

    /// The live user a removal acts on: its `before`, with the `live_id` and `fingerprint` that
    /// let `apply --plan` find it and see whether it moved.
    fn removed_user(&self, email: &Email) -> Result<UserFields, PlanError> {
        let before = self.user(email, self.required(self.before.as_ref(), "before")?, false)?;
        self.require_live_id()?;
        if self.fingerprint.is_none() {
            return Err(self.refuse("has no `fingerprint` of the user it removes"));
        }
        Ok(before)
    }

    fn require_live_id(&self) -> Result<(), PlanError> {
        if self.live_id.is_none() {
            return Err(self.refuse("has no `live_id` to update"));
        }
        Ok(())
    }

    /// A side decoded by serde into its wire shape. serde's message names the field and the
    /// expected type; plan values are not secret.
    fn decode_side<T: for<'de> Deserialize<'de>>(&self, side: &Value, name: &str) -> Result<T, PlanError> {
        T::deserialize(side).map_err(|e| self.refuse(&format!("has an invalid `{name}`: {e}")))
    }

    /// An update's `fields` must be what its `before`/`after` differ in: the executor acts on
    /// the difference, so an edited list would otherwise be silently ignored.
    fn checked<T>(
        &self,
        update: Update<T>,
        fields: fn(&Update<T>) -> Vec<FieldChange>,
    ) -> Result<Update<T>, PlanError> {
        let derived = fields(&update);
        if derived.is_empty() {
            return Err(self.refuse("changes no field: its `before` and `after` are the same"));
        }
        if derived != self.fields {
            return Err(self.refuse("has `fields` that do not match what its `before` and `after` differ in"));
        }
        Ok(update)
    }

    fn company(&self, name: &str, side: Option<&Value>, which: &str) -> Result<CompanyFields, PlanError> {
        let wire: WireCompany = self.decode_side(self.required(side, which)?, which)?;
        if wire.name.as_deref().is_some_and(|n| n != name) {
            return Err(self.refuse(&format!("names another company in `{which}.name`")));
        }
        Ok(CompanyFields { name: name.to_string(), technical_meta_data: wire.technical_meta_data })
    }

    /// A company create may carry no `after` beyond its address: then only the name is managed.
    fn company_after(&self, name: &str) -> Result<CompanyFields, PlanError> {
        match &self.after {
            None => Ok(CompanyFields { name: name.to_string(), technical_meta_data: None }),
            Some(_) => self.company(name, self.after.as_ref(), "after"),
        }
    }

    /// A user's side. The company is the `company/…` dependency when there is one (the
    /// structural link), else `company` of the side; an `after` may not contradict the address.
    fn user(&self, email: &Email, side: &Value, after: bool) -> Result<UserFields, PlanError> {
        let which = if after { "after" } else { "before" };
        let wire: WireUser = self.decode_side(side, which)?;
        let from_deps = self.depends_on.iter().find_map(|a| match a {
            Address::Company(name) => Some(name.clone()),
            _ => None,
        });
        let company = match (from_deps, wire.company) {
            (Some(dep), Some(named)) if dep != named => {
                return Err(self.refuse(&format!(
                    "names company `{named}` in `{which}.company` but depends on `company/{dep}`"
                )));
            }
            (Some(dep), _) => dep,
            (None, Some(named)) => named,
            (None, None) => {
                return Err(
                    self.refuse("names no company (no `company/…` dependency and no `after.company`)")
                );
            }
        };
        let email = match wire.email {
            Some(written) if after && written != *email => {
                return Err(self.refuse(&format!("has another email in `after.email`: `{written}`")));
            }
            Some(written) if !after => written,
            _ => email.clone(),
        };
        Ok(UserFields {
            email,
            company,
            first_name: wire.first_name,
            last_name: wire.last_name,
            middle_name: wire.middle_name,
            active: wire.active.unwrap_or(true),
            permissions: wire.permissions,
        })
    }

    fn user_create(&self, email: &Email) -> Result<UserCreate, PlanError> {
        let after = self.required(self.after.as_ref(), "after")?;
        let wire: WireUser = self.decode_side(after, "after")?;
        let fields = self.user(email, after, true)?;
        let password = self.password.clone().ok_or_else(|| {
            self.refuse(
                "has no `password` source (`{\"env\": NAME}`, `{\"file\": PATH}` or `{\"generate\": true}`)",
            )
        })?;
        Ok(UserCreate { fields, company_id: wire.company_id, password })
    }

    fn token_issue(&self) -> Result<TokenIssue, PlanError> {
        let stored = match &self.before {
            None => None,
            Some(side) => {
                let wire: WireStored = self.decode_side(side, "before")?;
                Some(StoredToken {
                    user_id: wire.user_id,
                    api_url: wire.api_url,
                    expire_date: wire.expire_date,
                })
            }
        };
        let after: WireToken = self.decode_side(self.required(self.after.as_ref(), "after")?, "after")?;
        let user_id = after.user_id.or_else(|| self.live_id.clone());
        if let (Some(a), Some(b)) = (&user_id, &self.live_id)
            && a != b
        {
            return Err(self.refuse("names two user ids (`after.user_id` and `live_id`)"));
        }
        let api_url = after.api_url.ok_or_else(|| self.refuse("has no `after.api_url`"))?;
        let reason = match (&self.token_reason, &self.reason) {
            (Some(reason), _) => reason.clone(),
            (None, Some(sentence)) => TokenReason::Stated(sentence.clone()),
            (None, None) => TokenReason::Stated(String::new()),
        };
        Ok(TokenIssue { user_id, api_url, stored, reason, company: after.company })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A plan of one change, its summary counting that change's action.
    fn plan_with(change: &Value) -> String {
        let mut summary = json!({"create": 0, "update": 0, "issue": 0, "deactivate": 0, "delete": 0});
        if let Some(action) = change["action"].as_str().filter(|a| summary.get(a).is_some()) {
            summary[action] = json!(1);
        }
        json!({"format_version": 1, "api_url": "http://x", "api_version": 6, "changes": [change],
               "summary": summary})
        .to_string()
    }

    #[test]
    fn a_user_create_reads_its_company_from_the_dependency_else_from_after() {
        let change = json!({"address": "service_user/a@x", "action": "create", "before": null,
            "after": {"company": "Acme", "first_name": "Ann", "active": false,
                      "permissions": {"documents": false}, "password": "(sensitive)"},
            "password": {"env": "PW"}});
        let plan = from_json(&plan_with(&change)).expect("valid");
        let Payload::CreateUser(create) = &plan.changes[0].payload else { panic!("{plan:?}") };
        assert_eq!(create.fields.company, "Acme");
        assert_eq!(create.fields.first_name.as_deref(), Some("Ann"));
        assert!(!create.fields.active);
        let mut other = change;
        other["depends_on"] = json!(["company/Beta"]);
        let err = from_json(&plan_with(&other)).expect_err("contradiction").to_string();
        assert!(
            err.contains("names company `Acme` in `after.company` but depends on `company/Beta`"),
            "{err}"
        );
    }

    #[test]
    fn a_null_field_is_read_as_absent() {
        let change = json!({"address": "service_user/a@x", "action": "create", "before": null,
            "after": {"company": "Acme", "first_name": null, "active": null, "permissions": null},
            "password": {"env": "PW"}});
        let plan = from_json(&plan_with(&change)).expect("nulls are absent");
        let Payload::CreateUser(create) = &plan.changes[0].payload else { panic!() };
        assert_eq!((create.fields.first_name.as_deref(), create.fields.active), (None, true));
        assert_eq!(create.fields.permissions, None);
    }

    #[test]
    fn an_update_whose_fields_disagree_with_before_and_after_is_refused() {
        let change = json!({"address": "company/Acme", "action": "update", "before": {"name": "Acme",
            "technical_meta_data": {"a": 1}}, "after": {"name": "Acme", "technical_meta_data": {"a": 2}},
            "fields": [{"field": "name", "before": "a", "after": "b"}], "live_id": "c1"});
        let err = from_json(&plan_with(&change)).expect_err("edited").to_string();
        assert!(err.contains("the change of `company/Acme` has `fields` that do not match"), "{err}");
    }

    #[test]
    fn an_action_of_another_kind_is_refused_with_its_address() {
        let change = json!({"address": "company/Acme", "action": "issue", "before": null, "after": {}});
        let err = from_json(&plan_with(&change)).expect_err("not an action of a company").to_string();
        assert!(
            err.contains(
                "the change of `company/Acme` is a `issue`, which is not an action of `company/Acme`"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_action_refuses_the_whole_plan() {
        let change =
            json!({"address": "service_user/a@x", "action": "obliterate", "before": null, "after": null});
        let err = from_json(&plan_with(&change)).expect_err("unknown action").to_string();
        assert!(err.contains("unknown variant `obliterate`"), "{err}");
    }

    #[test]
    fn a_plan_id_is_written_after_the_version_and_checked_when_read() {
        let change = json!({"address": "company/Acme", "action": "create", "before": null,
            "after": {"name": "Acme"}});
        let plan = from_json(&plan_with(&change)).expect("a plan without an id is read");
        let written = to_json(&plan);
        let id = super::super::id::plan_id(&plan);
        assert!(
            written.starts_with(&format!("{{\n  \"format_version\": 1,\n  \"plan_id\": \"{id}\",\n")),
            "{written}"
        );
        assert_eq!(from_json(&written).expect("its own id"), plan);
        // The id covers the changes: an edited change is refused, naming both ids.
        let edited =
            written.replace("\"name\": \"Acme\"", "\"name\": \"Acme\", \"technical_meta_data\": {\"x\": 1}");
        assert_ne!(edited, written);
        let err = from_json(&edited).expect_err("edited").to_string();
        assert!(err.starts_with("the saved plan's `plan_id` does not match its changes"), "{err}");
        assert!(err.contains(&id), "{err}");
        // Not the warnings, nor the layout.
        let mut value: Value = serde_json::from_str(&written).unwrap();
        value["warnings"] = json!(["a warning added later"]);
        assert!(from_json(&value.to_string()).is_ok());
        value["plan_id"] = json!("not an id");
        let err = from_json(&value.to_string()).expect_err("malformed").to_string();
        assert!(err.contains("its `plan_id` is not 64 lower-case hexadecimal digits"), "{err}");
    }

    #[test]
    fn a_token_reason_without_its_data_is_the_saved_sentence() {
        let change = json!({"address": "token/a@x", "action": "issue", "depends_on": ["service_user/a@x"],
            "before": null, "after": {"email": "a@x", "user_id": "u1", "api_url": "http://x",
            "access_token": "(sensitive)"}, "reason": "an older sentence", "live_id": "u1"});
        let plan = from_json(&plan_with(&change)).expect("an older plan");
        assert_eq!(plan.changes[0].reason(), Some(&TokenReason::Stated("an older sentence".into())));
        assert!(to_json(&plan).contains("\"reason\": \"an older sentence\""));
        assert!(!to_json(&plan).contains("token_reason"));
    }
}
