//! The executor: runs a plan's changes as a dependency graph, concurrently.
//!
//! I/O only through `Effects`, `TokenStore` and `Progress`. Scheduling: a step starts as soon as
//! all its dependencies are done (not in waves), at most `parallelism` talking to the API at a
//! time; among the ready ones, a token step first while a token slot is free (below), else the
//! lowest plan index. A failed step skips everything
//! downstream of it and nothing else. All steps run as futures on the caller's task
//! (`FuturesUnordered`): the work is waiting on HTTP, and one task keeps the scheduler state
//! free of locks.
//!
//! A token step has two phases: the API issues the token, then the token store keeps it. The step is
//! done only when both are. It holds a *token slot* from before it asks for the token until the
//! store has it durably, and there are `parallelism` token slots: so at most `parallelism`
//! tokens are ever issued but not yet stored, whatever the speeds of the API and the disk (with
//! a fast API and a slow disk, token steps wait for slots instead of letting a backlog of
//! tokens recorded nowhere grow; a `kill -9` loses at most that many). Its API slot, though,
//! is handed on as soon as the token is issued: the store is blocking file I/O (create, fsync,
//! rename, fsync the directory) on tokio's blocking pool, and meanwhile the next steps that
//! are not tokens (creates, updates) talk to the API. Holding the API slot through the fsyncs
//! made an apply of 2,000 tokens take up to 1.8 times its request-bound time on a slow disk
//! (see `benches/bench_apply.rs`).
//!
//! Before the first step of a plan that issues tokens, the token store's `check` runs once: a
//! store that cannot keep a token stops the apply before any token exists.
//!
//! Cancellation (`ExecuteOptions::cancel`): once it reads `true`, no new step starts; the steps
//! in flight finish, tokens already issued are stored, and the report lists what was not
//! started.
//!
//! Twins: after creating a company, the companies of that name are read back; the API lets two
//! share a name (another apply, elsewhere, at the same time), and then no user may be created
//! into either: the step fails naming both ids, and its users are skipped.
//!
//! Exactly-once creates: a create whose outcome is unknown, or that the API calls a duplicate,
//! is never re-sent blindly: the object is read back by its natural key and adopted if it is
//! there. Only when the API itself answered 500 or 503 (it finished with the request) and the
//! read-back finds nothing is the create sent again, a bounded number of times; after a
//! timeout or a dropped connection the step fails instead. A token issue whose outcome is
//! unknown is sent again (bounded): a lost token is harmless, and a token cannot be read back.
//! An adopted object is brought to the create's fields with the planner's own field diff
//! (`plan::user_update`, `plan::company_update`).
//!
//! Removals (`deactivate`, `delete`) are one request each, then the removed user's stored token
//! is dropped (`TokenStore::delete`, on the blocking pool), only once the API confirmed the
//! removal.
//!
//! Words: a *step* is the execution of one change; it *finishes* `Made` (the live id it leaves
//! for its dependents, and whether it adopted), failed, or skipped. A token step's API phase
//! ends `Issued` and its store phase ends the step.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt as _};
use serde::Serialize;
use tokio::sync::watch;

use super::effects::{EffectError, EffectErrorKind};
use super::order::Graph;
use super::progress::{Outcome, Progress};
use super::step_error::{StepError, StepErrorKind};
use super::{ApplyError, Effects, MissingPassword, Passwords};
use crate::model::{Email, UserKind, UserPatch};
use crate::plan::{
    Action, Address, Change, CompanyFields, Payload, Plan, TokenIssue, Update, UserCreate, company_update,
    user_update,
};
use crate::token_store::{TokenRecord, TokenStore};

/// How to execute.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// At most this many steps talking to the API at once, and at most this many token steps
    /// between asking for a token and having it stored (0 is taken as 1).
    pub parallelism: usize,
    /// The passwords of the plan's user creates (`resolve_passwords`).
    pub passwords: Passwords,
    /// The clock for `issued_at` of stored tokens.
    pub now: fn() -> SystemTime,
    /// Once this reads `true`, no new step starts (a graceful stop: SIGINT, SIGTERM).
    pub cancel: Option<watch::Receiver<bool>>,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self { parallelism: 8, passwords: Passwords::new(), now: SystemTime::now, cancel: None }
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

