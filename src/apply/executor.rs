//! The executor: runs a plan's changes as a dependency graph, concurrently.
//!
//! I/O only through `Effects`, `TokenSink` and `Observer`. Scheduling: a step starts as soon as
//! all its dependencies are done (not in waves), at most `parallelism` talking to the API at a
//! time, lowest plan index first among the ready ones. A failed step skips everything
//! downstream of it and nothing else. All steps run as futures on the caller's task
//! (`FuturesUnordered`): the work is waiting on HTTP, and one task keeps the scheduler state
//! free of locks.
//!
//! A token step has two phases: the API issues the token, then the sink stores it. The step is
//! done only when both are, but its API slot is handed on as soon as the token is issued: the
//! store is blocking file I/O (create, fsync, rename, fsync the directory) that goes to
//! tokio's blocking pool, at most `parallelism` stores at a time, while the next steps already
//! talk to the API. Holding the slot through the fsyncs made an apply of 2,000 tokens take up
//! to 1.8 times its request-bound time on a slow disk (see `examples/bench_apply.rs`).
//!
//! Exactly-once creates: a create whose outcome is unknown, or that the API calls a duplicate,
//! is never re-sent blindly: the object is read back by its natural key and adopted if it is
//! there. Only when the API itself answered 500 or 503 (it finished with the request) and the
//! read-back finds nothing is the create sent again, a bounded number of times; after a
//! timeout or a dropped connection the step fails instead. A token issue whose outcome is
//! unknown is sent again (bounded): a lost token is harmless, and a token cannot be read back.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt as _};
use serde::Serialize;

use super::observer::{Observer, Outcome};
use super::order::Graph;
use super::{ApplyError, Effects, Passwords};
use crate::model::{CompanyPatch, Email, NewUser, ObservedUser, UserKind, UserPatch};
use crate::oz::OzError;
use crate::plan::{Action, Address, Change, FORMAT_VERSION, Plan, PlanError};
use crate::sink::{TokenRecord, TokenSink};
use tokio::sync::Semaphore;

/// How to execute.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// At most this many steps talking to the API at once, and at most this many token stores
    /// at once (0 is taken as 1).
    pub parallelism: usize,
    /// The passwords of the plan's user creates (`resolve_passwords`).
    pub passwords: Passwords,
    /// The clock for `issued_at` of stored tokens.
    pub now: fn() -> SystemTime,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self { parallelism: 8, passwords: Passwords::new(), now: SystemTime::now }
    }
}

impl ExecuteOptions {
    pub fn new(passwords: Passwords) -> Self {
        Self { passwords, ..Self::default() }
    }
}

/// A step that was carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoneStep {
    pub address: Address,
    pub action: Action,
    /// A create that found its object already there and adopted it.
    pub adopted: bool,
}

/// A step that failed. `error` names the request or the sink path; it holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedStep {
    pub address: Address,
    pub action: Action,
    pub error: String,
}

/// A step not attempted because `dependency` failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedStep {
    pub address: Address,
    pub action: Action,
    pub dependency: Address,
}

/// What an apply did, each list in plan order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub done: Vec<DoneStep>,
    pub failed: Vec<FailedStep>,
    pub skipped: Vec<SkippedStep>,
}

impl ApplyReport {
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }

    /// `Ok(self)` when every step was done, else `ApplyError::Partial` (exit code 1).
    pub fn into_result(self) -> Result<Self, ApplyError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(ApplyError::Partial {
            done: self.done.len(),
            failed: self.failed.len(),
            skipped: self.skipped.len(),
            first: self.failed.first().map(|f| format!("`{}`: {}", f.address, f.error)),
        })
    }

    /// The closing line, e.g. `Apply complete: 3 done.` or `Apply failed: 1 done, 1 failed, 2 skipped.`
    pub fn summary_line(&self) -> String {
        if self.is_success() {
            format!("Apply complete: {} done.", self.done.len())
        } else {
            format!(
                "Apply failed: {} done, {} failed, {} skipped.",
                self.done.len(),
                self.failed.len(),
                self.skipped.len()
            )
        }
    }
}

