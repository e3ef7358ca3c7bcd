//! One operation over each installation of a run, in the manner of octoDNS's `Manager.sync`
//! looping over its targets: the same body for one installation or many, the one-installation
//! run (no project file) being the one-element case.
//!
//! Installations run one after another, or up to `Order::parallelism` at once. Each gets its
//! own `View` (`Views::start`), and its end is said in the order the installations were given
//! (`Views::end`, once for every installation, one that never started included), so that a
//! terminal can show one section per installation however the runs overlapped. A failing
//! installation does not stop the others unless `Order::stop_after_failure` (an `apply`
//! without `--keep-going`): then none starts after it (those running finish); nor does any
//! start once the cancel channel says stop. Each outcome is handed back with the name and URL
//! of its installation, for the command line to sum up and map to one exit code.
//!
//! An operation, like the others: it never prints and never ends the process.

use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;

use super::View;
use super::settings::InstallationSettings;
use crate::error::Error;

/// How one installation's run went.
#[derive(Debug)]
pub enum Ran<T> {
    Done(T),
    Failed(Error),
    /// Not started: an installation before it failed (and the run stops at a failure), or a
    /// stop was asked for.
    NotStarted,
}

impl<T> Ran<T> {
    pub fn done(&self) -> Option<&T> {
        match self {
            Ran::Done(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// One installation's outcome, with what names it.
#[derive(Debug)]
pub struct Each<T> {
    /// The project file's name for it; `None` without a project file.
    pub name: Option<String>,
    pub api_url: String,
    pub ran: Ran<T>,
}

/// How an operation over several installations talks to its user: a view per installation,
/// and a word when each ends.
pub trait Views<T>: Send + Sync {
    /// Installation `index` (of those the run acts on, in their order) starts: its view.
    fn start(&self, index: usize, installation: &InstallationSettings) -> Arc<dyn View>;
    /// Installation `index` ended (or never started): called once for each, in no particular
    /// order when installations overlap.
    fn end(&self, index: usize, ran: &Ran<T>);
    /// What the run says before or besides any one installation (e.g. a saved plan missing).
    fn overall(&self) -> Arc<dyn View>;
}

/// How the installations of a run take turns.
#[derive(Debug, Clone, Copy)]
pub struct Order {
    /// How many run at once (at least 1).
    pub parallelism: usize,
    /// Start none after one failed (`apply` without `--keep-going`).
    pub stop_after_failure: bool,
}

/// Run `run` for each of `installations` (its index and its view), as `order` says; `failed`
/// tells a failure among the outcomes that are not errors (a partial apply).
pub async fn each<T, F>(
    installations: &[&InstallationSettings],
    order: Order,
    views: &dyn Views<T>,
    cancel: Option<&watch::Receiver<bool>>,
    failed: impl Fn(&T) -> bool,
    run: F,
) -> Vec<Each<T>>
where
    F: AsyncFn(usize, Arc<dyn View>) -> Result<T, Error>,
{
    let count = installations.len();
    let mut results: Vec<Ran<T>> = std::iter::repeat_with(|| Ran::NotStarted).take(count).collect();
    let mut running = FuturesUnordered::new();
    let mut next = 0;
    let mut stopped = false;
    loop {
        while !stopped && next < count && running.len() < order.parallelism.max(1) {
            if cancel.is_some_and(|c| *c.borrow()) {
                stopped = true;
                break;
            }
            let index = next;
            next += 1;
            let view = views.start(index, installations[index]);
            let future = run(index, view);
            running.push(async move { (index, future.await) });
        }
        let Some((index, result)) = running.next().await else { break };
        let ran = match result {
            Ok(outcome) => {
                stopped |= order.stop_after_failure && failed(&outcome);
                Ran::Done(outcome)
            }
            Err(error) => {
                stopped |= order.stop_after_failure;
                Ran::Failed(error)
            }
        };
        views.end(index, &ran);
        results[index] = ran;
    }
    for (index, ran) in results.iter().enumerate().skip(next) {
        views.end(index, ran);
    }
    installations
        .iter()
        .zip(results)
        .map(|(installation, ran)| Each {
            name: installation.name.clone(),
            api_url: installation.connection.api_url.clone().unwrap_or_default(),
            ran,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::ops::Quiet;
    use crate::ops::settings::{Connection, StoreSpec, Tokens};

    fn installation(name: &str) -> InstallationSettings {
        InstallationSettings {
            name: Some(name.into()),
            connection: Connection::new(&format!("https://{name}.example"), "a@b.example"),
            tokens: Tokens::new(StoreSpec::Dir("t".into())),
            manifests: vec![],
        }
    }

    /// Records starts and ends.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Views<u32> for Log {
        fn start(&self, index: usize, installation: &InstallationSettings) -> Arc<dyn View> {
            self.0.lock().unwrap().push(format!("start {index} {}", installation.name.as_deref().unwrap()));
            Arc::new(Quiet)
        }
        fn end(&self, index: usize, ran: &Ran<u32>) {
            let how = match ran {
                Ran::Done(n) => format!("done {n}"),
                Ran::Failed(e) => format!("failed {e}"),
                Ran::NotStarted => "not started".into(),
            };
            self.0.lock().unwrap().push(format!("end {index} {how}"));
        }
        fn overall(&self) -> Arc<dyn View> {
            Arc::new(Quiet)
        }
    }

    fn fail() -> Error {
        Error::Usage { message: "down".into(), help: String::new() }
    }

    async fn run(
        names: &[&str],
        order: Order,
        cancel: Option<&watch::Receiver<bool>>,
    ) -> (Vec<String>, Vec<String>) {
        let settings: Vec<InstallationSettings> = names.iter().map(|n| installation(n)).collect();
        let refs: Vec<&InstallationSettings> = settings.iter().collect();
        let log = Log::default();
        let outcomes = each(
            &refs,
            order,
            &log,
            cancel,
            |n| *n == 0,
            |i, _| async move {
                match names[i] {
                    "down" => Err(fail()),
                    "partial" => Ok(0),
                    _ => Ok(u32::try_from(i).unwrap() + 1),
                }
            },
        )
        .await;
        let shown = outcomes
            .iter()
            .map(|e| format!("{}: {}", e.name.as_deref().unwrap(), matches!(e.ran, Ran::Done(_))))
            .collect();
        (log.0.into_inner().unwrap(), shown)
    }

    const ONE_BY_ONE: Order = Order { parallelism: 1, stop_after_failure: false };

    #[tokio::test]
    async fn each_installation_runs_in_turn_and_a_failure_does_not_stop_the_others() {
        let (log, outcomes) = run(&["eu", "down", "us"], ONE_BY_ONE, None).await;
        assert_eq!(
            log,
            ["start 0 eu", "end 0 done 1", "start 1 down", "end 1 failed down", "start 2 us", "end 2 done 3"]
        );
        assert_eq!(outcomes, ["eu: true", "down: false", "us: true"]);
    }

    #[tokio::test]
    async fn stopping_after_a_failure_starts_none_after_it_and_ends_each_of_them() {
        let order = Order { stop_after_failure: true, ..ONE_BY_ONE };
        let (log, _) = run(&["eu", "partial", "us", "ap"], order, None).await;
        assert_eq!(
            log,
            [
                "start 0 eu",
                "end 0 done 1",
                "start 1 partial",
                "end 1 done 0",
                "end 2 not started",
                "end 3 not started"
            ]
        );
        let (log, _) = run(&["down", "us"], order, None).await;
        assert_eq!(log, ["start 0 down", "end 0 failed down", "end 1 not started"]);
    }

    #[tokio::test]
    async fn installations_overlap_up_to_the_parallelism_and_a_stop_starts_no_more() {
        let order = Order { parallelism: 2, stop_after_failure: false };
        let (log, _) = run(&["a", "b", "c"], order, None).await;
        assert_eq!(&log[..2], ["start 0 a", "start 1 b"]);
        assert_eq!(log.len(), 6);
        let (_, stop) = watch::channel(true);
        let (log, outcomes) = run(&["a", "b"], order, Some(&stop)).await;
        assert_eq!(log, ["end 0 not started", "end 1 not started"]);
        assert_eq!(outcomes, ["a: false", "b: false"]);
    }
}
