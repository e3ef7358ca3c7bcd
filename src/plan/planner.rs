//! `plan()`: match desired objects to live ones by natural key and compute the changes.
//!
//! Pure and linear: observed state is indexed once in hash maps (companies by name and id,
//! users by lower-cased email); every desired object is then looked up in O(1). The only
//! super-linear step is the final sort of the changes by address.
//!
//! Only fields written in the manifest are managed: a `None` desired field is never compared,
//! shown or changed. Conflicts (live objects an update cannot reconcile) block only their own
//! subtree: an ambiguous company blocks its users and their tokens, a conflicting user blocks
//! its token, and nothing else.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::reason::TokenReason;
use super::{
    Action, Address, Change, Conflict, FORMAT_VERSION, FieldChange, Plan, PlanOptions, Summary, Unmanaged,
    fingerprint,
};
use crate::model::{Desired, DesiredCompany, DesiredUser, Observed, ObservedCompany, ObservedUser, UserKind};
use crate::secret::SecretRef;
use crate::sink::SinkIndex;

/// What a `password`, `access_token` or other secret field shows in a plan.
pub(crate) const SENSITIVE: &str = "(sensitive)";

/// The secret sources of `desired` that `available` says cannot be resolved now; each source
/// is checked once. Pass the result as `PlanOptions::missing_secrets`.
pub fn missing_secrets(desired: &Desired, available: impl Fn(&SecretRef) -> bool) -> BTreeSet<SecretRef> {
    let refs: BTreeSet<&SecretRef> = desired.users.iter().filter_map(|u| u.password.as_ref()).collect();
    refs.into_iter().filter(|r| !available(r)).cloned().collect()
}

/// Compute the plan that brings `observed` to `desired`. See the module docs of `plan`.
pub fn plan(desired: &Desired, observed: &Observed, sink: &SinkIndex, options: &PlanOptions) -> Plan {
    let mut planner = Planner::new(observed, sink, options);
    let filter: HashSet<&str> = options.companies.iter().map(String::as_str).collect();
    let in_scope = |name: &str| filter.is_empty() || filter.contains(name);

    let declared: HashSet<&str> = desired.companies.iter().map(|c| c.name.as_str()).collect();
    let mut unknown_filter: Vec<&str> = filter.iter().copied().filter(|n| !declared.contains(n)).collect();
    unknown_filter.sort_unstable();
    for name in unknown_filter {
        planner.warnings.push(format!("`--company {name}` matches no company declared in the manifests"));
    }

    let mut companies: HashMap<&str, CompanyState<'_>> = HashMap::with_capacity(desired.companies.len());
    for company in desired.companies.iter().filter(|c| in_scope(&c.name)) {
        let state = planner.company(company);
        companies.insert(company.name.as_str(), state);
    }

    for user in desired.users.iter().filter(|u| in_scope(&u.company)) {
        // The lower-cased email is computed once per user: it keys both the live users and the sink.
        let key = user.email.key();
        let state = planner.user(user, &key, companies.get(user.company.as_str()));
        if user.token.issue {
            planner.token(user, &key, &state);
        }
    }

    // Every user any manifest mentions, in scope or not: a filtered-out user is not unmanaged.
    let mentioned: HashSet<String> = desired.users.iter().map(|u| u.email.key()).collect();
    let live_in_scope: HashMap<&str, &str> = companies
        .iter()
        .filter_map(|(name, state)| match state {
            CompanyState::Live(live) => Some((live.id.as_str(), *name)),
            _ => None,
        })
        .collect();
    for (key, users) in &planner.users_by_email {
        if mentioned.contains(key) {
            continue;
        }
        for u in users {
            if let Some(name) = u.company_id.as_deref().and_then(|id| live_in_scope.get(id)) {
                planner.unmanaged.push(Unmanaged { email: u.email.clone(), company: (*name).to_string() });
            }
        }
    }

    planner.finish()
}

