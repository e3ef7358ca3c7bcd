//! `compute()`: match desired objects to live ones by natural key and compute the changes.
//!
//! Pure and linear: observed state is indexed once in hash maps (companies by name and id,
//! users by lower-cased email); every desired object is then looked up in O(1). The only
//! super-linear step is the final sort of the changes by address.
//!
//! Only fields written in the manifest are managed: a `None` desired field is never compared,
//! shown or changed (`diff`). Conflicts (live objects an update cannot reconcile) block only
//! their own subtree: an ambiguous company blocks its users and their tokens, a conflicting
//! user blocks its token, and nothing else.
//!
//! Removals are opt-in per company (`prune:`): in a declared, live, in-scope company that
//! prunes, a live *service* user whose email no manifest mentions (in any company, in scope or
//! not) is planned for `deactivate` (unless already inactive) or `delete`. Nothing else is
//! ever removed: not other kinds of users, not users of other companies, not companies. Each
//! pruning company's figures (`PruneScope`) go into the plan for the blast-radius guard.
//!
//! A stored token of unknown expiry (`model::known_expiry` is `None`) is rotated only for a
//! reason that does not need its expiry (another user, another API, `--rotate-tokens`), and
//! the plan warns about it: an API that never answers a usable `expire_date` must not make
//! every run issue new tokens.
//!
//! Conflicts and warnings name their values with `escape::quote` (a code span as long as the
//! value needs), so that a renderer can find every value of a message again and escape it for
//! its medium, whatever backticks the value holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::reason::TokenReason;
use super::{
    Action, Address, Change, CompanyFields, Conflict, Payload, Plan, PlanOptions, PruneScope, TokenIssue,
    Unmanaged, UserCreate, UserFields, diff, fingerprint,
};
use crate::escape::quote as q;
use crate::model::{
    Desired, DesiredCompany, DesiredUser, Observed, ObservedCompany, ObservedUser, Permissions, Prune,
    StoredToken, StoredTokens, UserKind, known_expiry,
};
use crate::secret::{PasswordSource, SecretRef};

/// The secret sources of `desired` that `available` says cannot be resolved now; each source
/// is checked once. Pass the result as `PlanOptions::missing_secrets`.
pub fn missing_secrets(desired: &Desired, available: impl Fn(&SecretRef) -> bool) -> BTreeSet<SecretRef> {
    let refs: BTreeSet<&SecretRef> = desired
        .users
        .iter()
        .filter_map(|u| u.password.as_ref().and_then(PasswordSource::read_from))
        .collect();
    refs.into_iter().filter(|r| !available(r)).cloned().collect()
}

/// The warning of a planned create whose password `source` cannot be resolved when planning.
fn missing_secret_warning(change: &Change, source: &SecretRef) -> String {
    let what = match source {
        SecretRef::Env(name) => format!("environment variable {} is not set", q(name)),
        SecretRef::File(file) => format!("file {} cannot be read", q(&file.path().display().to_string())),
    };
    format!(
        "{}{what} now; `ozform apply` stops before its first request unless it is available",
        missing_secret_prefix(change, source)
    )
}

/// How `missing_secret_warning` starts for `change` and `source` (grouped ones too: a group
/// starts with its first warning).
fn missing_secret_prefix(change: &Change, source: &SecretRef) -> String {
    format!(
        "{} will be created with the password from {}, but ",
        q(&change.address.to_string()),
        q(&source.to_string())
    )
}

/// The warnings of `plan` that hold now (for `apply --plan`): those it was saved with, but the
/// ones about a password that could not be resolved when planning and that `available` says can
/// be now. Pure; the caller says what is available.
pub fn warnings_now(plan: &Plan, available: impl Fn(&SecretRef) -> bool) -> Vec<String> {
    let resolved: Vec<String> = plan
        .changes
        .iter()
        .filter_map(|change| {
            change.password().and_then(PasswordSource::read_from).map(|source| (change, source))
        })
        .filter(|(_, source)| available(source))
        .map(|(change, source)| missing_secret_prefix(change, source))
        .collect();
    plan.warnings
        .iter()
        .filter(|w| !resolved.iter().any(|prefix| w.starts_with(prefix.as_str())))
        .cloned()
        .collect()
}