/// A step that failed. `error` names the request or the token store; it holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedStep {
    pub address: Address,
    pub action: Action,
    pub error: StepError,
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
    /// Steps not started because the apply was cancelled.
    pub not_started: Vec<Address>,
    /// The apply was cancelled (`ExecuteOptions::cancel`) before it ended.
    pub interrupted: bool,
}

impl ApplyReport {
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.not_started.is_empty() && !self.interrupted
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
        if self.interrupted {
            let failures = if self.failed.is_empty() && self.skipped.is_empty() {
                String::new()
            } else {
                format!(", {} failed, {} skipped", self.failed.len(), self.skipped.len())
            };
            return format!(
                "Apply interrupted: {} done{failures}, {} not started.",
                self.done.len(),
                self.not_started.len()
            );
        }
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

/// Execute `plan`. Errors only when the plan cannot be run at all (cycle, dangling
/// dependency, repeated address, a user create without a resolved password), and then before
/// the first request; step failures are in the report.
pub async fn execute<E: Effects>(
    plan: &Plan,
    effects: Arc<E>,
    store: Arc<dyn TokenStore>,
    progress: Arc<dyn Progress>,
    options: &ExecuteOptions,
) -> Result<ApplyReport, ApplyError> {
    let graph = Graph::new(&plan.changes)?;
    let missing: Vec<MissingPassword> = plan
        .changes
        .iter()
        .filter_map(|c| match (&c.address, &c.payload) {
            (Address::ServiceUser(email), Payload::CreateUser(_))
                if options.passwords.get(email).is_none() =>
            {
                Some(MissingPassword { email: email.to_string(), reason: "no password was resolved".into() })
            }
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(ApplyError::MissingPasswords { missing });
    }
    // No token without a place to keep it: proven once, before the first request.
    if plan.changes.iter().any(is_token) {
        let checking = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || checking.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(store)) => return Err(ApplyError::TokenStoreUnusable { store }),
            Err(join) => {
                return Err(ApplyError::TokenStoreUnusable {
                    store: crate::token_store::TokenStoreError::Io {
                        action: "check",
                        path: "the token store".into(),
                        reason: format!("the check did not finish: {join}"),
                    },
                });
            }
        }
    }
    let cancelled = || options.cancel.as_ref().is_some_and(|c| *c.borrow());

    let ctx = Ctx {
        effects: effects.as_ref(),
        passwords: &options.passwords,
        api_url: &plan.api_url,
        now: options.now,
        store: Arc::clone(&store),
        companies_found: Mutex::new(HashMap::new()),
    };
    let limit = options.parallelism.max(1);
    let mut waiting: Vec<usize> = graph.depends_on.iter().map(Vec::len).collect();
    let mut skipped = vec![false; graph.len()];
    let mut ready = Ready::default();
    for i in (0..graph.len()).filter(|&i| waiting[i] == 0) {
        ready.insert(i, is_token(&plan.changes[i]));
    }
    let mut ended = vec![false; graph.len()];
    let mut company_ids: HashMap<String, String> = HashMap::new();
    let mut user_ids: HashMap<String, String> = HashMap::new();
    let mut done: Vec<(usize, DoneStep)> = Vec::new();
    let mut failed: Vec<(usize, FailedStep)> = Vec::new();
    let mut skips: Vec<(usize, SkippedStep)> = Vec::new();
    // API phases and store phases together; `calling` counts the API ones, `tokens` the token
    // steps started and not yet ended (issuing, issued, or being stored).
    let mut running = FuturesUnordered::new();
    let mut calling = 0;
    let mut tokens = 0;