/// Execute `plan`. Errors only when the plan cannot be run at all (format version, cycle,
/// dangling dependency, repeated address, a user create without a resolved password), and
/// then before the first request; step failures are in the report.
pub async fn execute<E: Effects>(
    plan: &Plan,
    effects: Arc<E>,
    sink: Arc<dyn TokenSink>,
    observer: Arc<dyn Observer>,
    options: &ExecuteOptions,
) -> Result<ApplyReport, ApplyError> {
    let graph = check_plan(plan)?;
    let missing: Vec<String> = plan
        .changes
        .iter()
        .filter_map(|c| match (&c.address, c.action) {
            (Address::ServiceUser(email), Action::Create) if options.passwords.get(email).is_none() => {
                Some(format!("`{email}` has no resolved password"))
            }
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(ApplyError::MissingPasswords { missing });
    }

    let ctx = Ctx {
        effects: effects.as_ref(),
        sink: &sink,
        passwords: &options.passwords,
        api_url: &plan.api_url,
        now: options.now,
        companies_found: Mutex::new(HashMap::new()),
    };
    let limit = options.parallelism.max(1);
    let mut waiting: Vec<usize> = graph.depends_on.iter().map(Vec::len).collect();
    let mut skipped = vec![false; graph.len()];
    let mut ready: BTreeSet<usize> = (0..graph.len()).filter(|&i| waiting[i] == 0).collect();
    let mut company_ids: HashMap<String, String> = HashMap::new();
    let mut user_ids: HashMap<String, String> = HashMap::new();
    let mut done: Vec<(usize, DoneStep)> = Vec::new();
    let mut failed: Vec<(usize, FailedStep)> = Vec::new();
    let mut skips: Vec<(usize, SkippedStep)> = Vec::new();
    let stores = Semaphore::new(limit);
    // API phases and store phases together; `calling` counts the API ones.
    let mut running = FuturesUnordered::new();
    let mut calling = 0;

    loop {
        while calling < limit {
            let Some(i) = ready.pop_first() else { break };
            let change = &plan.changes[i];
            observer.started(&change.address, change.action);
            tracing::debug!(address = %change.address, action = %change.action, "step started");
            // Dependencies are done, so their results are known now.
            let inputs = match &change.address {
                Address::Company(_) => Inputs::default(),
                Address::ServiceUser(_) => Inputs {
                    company_id: change.user_company().ok().and_then(|n| company_ids.get(n).cloned()),
                    user_id: None,
                },
                Address::Token(email) => {
                    Inputs { company_id: None, user_id: user_ids.get(&email.key()).cloned() }
                }
            };
            running.push(Either::Left(run_step(&ctx, i, change, inputs)));
            calling += 1;
        }
        let Some((i, phase)) = running.next().await else { break };
        let result = match phase {
            Phase::Called(result) => {
                calling -= 1;
                match result {
                    Ok(Called::Done(step)) => Ok(step),
                    Ok(Called::Issued(record)) => {
                        running.push(Either::Right(store_token(ctx.sink, &stores, i, record)));
                        continue;
                    }
                    Err(error) => Err(error),
                }
            }
            Phase::Stored(result) => result,
        };
        let change = &plan.changes[i];
        match result {
            Ok(step) => {
                match &change.address {
                    Address::Company(name) => {
                        company_ids.insert(name.clone(), step.id);
                    }
                    Address::ServiceUser(email) => {
                        user_ids.insert(email.key(), step.id);
                    }
                    Address::Token(_) => {}
                }
                let outcome = if step.adopted { Outcome::Adopted } else { Outcome::Done };
                tracing::debug!(address = %change.address, outcome = outcome.kind(), "step finished");
                observer.finished(&change.address, change.action, &outcome);
                done.push((
                    i,
                    DoneStep {
                        address: change.address.clone(),
                        action: change.action,
                        adopted: step.adopted,
                    },
                ));
                for &d in &graph.dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && !skipped[d] {
                        ready.insert(d);
                    }
                }
            }
            Err(error) => {
                tracing::debug!(address = %change.address, %error, "step failed");
                observer.finished(&change.address, change.action, &Outcome::Failed { error: error.clone() });
                failed
                    .push((i, FailedStep { address: change.address.clone(), action: change.action, error }));
                // Nothing downstream can have started: each waits for this step.
                for d in graph.downstream(i) {
                    if std::mem::replace(&mut skipped[d], true) {
                        continue;
                    }
                    let skipped_change = &plan.changes[d];
                    let dependency = change.address.clone();
                    observer.finished(
                        &skipped_change.address,
                        skipped_change.action,
                        &Outcome::Skipped { dependency: dependency.clone() },
                    );
                    skips.push((
                        d,
                        SkippedStep {
                            address: skipped_change.address.clone(),
                            action: skipped_change.action,
                            dependency,
                        },
                    ));
                }
            }
        }
    }

    observer.all_finished();
    Ok(ApplyReport {
        done: in_plan_order(done),
        failed: in_plan_order(failed),
        skipped: in_plan_order(skips),
    })
}

