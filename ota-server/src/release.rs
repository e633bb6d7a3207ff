//! Release rules: the promotion gate, the statement a release carries, and what a rollback
//! goes back to.

use firmware::image::{ReleaseError, ReleaseStatement, SignedRelease};

use crate::fleet::{Environment, Fleet};
use crate::store::{ImageId, ImageRow};

/// Why a release was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The promotion gate is closed (409).
    Gate(String),
    /// The statement is malformed or says something else (400).
    BadStatement(String),
    /// The statement is not signed by the environment's key (403).
    WrongKey(String),
    /// The statement's sequence is not the next one (409).
    SequenceTaken {
        /// The statement's sequence.
        got: u64,
        /// The one expected.
        expected: u64,
    },
    /// No statement, and the server does not hold the key (400).
    StatementRequired(String),
    /// The image is already the current, running release (409).
    AlreadyCurrent(String),
}

/// Short form of an image id for messages.
pub fn short(id: ImageId) -> String {
    id.to_string()[..12].to_owned()
}

/// The promotion gate: may `image` enter `env`? Open when the environment has no upstream,
/// when the image was released there before, or when enough upstream devices confirmed it
/// with failures under the upstream's threshold and no upstream rollout of it halted.
pub fn gate(fleet: &Fleet, env: &Environment, image: &ImageRow) -> Result<(), Refusal> {
    let Some(upstream_name) = env.row.upstream.as_ref().map(|u| u.as_str()) else { return Ok(()) };
    if fleet.releases_of(&env.row.name).iter().any(|r| r.row.image_id == image.id) {
        return Ok(());
    }
    let name = &env.row.name;
    let id = short(image.id);
    let Some(upstream) = fleet.environment(upstream_name) else {
        return Err(Refusal::Gate(format!("upstream environment {upstream_name} does not exist")));
    };
    // A halt is remembered after the release is superseded (by a rollback, say), unless an
    // operator resumed it and it then completed (which clears the mark).
    if let Some(halted) =
        fleet.releases_of(upstream_name).iter().find(|r| r.row.image_id == image.id && r.row.halted)
    {
        return Err(Refusal::Gate(format!(
            "image {id} halted in {upstream_name} (release {}): {}",
            halted.row.sequence,
            halted.row.reason.as_deref().unwrap_or("stopped")
        )));
    }
    let in_upstream = |d: &usize| fleet.devices[*d].row.environment == upstream_name;
    let (confirmed, failed) = fleet.outcomes.get(&image.id).map_or((0, 0), |o| {
        (o.confirmed.iter().filter(|d| in_upstream(d)).count(), {
            o.failed.iter().filter(|d| in_upstream(d)).count()
        })
    });
    let min = env.row.rollout.promote_min_confirmed as usize;
    if min > 0 && !fleet.releases_of(upstream_name).iter().any(|r| r.row.image_id == image.id) {
        return Err(Refusal::Gate(format!(
            "image {id} was never released to {upstream_name}; {name} takes only images \
             confirmed there"
        )));
    }
    if confirmed < min {
        return Err(Refusal::Gate(format!(
            "image {id} was confirmed on {confirmed} device(s) of {upstream_name}; {name} \
             requires {min} before it may enter"
        )));
    }
    let total = confirmed + failed;
    if total > 0 && failed as f64 / total as f64 > upstream.row.rollout.failure_threshold {
        return Err(Refusal::Gate(format!(
            "image {id} failed on {failed} of {total} device(s) of {upstream_name} that tried \
             it, above its failure threshold of {:.1}%",
            100.0 * upstream.row.rollout.failure_threshold
        )));
    }
    Ok(())
}

/// The statement a release of `image` to `env` carries: `given` (checked: parse, environment,
/// image, sequence, signature by the environment's key) or, where the server holds the key
/// and none is given, one the server signs.
pub fn statement(
    env: &Environment,
    image: ImageId,
    sequence: u64,
    given: Option<&[u8]>,
) -> Result<Vec<u8>, Refusal> {
    let name = &env.row.name;
    let Some(bytes) = given else {
        let Some(key) = &env.signing else {
            return Err(Refusal::StatementRequired(format!(
                "the server does not hold environment {name}'s release key: sign the statement \
                 offline (imager promote --key) and send it"
            )));
        };
        let statement = ReleaseStatement::new(image, name, sequence)
            .ok_or_else(|| Refusal::BadStatement(format!("environment name {name:?}")))?;
        return Ok(SignedRelease::sign(&statement, key));
    };
    let signed = SignedRelease::parse(bytes)
        .map_err(|e| Refusal::BadStatement(format!("release statement: {e}")))?;
    let s = signed.statement();
    if s.environment() != name {
        return Err(Refusal::BadStatement(format!(
            "the statement is for environment {:?}, not {name:?}",
            s.environment()
        )));
    }
    if s.image_id() != image {
        return Err(Refusal::BadStatement(format!(
            "the statement names image {}, not {}",
            short(s.image_id()),
            short(image)
        )));
    }
    if s.sequence() != sequence {
        return Err(Refusal::SequenceTaken { got: s.sequence(), expected: sequence });
    }
    signed.verify(&[env.key]).map_err(|e| match e {
        ReleaseError::UnknownKey(k) => Refusal::WrongKey(format!(
            "the statement is signed by key {k}, not by environment {name}'s release key {}",
            env.key.id()
        )),
        other => Refusal::WrongKey(format!("release statement: {other}")),
    })?;
    Ok(bytes.to_vec())
}

/// Refuses releasing the image that is already current for its board and still offered.
pub fn check_not_current(fleet: &Fleet, env: &str, image: &ImageRow) -> Result<(), Refusal> {
    match fleet.current(env, &image.board) {
        Some(r) if r.row.image_id == image.id && r.row.state.offers() => {
            Err(Refusal::AlreadyCurrent(format!(
                "image {} is already {env}'s current release {} for board {} ({})",
                short(image.id),
                r.row.sequence,
                image.board,
                r.row.state
            )))
        }
        _ => Ok(()),
    }
}

/// What a rollback of `env` for `board` releases: the latest earlier release of another
/// image.
pub fn rollback_target(fleet: &Fleet, env: &str, board: &str) -> Option<ImageId> {
    let current = fleet.current(env, board)?;
    fleet
        .releases_of(env)
        .iter()
        .rev()
        .filter(|r| r.row.board == board && r.row.sequence < current.row.sequence)
        .find(|r| r.row.image_id != current.row.image_id)
        .map(|r| r.row.image_id)
}