/// Compute the plan that brings `observed` to `desired`, given the tokens the token store
/// holds. See the module docs of `plan`.
pub fn compute(desired: &Desired, observed: &Observed, stored: &StoredTokens, options: &PlanOptions) -> Plan {
    let mut planner = Planner::new(observed, stored, options);
    let filter: HashSet<&str> = options.companies.iter().map(String::as_str).collect();
    let in_scope = |name: &str| filter.is_empty() || filter.contains(name);

    let declared: HashSet<&str> = desired.companies.iter().map(|c| c.name.as_str()).collect();
    let mut unknown_filter: Vec<&str> = filter.iter().copied().filter(|n| !declared.contains(n)).collect();
    unknown_filter.sort_unstable();
    for name in unknown_filter {
        planner.warnings.push(format!(
            "{} matches no company declared in the manifests",
            q(&format!("--company {name}"))
        ));
    }

    let mut companies: HashMap<&str, CompanyState<'_>> = HashMap::with_capacity(desired.companies.len());
    for company in desired.companies.iter().filter(|c| in_scope(&c.name)) {
        let state = planner.company(company);
        companies.insert(company.name.as_str(), state);
    }

    for user in desired.users.iter().filter(|u| in_scope(&u.company)) {
        // The lower-cased email is computed once per user: it keys both the live users and the
        // stored tokens.
        let key = user.email.key();
        let state = planner.user(user, &key, companies.get(user.company.as_str()));
        // A generated password is kept in the user's token record: a user created with one
        // gets a token with it, asked for or not.
        let keeps_password = matches!(state, UserState::Creating)
            && user.password.as_ref().is_some_and(PasswordSource::is_generated);
        if user.token.issue || keeps_password {
            planner.token(user, &key, &state);
        }
    }

    // Every user any manifest mentions, in scope or not: a filtered-out user is not unmanaged
    // (and never pruned).
    let mentioned: HashSet<String> = desired.users.iter().map(|u| u.email.key()).collect();

    // Removals: in a live company that prunes, each live service user no manifest mentions.
    let mut pruned: HashSet<&str> = HashSet::new();
    let pruning: Vec<(&DesiredCompany, Prune, &ObservedCompany)> = desired
        .companies
        .iter()
        .filter(|c| in_scope(&c.name))
        .filter_map(|c| match (c.prune, companies.get(c.name.as_str())) {
            (Some(mode), Some(CompanyState::Live(live))) => Some((c, mode, *live)),
            _ => None,
        })
        .collect();
    if !pruning.is_empty() {
        // Service users by company id, built once (only when some company prunes).
        let mut members: HashMap<&str, Vec<&ObservedUser>> = HashMap::new();
        for u in observed.users.iter().filter(|u| u.kind == UserKind::Service) {
            if let Some(id) = u.company_id.as_deref() {
                members.entry(id).or_default().push(u);
            }
        }
        let mut declared: HashMap<&str, usize> = HashMap::new();
        for u in &desired.users {
            *declared.entry(u.company.as_str()).or_default() += 1;
        }
        for (company, mode, live) in pruning {
            let scope = PruneScope {
                company: company.name.clone(),
                mode,
                live_service_users: members.get(live.id.as_str()).map_or(0, Vec::len),
                declared_service_users: declared.get(company.name.as_str()).copied().unwrap_or(0),
            };
            let users = members.get(live.id.as_str()).map_or(&[][..], Vec::as_slice);
            planner.prune(scope, users, &mentioned, &mut pruned);
        }
    }

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
        for u in users.iter().filter(|u| !pruned.contains(u.id.as_str())) {
            if let Some(name) = u.company_id.as_deref().and_then(|id| live_in_scope.get(id)) {
                planner.unmanaged.push(Unmanaged { email: u.email.clone(), company: (*name).to_string() });
            }
        }
    }

    let mut plan = planner.finish();
    plan.source_ids = source_ids_of_creates(desired, &plan);
    plan
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
    stored: &'o StoredTokens,
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
    prune: Vec<PruneScope>,
}

