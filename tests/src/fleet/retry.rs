//! Riding out an outage, as a device in the field must: a request that fails in a way that may
//! pass (the server unreachable, restarting or overloaded: [`Error::is_transient`]) is tried
//! again after a pause that doubles from [`Backoff::FIRST`] to [`Backoff::MAX`], each pause
//! drawn at random from its upper half so that thousands of devices do not come back in step.
//! Only when the server has been failing for longer than the outage limit does the caller get
//! an [`Outage`]; any other failure comes back at once.

use std::future::Future;
use std::time::{Duration, Instant};

use firmware::sim::Rng;
use ota_proto::client::{Client, Error};

/// How long to keep trying, and how fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
    /// The longest outage ridden out: a request failing for longer gives up.
    pub limit: Duration,
}

impl Backoff {
    /// The first pause, by default.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest pause, by default.
    pub const MAX: Duration = Duration::from_secs(5);

    /// The default pauses, giving up after `limit`.
    pub fn new(limit: Duration) -> Backoff {
        Backoff { first: Self::FIRST, max: Self::MAX, limit }
    }

    /// The pause after `failures` failures in a row (1 or more), before jitter.
    pub fn pause(&self, failures: u32) -> Duration {
        let doubled = self.first.saturating_mul(1 << failures.saturating_sub(1).min(20));
        doubled.min(self.max)
    }
}

/// A server that stayed unreachable (or kept failing transiently) for longer than the limit.
#[derive(Debug)]
pub struct Outage {
    /// What was being done.
    pub what: String,
    /// How long it kept failing.
    pub waited: Duration,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last: Error,
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: gave up after {:.1} s of outage and {} attempts (the outage limit, \
             --outage-limit): {}",
            self.what,
            self.waited.as_secs_f64(),
            self.attempts,
            self.last
        )
    }
}

impl std::error::Error for Outage {}

/// A client that rides out outages: one per simulated device (each with its own token and
/// random pauses), sharing the fleet's connection pool.
#[derive(Clone, Debug)]
pub struct Retrying {
    /// The client (its token and the shared pool).
    pub client: Client,
    backoff: Backoff,
    jitter: Rng,
}

impl Retrying {
    /// `client` with `backoff`; `seed` draws the pauses.
    pub fn new(client: Client, backoff: Backoff, seed: u64) -> Retrying {
        Retrying { client, backoff, jitter: Rng::new(seed) }
    }

    /// Runs `request` (`what` names it in errors) until it succeeds, fails in a way retrying
    /// cannot fix (that error comes back as it is), or has failed transiently for longer than
    /// the outage limit (an [`Outage`]). Each retry adds one to `retries`. `request` gets its
    /// own handle on the client (a cheap clone), so that its future borrows nothing of `self`.
    pub async fn call<T, F, Fut>(
        &mut self,
        retries: &mut u64,
        what: &str,
        mut request: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut started: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let last = match request(self.client.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(e) if !e.is_transient() => {
                    return Err(anyhow::Error::new(e).context(what.to_owned()));
                }
                Err(e) => e,
            };
            failures += 1;
            let since = *started.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            let left = self.backoff.limit.saturating_sub(waited);
            if left.is_zero() {
                let what = what.to_owned();
                return Err(Outage { what, waited, attempts: failures, last }.into());
            }
            let pause = self.backoff.pause(failures);
            let half = pause / 2;
            let drawn = half + half.mul_f64(self.jitter.below(1 << 20) as f64 / (1 << 20) as f64);
            tokio::time::sleep(drawn.min(left)).await;
            *retries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_proto::client::ApiError;

    #[test]
    fn pauses_double_up_to_the_longest() {
        let b = Backoff::new(Duration::from_secs(120));
        let pauses: Vec<u128> = (1..=8).map(|n| b.pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.pause(u32::MAX), Backoff::MAX);
    }

    fn unreachable() -> Error {
        Error::Unreachable { base: "http://127.0.0.1:9".into(), reason: "refused".into() }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_server_answers() {
        let backoff =
            Backoff { first: Duration::from_millis(1), ..Backoff::new(Duration::from_secs(10)) };
        let client = Client::new("http://127.0.0.1:9", "t").unwrap();
        let mut retrying = Retrying::new(client, backoff, 1);
        let (mut retries, calls) = (0, std::cell::Cell::new(0));
        let answer = retrying
            .call(&mut retries, "check-in", |_| {
                calls.set(calls.get() + 1);
                std::future::ready(if calls.get() < 4 { Err(unreachable()) } else { Ok(7) })
            })
            .await
            .unwrap();
        assert_eq!((answer, calls.get(), retries), (7, 4, 3));

        // A refusal is not retried, and keeps its code.
        let (mut retries, calls) = (0, std::cell::Cell::new(0));
        let err = retrying
            .call(&mut retries, "check-in", |_| {
                calls.set(calls.get() + 1);
                let refusal =
                    ApiError { status: 401, code: "unauthorized".into(), message: "no".into() };
                std::future::ready(Err::<(), Error>(refusal.into()))
            })
            .await
            .unwrap_err();
        assert_eq!((calls.get(), retries), (1, 0));
        assert_eq!(err.downcast_ref::<Error>().and_then(Error::code), Some("unauthorized"));
        assert_eq!(format!("{err:#}"), "check-in: no (unauthorized, HTTP 401)");
    }

    #[tokio::test]
    async fn an_outage_longer_than_the_limit_gives_up_and_says_so() {
        let limit = Duration::from_millis(300);
        let backoff = Backoff { first: Duration::from_millis(10), ..Backoff::new(limit) };
        let client = Client::new("http://127.0.0.1:9", "t").unwrap();
        let mut retrying = Retrying::new(client, backoff, 2);
        let started = Instant::now();
        let mut retries = 0;
        let err = retrying
            .call(&mut retries, "device sim-1: check-in", |_| {
                std::future::ready(Err::<(), Error>(unreachable()))
            })
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(took >= limit && took < limit * 4, "{took:?}");
        let outage = err.downcast_ref::<Outage>().unwrap_or_else(|| panic!("{err:#}"));
        assert_eq!(outage.attempts as u64, retries + 1);
        assert!(retries >= 3, "{retries}");
        let text = err.to_string();
        assert!(
            text.starts_with("device sim-1: check-in: gave up after 0.")
                && text.ends_with("(the outage limit, --outage-limit): cannot reach the ota-server at http://127.0.0.1:9: refused"),
            "{text}"
        );
    }
}