/// How a desired company resolved against the live state.
enum CompanyState<'o> {
    Live(&'o ObservedCompany),
    Creating,
    /// A conflict was reported; its users and tokens are not planned.
    Blocked,
}

/// How a desired service user resolved against the live state.
enum UserState<'o> {
    Live(&'o ObservedUser),
    Creating,
    Blocked,
}

struct Planner<'o> {
    observed: &'o Observed,
    sink: &'o SinkIndex,
    options: &'o PlanOptions,
    /// Live companies not `in_deletion`, by exact name.
    companies_by_name: HashMap<&'o str, Vec<&'o ObservedCompany>>,
    /// All live companies (also those `in_deletion`), by id: to name a user's other company.
    companies_by_id: HashMap<&'o str, &'o ObservedCompany>,
    /// Live users by lower-cased email.
    users_by_email: HashMap<String, Vec<&'o ObservedUser>>,
    changes: Vec<Change>,
    conflicts: Vec<Conflict>,
    unmanaged: Vec<Unmanaged>,
    warnings: Vec<String>,
}

impl<'o> Planner<'o> {
    fn new(observed: &'o Observed, sink: &'o SinkIndex, options: &'o PlanOptions) -> Self {
        let mut companies_by_name: HashMap<&str, Vec<&ObservedCompany>> = HashMap::new();
        let mut companies_by_id = HashMap::with_capacity(observed.companies.len());
        for c in &observed.companies {
            companies_by_id.insert(c.id.as_str(), c);
            if !c.in_deletion {
                companies_by_name.entry(c.name.as_str()).or_default().push(c);
            }
        }
        let mut users_by_email: HashMap<String, Vec<&ObservedUser>> =
            HashMap::with_capacity(observed.users.len());
        for u in &observed.users {
            users_by_email.entry(u.email.key()).or_default().push(u);
        }
        Self {
            observed,
            sink,
            options,
            companies_by_name,
            companies_by_id,
            users_by_email,
            changes: Vec::new(),
            conflicts: Vec::new(),
            unmanaged: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn company(&mut self, want: &DesiredCompany) -> CompanyState<'o> {
        let address = Address::Company(want.name.clone());
        let matches: &[&'o ObservedCompany] =
            self.companies_by_name.get(want.name.as_str()).map_or(&[], Vec::as_slice);
        match matches {
            [] => {
                let mut after = Map::new();
                after.insert("name".into(), json!(want.name));
                if let Some(meta) = &want.technical_meta_data {
                    after.insert("technical_meta_data".into(), meta.clone());
                }
                self.changes.push(new_change(
                    address,
                    Action::Create,
                    Vec::new(),
                    None,
                    Some(Value::Object(after)),
                ));
                CompanyState::Creating
            }
            [live] => {
                if let Some(meta) = &want.technical_meta_data
                    && *meta != live.technical_meta_data
                {
                    let before = json!({"name": live.name, "technical_meta_data": live.technical_meta_data});
                    let after = json!({"name": want.name, "technical_meta_data": meta});
                    let mut change =
                        new_change(address, Action::Update, Vec::new(), Some(before), Some(after));
                    change.fields.push(FieldChange {
                        field: "technical_meta_data".into(),
                        before: live.technical_meta_data.clone(),
                        after: meta.clone(),
                    });
                    change.live_id = Some(live.id.clone());
                    change.fingerprint = Some(fingerprint::company(live));
                    self.changes.push(change);
                }
                CompanyState::Live(live)
            }
            several => {
                // Sorted so that the message does not depend on the order the API listed them in.
                let mut ids: Vec<String> = several.iter().map(|c| format!("`{}`", c.id)).collect();
                ids.sort_unstable();
                self.conflicts.push(Conflict {
                    address,
                    message: format!(
                        "{} live companies are named `{}` (ids {}); ozform cannot tell which one is meant",
                        several.len(),
                        want.name,
                        ids.join(", ")
                    ),
                    help: "rename or delete all but one of them in Oz, then plan again; until then this \
                           company's users and tokens are not planned"
                        .into(),
                });
                CompanyState::Blocked
            }
        }
    }

    fn user(&mut self, want: &DesiredUser, key: &str, company: Option<&CompanyState<'o>>) -> UserState<'o> {
        let address = Address::ServiceUser(want.email.clone());
        let company_address = Address::Company(want.company.clone());
        let company = match company {
            Some(CompanyState::Blocked) => return UserState::Blocked,
            Some(state) => state,
            None => {
                // The loader rejects dangling references; this keeps the planner total anyway.
                self.conflict(
                    want,
                    format!("`{}` names company `{}`, which no manifest declares", want.email, want.company),
                    format!("declare `{}` under `companies`", want.company),
                );
                return UserState::Blocked;
            }
        };
        let matches: &[&'o ObservedUser] = self.users_by_email.get(key).map_or(&[], Vec::as_slice);
        let live = match matches {
            [] => return self.create_user(want, company, address, company_address),
            [live] => *live,
            several => {
                let mut ids: Vec<String> = several.iter().map(|u| format!("`{}`", u.id)).collect();
                ids.sort_unstable();
                self.conflict(
                    want,
                    format!(
                        "{} live users have the email `{}` (ids {})",
                        several.len(),
                        want.email,
                        ids.join(", ")
                    ),
                    "delete or rename all but one of them in Oz, then plan again".into(),
                );
                return UserState::Blocked;
            }
        };
        if live.kind != UserKind::Service {
            self.conflict(
                want,
                format!(
                    "`{}` exists live as {} (id `{}`), not as a service user",
                    want.email,
                    live.kind.describe(),
                    live.id
                ),
                "ozform manages only service users: turn the live user into a service user or remove it \
                 by hand in Oz, or declare another email"
                    .into(),
            );
            return UserState::Blocked;
        }
        let wanted_company_id = match company {
            CompanyState::Live(c) => Some(c.id.as_str()),
            _ => None,
        };
        if live.company_id.as_deref() != wanted_company_id || wanted_company_id.is_none() {
            let live_side = match live.company_id.as_deref() {
                None => "in no company".to_string(),
                Some(id) => match self.companies_by_id.get(id) {
                    Some(c) if c.in_deletion => format!("in company `{}` (id `{id}`, being deleted)", c.name),
                    Some(c) => format!("in company `{}` (id `{id}`)", c.name),
                    None => format!("in an unknown company (id `{id}`)"),
                },
            };
            let desired_side = match wanted_company_id {
                Some(id) => format!("`{}` (id `{id}`)", want.company),
                None => format!("`{}` (which does not exist live yet)", want.company),
            };
            self.conflict(
                want,
                format!(
                    "`{}` (user id `{}`) exists live {live_side}, but the manifest puts it in {desired_side}",
                    want.email, live.id
                ),
                format!(
                    "move the user to `{}` by hand in Oz, or set its `company` in the manifest to the one it is in",
                    want.company
                ),
            );
            return UserState::Blocked;
        }
        self.update_user(want, live, address, company_address);
        UserState::Live(live)
    }

    fn create_user(
        &mut self,
        want: &DesiredUser,
        company: &CompanyState<'o>,
        address: Address,
        company_address: Address,
    ) -> UserState<'o> {
        let Some(password) = &want.password else {
            self.conflict(
                want,
                format!(
                    "`{}` does not exist live, so it must be created, but it declares no `password`",
                    want.email
                ),
                "declare where its password comes from: `password: {env: NAME}` or `password: {file: PATH}`"
                    .into(),
            );
            return UserState::Blocked;
        };
        let mut after = Map::new();
        after.insert("email".into(), json!(want.email.as_str()));
        after.insert("company".into(), json!(want.company));
        if let CompanyState::Live(c) = company {
            after.insert("company_id".into(), json!(c.id));
        }
        for (field, value) in [
            ("first_name", &want.first_name),
            ("last_name", &want.last_name),
            ("middle_name", &want.middle_name),
        ] {
            if let Some(v) = value {
                after.insert(field.into(), json!(v));
            }
        }
        after.insert("active".into(), json!(want.active));
        if let Some(p) = &want.permissions {
            after.insert("permissions".into(), json!(p));
        }
        after.insert("password".into(), json!(SENSITIVE));
        let mut change =
            new_change(address, Action::Create, vec![company_address], None, Some(Value::Object(after)));
        change.password = Some(password.clone());
        self.changes.push(change);
        UserState::Creating
    }

    fn update_user(&mut self, want: &DesiredUser, live: &ObservedUser, address: Address, company: Address) {
        let mut before = Map::new();
        let mut after = Map::new();
        let mut fields = Vec::new();
        before.insert("email".into(), json!(live.email.as_str()));
        after.insert("email".into(), json!(want.email.as_str()));
        before.insert("company".into(), json!(want.company));
        after.insert("company".into(), json!(want.company));
        let mut managed = |name: &str, old: Value, new: Option<Value>| {
            if let Some(new) = new {
                if old != new {
                    fields.push(FieldChange {
                        field: name.to_string(),
                        before: old.clone(),
                        after: new.clone(),
                    });
                }
                before.insert(name.to_string(), old);
                after.insert(name.to_string(), new);
            }
        };
        managed("first_name", json!(live.first_name), want.first_name.as_ref().map(|v| json!(v)));
        managed("last_name", json!(live.last_name), want.last_name.as_ref().map(|v| json!(v)));
        managed("middle_name", json!(live.middle_name), want.middle_name.as_ref().map(|v| json!(v)));
        managed("active", json!(live.active), Some(json!(want.active)));
        if let Some(p) = &want.permissions {
            let lp = &live.permissions;
            let mut old_flags = Map::new();
            let mut new_flags = Map::new();
            for (flag, wanted, current) in [
                ("biometry", p.biometry, lp.biometry),
                ("collection", p.collection, lp.collection),
                ("documents", p.documents, lp.documents),
                ("quality", p.quality, lp.quality),
            ] {
                if let Some(wanted) = wanted {
                    if wanted != current {
                        fields.push(FieldChange {
                            field: format!("permissions.{flag}"),
                            before: json!(current),
                            after: json!(wanted),
                        });
                    }
                    old_flags.insert(flag.into(), json!(current));
                    new_flags.insert(flag.into(), json!(wanted));
                }
            }
            before.insert("permissions".into(), Value::Object(old_flags));
            after.insert("permissions".into(), Value::Object(new_flags));
        }
        if fields.is_empty() {
            return;
        }
        let mut change = new_change(
            address,
            Action::Update,
            vec![company],
            Some(Value::Object(before)),
            Some(Value::Object(after)),
        );
        change.fields = fields;
        change.live_id = Some(live.id.clone());
        change.fingerprint = Some(fingerprint::user(live));
        self.changes.push(change);
    }

    fn token(&mut self, want: &DesiredUser, key: &str, user: &UserState<'o>) {
        let address = Address::Token(want.email.clone());
        let user_address = Address::ServiceUser(want.email.clone());
        let stored = self.sink.get(key);
        let live = match user {
            UserState::Blocked => return,
            UserState::Creating => None,
            UserState::Live(u) => Some(*u),
        };
        let Some(reason) = self.token_reason(live, stored) else { return };
        let before =
            stored.map(|s| json!({"user_id": s.user_id, "api_url": s.api_url, "expire_date": s.expire_date}));
        let after = json!({
            "email": want.email.as_str(),
            "user_id": live.map(|u| u.id.as_str()),
            "api_url": self.observed.api_url,
            "access_token": SENSITIVE,
        });
        let mut change = new_change(address, Action::Issue, vec![user_address], before, Some(after));
        change.reason = Some(reason.to_string());
        change.live_id = live.map(|u| u.id.clone());
        change.fingerprint = live.map(fingerprint::user);
        self.changes.push(change);
    }

    fn token_reason(
        &self,
        live: Option<&ObservedUser>,
        stored: Option<&crate::sink::SinkEntry>,
    ) -> Option<TokenReason> {
        let Some(live) = live else { return Some(TokenReason::UserBeingCreated) };
        let Some(stored) = stored else { return Some(TokenReason::NoToken) };
        if normalize_url(&stored.api_url) != normalize_url(&self.observed.api_url) {
            return Some(TokenReason::OtherApiUrl {
                stored: stored.api_url.clone(),
                live: self.observed.api_url.clone(),
            });
        }
        if stored.user_id != live.id {
            return Some(TokenReason::OtherUser { stored: stored.user_id.clone(), live: live.id.clone() });
        }
        let window = self.options.rotate_before;
        if stored.expire_date - self.options.now < window.as_secs_f64() {
            return Some(TokenReason::Expiring {
                expire_date: stored.expire_date,
                now: self.options.now,
                rotate_before: window,
            });
        }
        self.options.rotate_tokens.then_some(TokenReason::Rotation)
    }

    fn conflict(&mut self, want: &DesiredUser, message: String, mut help: String) {
        if want.token.issue {
            help.push_str("; its token is not planned until then");
        }
        self.conflicts.push(Conflict { address: Address::ServiceUser(want.email.clone()), message, help });
    }

    fn finish(mut self) -> Plan {
        // Sort keys are computed once per change: `Email`'s `Ord` lower-cases on every compare.
        self.changes.sort_by_cached_key(|c| sort_key(&c.address));
        self.conflicts.sort_by_cached_key(|c| (sort_key(&c.address), c.message.clone()));
        self.unmanaged.sort_by_cached_key(|u| (u.email.key(), u.company.clone()));
        for change in &self.changes {
            if change.action == Action::Create
                && let Some(source) = &change.password
                && self.options.missing_secrets.contains(source)
            {
                let what = match source {
                    SecretRef::Env(name) => format!("environment variable `{name}` is not set"),
                    SecretRef::File(path) => format!("file `{}` cannot be read", path.display()),
                };
                self.warnings.push(format!(
                    "`{}` will be created with the password from {source}, but {what} now; `ozform apply` \
                     stops before its first request unless it is available",
                    change.address
                ));
            }
        }
        let mut summary = Summary::default();
        for change in &self.changes {
            match change.action {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
                Action::Issue => summary.issue += 1,
            }
        }
        Plan {
            format_version: FORMAT_VERSION,
            api_url: self.observed.api_url.clone(),
            api_version: self.observed.api_version,
            api_version_detected: self.observed.api_version_detected,
            changes: self.changes,
            summary,
            conflicts: self.conflicts,
            unmanaged: self.unmanaged,
            warnings: self.warnings,
        }
    }
}

fn new_change(
    address: Address,
    action: Action,
    depends_on: Vec<Address>,
    before: Option<Value>,
    after: Option<Value>,
) -> Change {
    Change {
        address,
        action,
        depends_on,
        before,
        after,
        fields: Vec::new(),
        reason: None,
        live_id: None,
        fingerprint: None,
        password: None,
    }
}

/// The order of `Address`'s `Ord` (kind, then identity; emails lower-cased), computed once.
fn sort_key(address: &Address) -> (u8, String) {
    match address {
        Address::Company(name) => (0, name.clone()),
        Address::ServiceUser(email) => (1, email.key()),
        Address::Token(email) => (2, email.key()),
    }
}

fn normalize_url(url: &str) -> &str {
    url.trim_end_matches('/')
}