fn in_plan_order<T>(mut v: Vec<(usize, T)>) -> Vec<T> {
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, t)| t).collect()
}

/// The checks every run makes before its first request: format version and graph.
pub fn check_plan(plan: &Plan) -> Result<Graph, ApplyError> {
    if plan.format_version != FORMAT_VERSION {
        return Err(ApplyError::FormatVersion { found: plan.format_version, expected: FORMAT_VERSION });
    }
    Graph::new(&plan.changes)
}

struct Ctx<'a, E> {
    effects: &'a E,
    sink: &'a Arc<dyn TokenSink>,
    passwords: &'a Passwords,
    api_url: &'a str,
    now: fn() -> SystemTime,
    /// Ids of live companies found by name in this run, so the users of one unchanged company
    /// look it up once (two that start together may both look; both get the same answer).
    companies_found: Mutex<HashMap<String, String>>,
}

/// Results of dependencies done in this run.
#[derive(Default)]
struct Inputs {
    /// The id of a user create's company, when the company's change ran in this run.
    company_id: Option<String>,
    /// The id of a token's user, when the user's change ran in this run.
    user_id: Option<String>,
}

/// What a done step leaves for its dependents.
struct Step {
    /// The live id of the company or user (empty for tokens).
    id: String,
    adopted: bool,
}

impl Step {
    fn done(id: String) -> Self {
        Self { id, adopted: false }
    }
    fn adopted(id: String) -> Self {
        Self { id, adopted: true }
    }
}

/// What one phase of a step came to.
enum Phase {
    /// The API phase (every step has one).
    Called(Result<Called, String>),
    /// The store phase of a token step.
    Stored(Result<Step, String>),
}

/// A finished API phase.
enum Called {
    /// The step is done.
    Done(Step),
    /// A token was issued; the step is done once the sink has stored it.
    Issued(TokenRecord),
}

async fn run_step<E: Effects>(ctx: &Ctx<'_, E>, i: usize, change: &Change, inputs: Inputs) -> (usize, Phase) {
    let result = match (&change.address, change.action) {
        (Address::Company(_), Action::Create) => create_company(ctx, change).await.map(Called::Done),
        (Address::Company(_), Action::Update) => update_company(ctx, change).await.map(Called::Done),
        (Address::ServiceUser(email), Action::Create) => {
            create_user(ctx, change, email, inputs.company_id).await.map(Called::Done)
        }
        (Address::ServiceUser(_), Action::Update) => update_user(ctx, change).await.map(Called::Done),
        (Address::Token(email), Action::Issue) => {
            issue_token(ctx, change, email, inputs.user_id).await.map(Called::Issued)
        }
        (_, action) => Err(format!(
            "the change of `{}` cannot be carried out: `{action}` is not an action of it",
            change.address
        )),
    };
    (i, Phase::Called(result))
}

/// The store phase of token step `i`: at most as many at once as `stores` has permits, each
/// on tokio's blocking pool (the file sink fsyncs).
fn store_token<'s>(
    sink: &Arc<dyn TokenSink>,
    stores: &'s Semaphore,
    i: usize,
    record: TokenRecord,
) -> impl Future<Output = (usize, Phase)> + 's {
    let sink = Arc::clone(sink);
    async move {
        // The semaphore lives as long as the run and is never closed.
        let _permit = stores.acquire().await;
        let outcome = tokio::task::spawn_blocking(move || sink.store(&record)).await;
        let result = match outcome {
            Ok(Ok(())) => Ok(Step::done(String::new())),
            Ok(Err(e)) => Err(format!(
                "the token was issued but not stored (run `ozform apply` again to issue another): {e}"
            )),
            Err(join) => Err(format!("the token was issued but storing it did not finish: {join}")),
        };
        (i, Phase::Stored(result))
    }
}

fn live_id(change: &Change) -> Result<&str, String> {
    change
        .live_id
        .as_deref()
        .ok_or_else(|| format!("the change of `{}` has no `live_id` to update", change.address))
}

/// The step error of a change the plan format's decoders refuse. Their reason names the
/// address and the field; the "saved plan" framing of `PlanError` does not fit a plan made in
/// this run, so only the reason is kept.
fn undecodable(error: PlanError) -> String {
    match error {
        PlanError::Invalid { reason } => reason,
        other => other.to_string(),
    }
}