    loop {
        while calling < limit && !cancelled() {
            let Some(i) = ready.pop(tokens < limit) else { break };
            let change = &plan.changes[i];
            if is_token(change) {
                tokens += 1;
            }
            progress.started(&change.address, change.action());
            tracing::debug!(address = %change.address, action = %change.action(), "step started");
            // Dependencies are done, so their results are known now.
            let known = match &change.payload {
                Payload::CreateUser(create) => company_ids.get(&create.fields.company).cloned(),
                Payload::IssueToken(_) => match &change.address {
                    Address::Token(email) => user_ids.get(&email.key()).cloned(),
                    _ => None,
                },
                _ => None,
            };
            running.push(Either::Left(api_phase(&ctx, i, change, known)));
            calling += 1;
        }
        let Some((i, end)) = running.next().await else { break };
        let result = match end {
            PhaseEnd::Api(result) => {
                calling -= 1;
                match result {
                    Ok(AfterApi::Made(made)) => Ok(made),
                    Ok(AfterApi::Issued(record)) => {
                        running.push(Either::Right(store_phase(&store, i, record)));
                        continue;
                    }
                    Err(error) => Err(error),
                }
            }
            PhaseEnd::Store(result) => result,
        };
        let change = &plan.changes[i];
        ended[i] = true;
        if is_token(change) {
            tokens -= 1;
        }
        match result {
            Ok(made) => {
                match &change.address {
                    Address::Company(name) => {
                        company_ids.insert(name.clone(), made.id);
                    }
                    Address::ServiceUser(email) => {
                        user_ids.insert(email.key(), made.id);
                    }
                    Address::Token(_) => {}
                }
                let outcome = if made.adopted { Outcome::Adopted } else { Outcome::Done };
                tracing::debug!(address = %change.address, outcome = outcome.kind(), "step finished");
                progress.finished(&change.address, change.action(), &outcome);
                done.push((
                    i,
                    DoneStep {
                        address: change.address.clone(),
                        action: change.action(),
                        adopted: made.adopted,
                    },
                ));
                for &d in &graph.dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && !skipped[d] {
                        ready.insert(d, is_token(&plan.changes[d]));
                    }
                }
            }
            Err(error) => {
                tracing::debug!(address = %change.address, %error, "step failed");
                progress.finished(
                    &change.address,
                    change.action(),
                    &Outcome::Failed { error: error.clone() },
                );
                failed.push((
                    i,
                    FailedStep { address: change.address.clone(), action: change.action(), error },
                ));
                // Nothing downstream can have started: each waits for this step.
                for d in graph.downstream(i) {
                    if std::mem::replace(&mut skipped[d], true) {
                        continue;
                    }
                    ended[d] = true;
                    let skipped_change = &plan.changes[d];
                    let dependency = change.address.clone();
                    progress.finished(
                        &skipped_change.address,
                        skipped_change.action(),
                        &Outcome::Skipped { dependency: dependency.clone() },
                    );
                    skips.push((
                        d,
                        SkippedStep {
                            address: skipped_change.address.clone(),
                            action: skipped_change.action(),
                            dependency,
                        },
                    ));
                }
            }
        }
    }

    progress.all_finished();
    // Without a cancel every step ends (done, failed or skipped); with one, these never began.
    let not_started: Vec<Address> =
        (0..graph.len()).filter(|&i| !ended[i]).map(|i| plan.changes[i].address.clone()).collect();
    Ok(ApplyReport {
        done: in_plan_order(done),
        failed: in_plan_order(failed),
        skipped: in_plan_order(skips),
        interrupted: cancelled(),
        not_started,
    })
}

fn is_token(change: &Change) -> bool {
    matches!(change.payload, Payload::IssueToken(_))
}

/// The steps whose dependencies are done, by plan index; token steps apart, since they also
/// need a token slot.
#[derive(Default)]
struct Ready {
    tokens: BTreeSet<usize>,
    other: BTreeSet<usize>,
}

impl Ready {
    fn insert(&mut self, i: usize, token: bool) {
        if token {
            self.tokens.insert(i);
        } else {
            self.other.insert(i);
        }
    }

    /// The next step to start: a token step while a token slot is free, else the lowest plan
    /// index of the others. Tokens first keeps their stores (disk) overlapping with the other
    /// steps' requests all through the run; taken in plan order, every token would wait for
    /// the last user create, and the run would end with a tail of token steps bounded by the
    /// disk (`benches/bench_apply.rs`: 1.7 times the request bound instead of 1.3 on a
    /// loaded VM).
    fn pop(&mut self, token_slot_free: bool) -> Option<usize> {
        if token_slot_free && let Some(token) = self.tokens.pop_first() {
            return Some(token);
        }
        self.other.pop_first()
    }
}

fn in_plan_order<T>(mut v: Vec<(usize, T)>) -> Vec<T> {
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, t)| t).collect()
}