impl<'o> Planner<'o> {
    fn new(observed: &'o Observed, stored: &'o StoredTokens, options: &'o PlanOptions) -> Self {
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
            stored,
            options,
            companies_by_name,
            companies_by_id,
            users_by_email,
            changes: Vec::new(),
            conflicts: Vec::new(),
            unmanaged: Vec::new(),
            warnings: Vec::new(),
            prune: Vec::new(),
        }
    }

    /// Plan the removals of company `scope.company` (live, pruning): each of its live service
    /// users `members` whose email no manifest mentions. Under `deactivate`, one already
    /// inactive is no change. Each user handled (removed or already inactive) goes into
    /// `pruned`, so it is not listed as unmanaged.
    fn prune(
        &mut self,
        scope: PruneScope,
        members: &[&'o ObservedUser],
        mentioned: &HashSet<String>,
        pruned: &mut HashSet<&'o str>,
    ) {
        // By email, so that warnings come in the same order whatever the order the API listed.
        let mut members = members.to_vec();
        members.sort_by_cached_key(|u| (u.email.key(), u.id.clone()));
        for user in members {
            let key = user.email.key();
            if mentioned.contains(&key) {
                continue;
            }
            let same_email = self.users_by_email.get(&key).map_or(0, Vec::len);
            if same_email > 1 {
                // Two changes on one address cannot be planned; a person must pick.
                // Said once per email, in its smallest spelling: not in the order the API listed.
                let spelling = self
                    .users_by_email
                    .get(&key)
                    .and_then(|twins| twins.iter().map(|u| u.email.as_str()).min())
                    .unwrap_or(user.email.as_str());
                let warning = format!(
                    "{} is not removed although company {} prunes: {same_email} live users have this email; \
                     delete or rename all but one in Oz",
                    q(spelling),
                    q(&scope.company)
                );
                if !self.warnings.contains(&warning) {
                    self.warnings.push(warning);
                }
                continue;
            }
            pruned.insert(user.id.as_str());
            let fields = live_fields(user, &scope.company);
            let payload = match scope.mode {
                Prune::Delete => Payload::DeleteUser(fields),
                Prune::Deactivate if user.active => Payload::DeactivateUser(fields),
                Prune::Deactivate => continue,
            };
            let mut change = new_change(
                Address::ServiceUser(user.email.clone()),
                vec![Address::Company(scope.company.clone())],
                payload,
            );
            change.live_id = Some(user.id.clone());
            change.fingerprint = Some(fingerprint::user(user));
            self.changes.push(change);
        }
        self.prune.push(scope);
    }

    fn company(&mut self, want: &DesiredCompany) -> CompanyState<'o> {
        let address = Address::Company(want.name.clone());
        let matches: &[&'o ObservedCompany] =
            self.companies_by_name.get(want.name.as_str()).map_or(&[], Vec::as_slice);
        let fields =
            CompanyFields { name: want.name.clone(), technical_meta_data: want.technical_meta_data.clone() };
        match matches {
            [] => {
                self.changes.push(new_change(address, Vec::new(), Payload::CreateCompany(fields)));
                CompanyState::Creating
            }
            [live] => {
                if let Some(update) = diff::company_update(&fields, live) {
                    let mut change = new_change(address, Vec::new(), Payload::UpdateCompany(update));
                    change.live_id = Some(live.id.clone());
                    change.fingerprint = Some(fingerprint::company(live));
                    self.changes.push(change);
                }
                CompanyState::Live(live)
            }
            several => {
                // Sorted so that the message does not depend on the order the API listed them in.
                let mut ids: Vec<String> = several.iter().map(|c| q(&c.id)).collect();
                ids.sort_unstable();
                self.conflicts.push(Conflict {
                    address,
                    message: format!(
                        "{} live companies are named {} (ids {}); ozform cannot tell which one is meant",
                        several.len(),
                        q(&want.name),
                        ids.join(", ")
                    ),
                    // The usual cause: the Oz API lets two companies share a name, and two
                    // applies that ran at once (two CI runners, two token directories) each
                    // created it; the apply that found the twin created no user into it.
                    help: "most likely two `ozform apply` runs created it at the same time (run applies one \
                           at a time: a CI concurrency group); keep the one that holds the service users, \
                           rename or delete the others in Oz, then plan again; until then this company's \
                           users and tokens are not planned"
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
                    format!(
                        "{} names company {}, which no manifest declares",
                        q(want.email.as_str()),
                        q(&want.company)
                    ),
                    format!("declare {} under `companies`", q(&want.company)),
                );
                return UserState::Blocked;
            }
        };
        let matches: &[&'o ObservedUser] = self.users_by_email.get(key).map_or(&[], Vec::as_slice);
        let live = match matches {
            [] => return self.create_user(want, company, address, company_address),
            [live] => *live,
            several => {
                let mut ids: Vec<String> = several.iter().map(|u| q(&u.id)).collect();
                ids.sort_unstable();
                self.conflict(
                    want,
                    format!(
                        "{} live users have the email {} (ids {})",
                        several.len(),
                        q(want.email.as_str()),
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
                    "{} exists live as {} (id {}), not as a service user",
                    q(want.email.as_str()),
                    live.kind.describe(),
                    q(&live.id)
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
                    Some(c) if c.in_deletion => {
                        format!("in company {} (id {}, being deleted)", q(&c.name), q(id))
                    }
                    Some(c) => format!("in company {} (id {})", q(&c.name), q(id)),
                    None => format!("in an unknown company (id {})", q(id)),
                },
            };
            let desired_side = match wanted_company_id {
                Some(id) => format!("{} (id {})", q(&want.company), q(id)),
                None => format!("{} (which does not exist live yet)", q(&want.company)),
            };
            self.conflict(
                want,
                format!(
                    "{} (user id {}) exists live {live_side}, but the manifest puts it in {desired_side}",
                    q(want.email.as_str()),
                    q(&live.id)
                ),
                format!(
                    "move the user to {} by hand in Oz, or set its `company` in the manifest to the one it is in",
                    q(&want.company)
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
                    "{} does not exist live, so it must be created, but it declares no `password`",
                    q(want.email.as_str())
                ),
                "declare where its password comes from: `password: {env: NAME}` or `password: {file: PATH}`, \
                 or `password: {generate: true}` to have ozform make one"
                    .into(),
            );
            return UserState::Blocked;
        };
        let create = UserCreate {
            fields: user_fields(want),
            company_id: match company {
                CompanyState::Live(c) => Some(c.id.clone()),
                _ => None,
            },
            password: password.clone(),
        };
        self.changes.push(new_change(address, vec![company_address], Payload::CreateUser(create)));
        UserState::Creating
    }

    fn update_user(&mut self, want: &DesiredUser, live: &ObservedUser, address: Address, company: Address) {
        let Some(update) = diff::user_update(&user_fields(want), live) else { return };
        let mut change = new_change(address, vec![company], Payload::UpdateUser(update));
        change.live_id = Some(live.id.clone());
        change.fingerprint = Some(fingerprint::user(live));
        self.changes.push(change);
    }

    fn token(&mut self, want: &DesiredUser, key: &str, user: &UserState<'o>) {
        let address = Address::Token(want.email.clone());
        let user_address = Address::ServiceUser(want.email.clone());
        let stored = self.stored.get(key);
        let live = match user {
            UserState::Blocked => return,
            UserState::Creating => None,
            UserState::Live(u) => Some(*u),
        };
        let reason = match self.token_reason(live, stored) {
            // Planned only for the password (`compute`): the user is being created.
            Some(TokenReason::UserBeingCreated) if !want.token.issue => Some(TokenReason::GeneratedPassword),
            reason => reason,
        };
        let Some(reason) = reason else {
            if stored.is_some_and(|s| known_expiry(s.expire_date).is_none()) {
                self.warnings.push(format!(
                    "the stored token of `{}` has an unknown expiry (the API answered none a token can \
                     have when it was issued): `--rotate-before` cannot rotate it; `--rotate-tokens` issues a \
                     new one",
                    want.email
                ));
            }
            return;
        };
        let issue = TokenIssue {
            user_id: live.map(|u| u.id.clone()),
            api_url: self.observed.api_url.clone(),
            stored: stored.cloned(),
            reason,
            company: Some(want.company.clone()),
        };
        let mut change = new_change(address, vec![user_address], Payload::IssueToken(issue));
        change.live_id = live.map(|u| u.id.clone());
        change.fingerprint = live.map(fingerprint::user);
        self.changes.push(change);
    }

    fn token_reason(&self, live: Option<&ObservedUser>, stored: Option<&StoredToken>) -> Option<TokenReason> {
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
        // An unknown expiry is not taken as expiring: rotating it would issue a new token on
        // every run against an API that never answers a usable `expire_date` (see `token`).
        if let Some(expire_date) = known_expiry(stored.expire_date)
            && expire_date - self.options.now < window.as_secs_f64()
        {
            return Some(TokenReason::Expiring { expire_date, now: self.options.now, rotate_before: window });
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
        self.prune.sort_by(|a, b| a.company.cmp(&b.company));
        for change in &self.changes {
            if let Some(source) = change.password().and_then(PasswordSource::read_from)
                && self.options.missing_secrets.contains(source)
            {
                self.warnings.push(missing_secret_warning(change, source));
            }
        }
        Plan {
            installation: None,
            api_url: self.observed.api_url.clone(),
            api_version: self.observed.api_version,
            api_version_detected: self.observed.api_version_detected,
            changes: self.changes,
            conflicts: self.conflicts,
            unmanaged: self.unmanaged,
            // The same warning for 200 users is one warning with a count.
            warnings: super::group_warnings(&self.warnings),
            prune: self.prune,
            source_ids: BTreeMap::new(),
        }
    }
}

/// The `source_id` the manifests name for each object `plan` creates, by address.
fn source_ids_of_creates(desired: &Desired, plan: &Plan) -> BTreeMap<String, String> {
    let declared: HashMap<String, &str> = desired
        .companies
        .iter()
        .filter_map(|c| Some((Address::Company(c.name.clone()).to_string(), c.source_id.as_deref()?)))
        .chain(desired.users.iter().filter_map(|u| {
            Some((Address::ServiceUser(u.email.clone()).to_string(), u.source_id.as_deref()?))
        }))
        .collect();
    if declared.is_empty() {
        return BTreeMap::new();
    }
    plan.changes
        .iter()
        .filter(|c| c.action() == Action::Create)
        .filter_map(|c| {
            let address = c.address.to_string();
            let id = declared.get(&address)?.to_string();
            Some((address, id))
        })
        .collect()
}

fn new_change(address: Address, depends_on: Vec<Address>, payload: Payload) -> Change {
    Change { address, depends_on, live_id: None, fingerprint: None, payload }
}

/// The managed fields of a desired user, as a create sets them or an update wants them.
fn user_fields(want: &DesiredUser) -> UserFields {
    UserFields {
        email: want.email.clone(),
        company: want.company.clone(),
        first_name: want.first_name.clone(),
        last_name: want.last_name.clone(),
        middle_name: want.middle_name.clone(),
        active: want.active,
        permissions: want.permissions,
    }
}

/// Every managed field of a live user as it is, under its company's name `company`: what a
/// removal shows as `before`.
fn live_fields(live: &ObservedUser, company: &str) -> UserFields {
    let p = live.permissions;
    UserFields {
        email: live.email.clone(),
        company: company.to_string(),
        first_name: Some(live.first_name.clone()),
        last_name: Some(live.last_name.clone()),
        middle_name: Some(live.middle_name.clone()),
        active: live.active,
        permissions: Some(Permissions {
            biometry: Some(p.biometry),
            collection: Some(p.collection),
            documents: Some(p.documents),
            quality: Some(p.quality),
        }),
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