/// How many times one step sends its create (or token issue) at most: enough to ride out a
/// flaky API (at a 15% fault rate, six failures in a row happen once in 100,000 steps), few
/// enough to give up quickly on one that keeps failing.
const SEND_LIMIT: usize = 6;

/// Whether a create that failed with `err`, and that a read-back then did not find, may be sent
/// again. Only after a 500 or 503 from the API: it finished with the request without making the
/// object, so the read-back is the whole truth. A timeout, a dropped connection or a gateway's
/// 502/504 may leave the request still running behind it: re-sending could make the object
/// twice, so that step fails and the next apply reads back again.
fn may_send_again(err: &OzError, sent: usize) -> bool {
    sent < SEND_LIMIT && matches!(err.status(), Some(500 | 503))
}

/// When a create failed but may have taken effect: the message if the read-back failed too.
fn read_back_failed(change: &Change, create: &OzError, read: &OzError) -> String {
    format!("{create}; reading `{}` back to see whether it was created failed: {read}", change.address)
}

async fn create_company<E: Effects>(ctx: &Ctx<'_, E>, change: &Change) -> Result<Step, String> {
    let new = change.new_company().map_err(undecodable)?;
    let mut sent = 0;
    let (err, found) = loop {
        sent += 1;
        let err = match ctx.effects.create_company(&new).await {
            Ok(created) => return Ok(Step::done(created.id)),
            Err(e) if e.outcome_unknown() || e.is_duplicate() => e,
            Err(e) => return Err(e.to_string()),
        };
        tracing::info!(address = %change.address, error = %err, "create may have taken effect: reading back");
        let found =
            ctx.effects.find_companies(&new.name).await.map_err(|r| read_back_failed(change, &err, &r))?;
        if !(found.is_empty() && may_send_again(&err, sent)) {
            break (err, found);
        }
        tracing::info!(address = %change.address, "not created: sending the create again");
    };
    match found.as_slice() {
        [] => Err(err.to_string()),
        [live] => {
            // Adopt, and converge the one managed field if the existing company differs.
            if let Some(meta) = new.technical_meta_data.filter(|m| *m != live.technical_meta_data) {
                let patch = CompanyPatch { name: None, technical_meta_data: Some(meta) };
                ctx.effects.update_company(&live.id, &patch).await.map_err(|e| {
                    format!("adopted the existing `{}` but could not update it: {e}", change.address)
                })?;
            }
            Ok(Step::adopted(live.id.clone()))
        }
        many => Err(format!(
            "{err}; reading back found {} live companies named `{}`: ambiguous, rename or delete all but one",
            many.len(),
            new.name
        )),
    }
}

async fn update_company<E: Effects>(ctx: &Ctx<'_, E>, change: &Change) -> Result<Step, String> {
    let patch = change.company_patch().map_err(undecodable)?;
    let id = live_id(change)?;
    ctx.effects.update_company(id, &patch).await.map_err(|e| e.to_string())?;
    Ok(Step::done(id.to_string()))
}

/// The id of the live company named `name`: exactly one must exist.
async fn company_id_by_name<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    name: &str,
) -> Result<String, String> {
    let cached = ctx.companies_found.lock().unwrap_or_else(PoisonError::into_inner).get(name).cloned();
    if let Some(id) = cached {
        return Ok(id);
    }
    let id = find_company_id(ctx, change, name).await?;
    ctx.companies_found.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), id.clone());
    Ok(id)
}

async fn find_company_id<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    name: &str,
) -> Result<String, String> {
    let found = ctx
        .effects
        .find_companies(name)
        .await
        .map_err(|e| format!("cannot find the company `{name}` of `{}`: {e}", change.address))?;
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(format!("the company `{name}` of `{}` does not exist", change.address)),
        many => Err(format!(
            "{} live companies are named `{name}`: ambiguous, rename or delete all but one",
            many.len()
        )),
    }
}