struct Ctx<'a, E> {
    effects: &'a E,
    passwords: &'a Passwords,
    api_url: &'a str,
    now: fn() -> SystemTime,
    /// The token store, for the token of a removed user (dropped once the removal succeeded).
    store: Arc<dyn TokenStore>,
    /// Ids of live companies found by name in this run, so the users of one unchanged company
    /// look it up once (two that start together may both look; both get the same answer).
    companies_found: Mutex<HashMap<String, String>>,
}

/// What a finished step leaves for its dependents.
struct Made {
    /// The live id of the company or user (empty for tokens).
    id: String,
    /// A create that found its object already there and adopted it.
    adopted: bool,
}

impl Made {
    fn new(id: String) -> Self {
        Self { id, adopted: false }
    }
    fn adopted(id: String) -> Self {
        Self { id, adopted: true }
    }
}

/// The end of one phase of a step.
enum PhaseEnd {
    /// The API phase (every step has one).
    Api(Result<AfterApi, StepError>),
    /// The store phase of a token step: the end of the step.
    Store(Result<Made, StepError>),
}

/// What a successful API phase leaves.
enum AfterApi {
    /// The step is finished.
    Made(Made),
    /// A token was issued; the step finishes once the token store has kept it.
    Issued(TokenRecord),
}

/// The API phase of step `i`. `known`: the id of a user create's company, or of a token's
/// user, when that dependency was made in this run.
async fn api_phase<E: Effects>(
    ctx: &Ctx<'_, E>,
    i: usize,
    change: &Change,
    known: Option<String>,
) -> (usize, PhaseEnd) {
    let result = match &change.payload {
        Payload::CreateCompany(fields) => create_company(ctx, change, fields).await.map(AfterApi::Made),
        Payload::UpdateCompany(update) => update_company(ctx, change, update).await.map(AfterApi::Made),
        Payload::CreateUser(create) => create_user(ctx, change, create, known).await.map(AfterApi::Made),
        Payload::UpdateUser(update) => update_user(ctx, change, update).await.map(AfterApi::Made),
        Payload::IssueToken(issue) => issue_token(ctx, change, issue, known).await.map(AfterApi::Issued),
        Payload::DeactivateUser(_) | Payload::DeleteUser(_) => {
            remove_user(ctx, change).await.map(AfterApi::Made)
        }
    };
    (i, PhaseEnd::Api(result))
}

/// The store phase of token step `i`, on tokio's blocking pool (the directory store fsyncs).
/// At most `parallelism` at once: each holds its step's token slot.
fn store_phase(
    store: &Arc<dyn TokenStore>,
    i: usize,
    record: TokenRecord,
) -> impl Future<Output = (usize, PhaseEnd)> + 'static {
    let store = Arc::clone(store);
    async move {
        let outcome = tokio::task::spawn_blocking(move || store.store(&record)).await;
        let result = match outcome {
            Ok(Ok(())) => Ok(Made::new(String::new())),
            Ok(Err(e)) => Err(StepError::store_failed(format!(
                "the token was issued but not stored (run `ozform apply` again to issue another): {e}"
            ))),
            Err(join) => Err(StepError::store_failed(format!(
                "the token was issued but storing it did not finish: {join}"
            ))),
        };
        (i, PhaseEnd::Store(result))
    }
}

fn live_id(change: &Change) -> Result<&str, StepError> {
    change.live_id.as_deref().ok_or_else(|| {
        StepError::failed(format!("the change of `{}` has no `live_id` to update", change.address))
    })
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
fn may_send_again(err: &EffectError, sent: usize) -> bool {
    sent < SEND_LIMIT && err.kind == EffectErrorKind::OutcomeUnknown { answered: true }
}

/// A create whose error says it may have taken effect (or that the object exists): read back.
fn read_back(err: &EffectError) -> bool {
    err.outcome_unknown() || err.kind == EffectErrorKind::AlreadyExists
}

/// When a create failed but may have taken effect and the read-back failed too: the outcome is
/// unknown, whatever the read-back's own error was.
fn read_back_failed(change: &Change, create: &EffectError, read: &EffectError) -> StepError {
    StepError::new(
        StepErrorKind::OutcomeUnknown,
        format!("{create}; reading `{}` back to see whether it was created failed: {read}", change.address),
    )
}

async fn create_company<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    fields: &CompanyFields,
) -> Result<Made, StepError> {
    let new = fields.new_company();
    let mut sent = 0;
    let (err, found) = loop {
        sent += 1;
        let err = match ctx.effects.create_company(&new).await {
            Ok(created) => return no_twin(ctx, change, &new.name, created.id).await.map(Made::new),
            Err(e) if read_back(&e) => e,
            Err(e) => return Err(e.into()),
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
        [] => Err(err.into()),
        [live] => {
            // Adopt, and converge the managed fields the existing company differs in.
            if let Some(update) = company_update(fields, live) {
                ctx.effects.update_company(&live.id, &update.patch()).await.map_err(|e| {
                    StepError::from(e).context(format!(
                        "adopted the existing `{}` but could not update it: ",
                        change.address
                    ))
                })?;
            }
            Ok(Made::adopted(live.id.clone()))
        }
        many => Err(StepError::conflict(format!(
            "{err}; reading back found {} live companies named `{}`: ambiguous, rename or delete all but one",
            many.len(),
            new.name
        ))),
    }
}

/// After creating the company `name` (id `id`): read the companies of that name back. Another
/// apply at the same time (another runner, another token directory: no lock can help) may have
/// created one too, and the API lets two share a name; then no user may go into either, so the
/// step fails naming every id, and its users are skipped.
async fn no_twin<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    name: &str,
    id: String,
) -> Result<String, StepError> {
    let found = ctx.effects.find_companies(name).await.map_err(|e| {
        StepError::failed(format!(
            "created `{}` (id {id}) but could not read it back to check that it has no twin: {e}; run `ozform apply` again",
            change.address
        ))
    })?;
    if found.len() <= 1 {
        return Ok(id);
    }
    let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
    Err(StepError::conflict(format!(
        "created `{}` (id {id}), but {} live companies are now named `{name}` (ids {}): another apply \
         probably ran at the same time; no service user was created into either — keep one (rename \
         or delete the others) and run `ozform apply` again, and run applies one at a time (a CI \
         concurrency group)",
        change.address,
        found.len(),
        ids.join(", ")
    )))
}

async fn update_company<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    update: &Update<CompanyFields>,
) -> Result<Made, StepError> {
    let id = live_id(change)?;
    ctx.effects.update_company(id, &update.patch()).await?;
    Ok(Made::new(id.to_string()))
}

/// The id of the live company named `name`: exactly one must exist.
async fn company_id_by_name<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    name: &str,
) -> Result<String, StepError> {
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
) -> Result<String, StepError> {
    let found = ctx.effects.find_companies(name).await.map_err(|e| {
        StepError::from(e).context(format!("cannot find the company `{name}` of `{}`: ", change.address))
    })?;
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => {
            Err(StepError::conflict(format!("the company `{name}` of `{}` does not exist", change.address)))
        }
        many => Err(StepError::conflict(format!(
            "{} live companies are named `{name}`: ambiguous, rename or delete all but one",
            many.len()
        ))),
    }
}