async fn create_user<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    email: &Email,
    company_id: Option<String>,
) -> Result<Step, String> {
    let company = change.user_company().map_err(undecodable)?;
    // The company made in this run, else the live company the plan was made against (its id
    // is in the plan: no request), else a lookup by name (a plan written without the id).
    let company_id = match company_id.or_else(|| change.planned_company_id().map(str::to_string)) {
        Some(id) => id,
        None => company_id_by_name(ctx, change, company).await?,
    };
    // Checked before the first request of the run; this only guards a direct caller.
    let password =
        ctx.passwords.get(email).ok_or_else(|| format!("no password was resolved for `{email}`"))?;
    let new = change.new_user(&company_id, password.clone()).map_err(undecodable)?;
    let mut sent = 0;
    let (err, found) = loop {
        sent += 1;
        let err = match ctx.effects.create_user(&new).await {
            Ok(created) => return Ok(Step::done(created.id)),
            Err(e) if e.outcome_unknown() || e.is_duplicate() => e,
            Err(e) => return Err(e.to_string()),
        };
        tracing::info!(address = %change.address, error = %err, "create may have taken effect: reading back");
        let found = ctx.effects.find_user(email).await.map_err(|r| read_back_failed(change, &err, &r))?;
        if !(found.is_none() && may_send_again(&err, sent)) {
            break (err, found);
        }
        tracing::info!(address = %change.address, "not created: sending the create again");
    };
    let Some(live) = found else { return Err(err.to_string()) };
    if live.company_id.as_deref() != Some(company_id.as_str()) {
        return Err(format!(
            "`{}` already exists in another company (company id {}), not in `{company}`: move or delete it by hand",
            change.address,
            live.company_id.as_deref().unwrap_or("none"),
        ));
    }
    if live.kind != UserKind::Service {
        return Err(format!(
            "`{}` already exists in `{company}` but is not a service user ({:?}): change or delete it by hand",
            change.address, live.kind
        ));
    }
    // Adopt, and converge the managed fields the existing user differs in.
    let patch = converge_user(&new, &live);
    if patch != UserPatch::default() {
        ctx.effects
            .update_user(&live.id, &patch)
            .await
            .map_err(|e| format!("adopted the existing `{}` but could not update it: {e}", change.address))?;
    }
    Ok(Step::adopted(live.id))
}

/// The fields of `live` that differ from what the create asked for.
fn converge_user(new: &NewUser, live: &ObservedUser) -> UserPatch {
    let text = |want: &String, have: &String| (want != have).then(|| want.clone());
    let flag = |want: Option<bool>, have: bool| want.filter(|w| *w != have);
    let mut patch = UserPatch {
        first_name: text(&new.first_name, &live.first_name),
        last_name: text(&new.last_name, &live.last_name),
        middle_name: text(&new.middle_name, &live.middle_name),
        active: (new.active != live.active).then_some(new.active),
        ..UserPatch::default()
    };
    patch.permissions.biometry = flag(new.permissions.biometry, live.permissions.biometry);
    patch.permissions.collection = flag(new.permissions.collection, live.permissions.collection);
    patch.permissions.documents = flag(new.permissions.documents, live.permissions.documents);
    patch.permissions.quality = flag(new.permissions.quality, live.permissions.quality);
    patch
}

async fn update_user<E: Effects>(ctx: &Ctx<'_, E>, change: &Change) -> Result<Step, String> {
    let patch = change.user_patch().map_err(undecodable)?;
    let id = live_id(change)?;
    ctx.effects.update_user(id, &patch).await.map_err(|e| e.to_string())?;
    Ok(Step::done(id.to_string()))
}

async fn issue_token<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    email: &Email,
    user_id: Option<String>,
) -> Result<TokenRecord, String> {
    let user_id = match user_id.or_else(|| change.live_id.clone()) {
        Some(id) => id,
        None => match ctx.effects.find_user(email).await {
            Ok(Some(user)) => user.id,
            Ok(None) => {
                return Err(format!("the service user `{email}` of `{}` does not exist", change.address));
            }
            Err(e) => return Err(format!("cannot find the service user `{email}`: {e}")),
        },
    };
    // Issuing again after an unknown outcome costs at most a token nobody stored (what a
    // later apply would do anyway); there is no natural key to read a token back by.
    let mut sent = 0;
    let token = loop {
        sent += 1;
        match ctx.effects.issue_token(&user_id).await {
            Ok(token) => break token,
            Err(e) if e.outcome_unknown() && sent < SEND_LIMIT => {
                tracing::info!(address = %change.address, error = %e, "the token may not have been issued: issuing again");
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    Ok(TokenRecord {
        email: email.key(),
        // The API says whose token it is; fall back to what was asked if it leaves that out.
        user_id: if token.user_id.is_empty() { user_id } else { token.user_id },
        token_id: token.token_id,
        access_token: token.access_token,
        expire_date: token.expire_date,
        api_url: ctx.api_url.to_string(),
        issued_at: humantime::format_rfc3339_seconds((ctx.now)()).to_string(),
    })
}