async fn create_user<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    create: &UserCreate,
    company_id: Option<String>,
) -> Result<Made, StepError> {
    let email = &create.fields.email;
    let company = create.fields.company.as_str();
    // The company made in this run, else the live company the plan was made against (its id
    // is in the plan: no request), else a lookup by name (a plan written without the id).
    let company_id = match company_id.or_else(|| create.company_id.clone()) {
        Some(id) => id,
        None => company_id_by_name(ctx, change, company).await?,
    };
    // Checked before the first request of the run; this only guards a direct caller.
    let password = ctx
        .passwords
        .get(email)
        .ok_or_else(|| StepError::failed(format!("no password was resolved for `{email}`")))?;
    let new = create.new_user(&company_id, password.clone());
    let mut sent = 0;
    let (err, found) = loop {
        sent += 1;
        let err = match ctx.effects.create_user(&new).await {
            Ok(created) => return Ok(Made::new(created.id)),
            Err(e) if read_back(&e) => e,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(address = %change.address, error = %err, "create may have taken effect: reading back");
        let found = ctx.effects.find_user(email).await.map_err(|r| read_back_failed(change, &err, &r))?;
        if !(found.is_none() && may_send_again(&err, sent)) {
            break (err, found);
        }
        tracing::info!(address = %change.address, "not created: sending the create again");
    };
    let Some(live) = found else { return Err(err.into()) };
    if live.company_id.as_deref() != Some(company_id.as_str()) {
        return Err(StepError::conflict(format!(
            "`{}` already exists in another company (company id {}), not in `{company}`: move or delete it by hand",
            change.address,
            live.company_id.as_deref().unwrap_or("none"),
        )));
    }
    if live.kind != UserKind::Service {
        return Err(StepError::conflict(format!(
            "`{}` already exists in `{company}` but is not a service user ({}): change or delete it by hand",
            change.address,
            live.kind.describe()
        )));
    }
    // Adopt, and converge the managed fields the existing user differs in.
    if let Some(update) = user_update(&create.fields, &live) {
        ctx.effects.update_user(&live.id, &update.patch()).await.map_err(|e| {
            StepError::from(e)
                .context(format!("adopted the existing `{}` but could not update it: ", change.address))
        })?;
    }
    Ok(Made::adopted(live.id))
}

async fn update_user<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    update: &Update<crate::plan::UserFields>,
) -> Result<Made, StepError> {
    let id = live_id(change)?;
    ctx.effects.update_user(id, &update.patch()).await?;
    Ok(Made::new(id.to_string()))
}

/// A removal: deactivate (`PATCH` of the inactive flag) or delete the live user, then drop its
/// stored token. The token is dropped only after the API confirmed the removal: a removal that
/// failed leaves a user that may still need it. A store that cannot drop it fails the step
/// (the user is removed; the next plan no longer plans it, so the file must go by hand).
async fn remove_user<E: Effects>(ctx: &Ctx<'_, E>, change: &Change) -> Result<Made, StepError> {
    let Address::ServiceUser(email) = &change.address else {
        return Err(StepError::failed(format!(
            "the change of `{}` removes a user but is not a user",
            change.address
        )));
    };
    let id = live_id(change)?;
    if let Payload::DeleteUser(_) = &change.payload {
        ctx.effects.delete_user(id).await?;
    } else {
        let patch = UserPatch { active: Some(false), ..UserPatch::default() };
        ctx.effects.update_user(id, &patch).await?;
    }
    let store = Arc::clone(&ctx.store);
    let key = email.key();
    match tokio::task::spawn_blocking(move || store.delete(&key)).await {
        Ok(Ok(())) => Ok(Made::new(id.to_string())),
        Ok(Err(e)) => Err(StepError::store_failed(format!(
            "the user was removed but its stored token could not be dropped (remove it from the token store by hand): {e}"
        ))),
        Err(join) => Err(StepError::store_failed(format!(
            "the user was removed but dropping its stored token did not finish: {join}"
        ))),
    }
}

async fn issue_token<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    issue: &TokenIssue,
    user_id: Option<String>,
) -> Result<TokenRecord, StepError> {
    let Address::Token(email) = &change.address else {
        return Err(StepError::failed(format!(
            "the change of `{}` issues a token but is not a token",
            change.address
        )));
    };
    let user_id = match user_id.or_else(|| issue.user_id.clone()) {
        Some(id) => id,
        None => find_user_id(ctx, change, email).await?,
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
            Err(e) => return Err(e.into()),
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
        password: None,
        company: None,
    })
}

async fn find_user_id<E: Effects>(
    ctx: &Ctx<'_, E>,
    change: &Change,
    email: &Email,
) -> Result<String, StepError> {
    match ctx.effects.find_user(email).await {
        // A token only ever for a service user: a user of this email made by someone else
        // since the plan was checked may be anything.
        Ok(Some(user)) if user.kind != UserKind::Service => Err(StepError::conflict(format!(
            "the user `{email}` of `{}` is not a service user ({}): no token is issued for it",
            change.address,
            user.kind.describe()
        ))),
        Ok(Some(user)) => Ok(user.id),
        Ok(None) => Err(StepError::conflict(format!(
            "the service user `{email}` of `{}` does not exist",
            change.address
        ))),
        Err(e) => Err(StepError::from(e).context(format!("cannot find the service user `{email}`: "))),
    }
}
