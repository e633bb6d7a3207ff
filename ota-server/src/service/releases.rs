//! Releases, promotions, rollbacks, and pausing and resuming their rollouts.

use ota_proto::{
    BoardName, NewRelease, ReleaseInfo, ReleaseKind, Role, RollbackRequest, RollbackTarget,
};
use serde_json::json;

use super::{Service, audit, unknown_environment, unknown_image, views};
use crate::auth::Actor;
use crate::error::{Failure, FailureKind, Outcome};
use crate::fleet::{Fleet, Release};
use crate::journal::CommitError;
use crate::release::{self, Refusal, short};
use crate::store::{
    AuditAction, Conflict, EnvironmentName, ImageId, Mutation, ReleaseRow, RolloutAt, RolloutState,
    Timestamp,
};

/// What a release releases.
enum ReleaseOf {
    /// This image.
    Image(ImageId),
    /// The image before the current one, for this board (or the only board).
    PreviousImage(Option<BoardName>),
}

fn find_release<'a>(fleet: &'a Fleet, env: &str, sequence: u64) -> Outcome<&'a Release> {
    fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
    fleet.releases_of(env).iter().find(|r| r.row.sequence == sequence).ok_or_else(|| {
        Failure::not_found("unknown_release", format!("no release {env}/{sequence}"))
    })
}

/// The board a rollback is about: the one given, or the environment's only one.
fn pick_board(fleet: &Fleet, env: &str, board: Option<&BoardName>) -> Outcome<BoardName> {
    let boards = fleet.released_boards(env);
    match board {
        Some(b) if boards.contains(&b) => Ok(b.clone()),
        Some(b) => Err(Failure::conflict(
            "nothing_to_roll_back",
            format!("{env} has no release for board {b}"),
        )),
        None => match boards.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Failure::conflict("nothing_to_roll_back", format!("{env} has no releases"))),
            several => Err(Failure::bad(
                "board_required",
                format!(
                    "{env} has releases for boards {}; say which",
                    several.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        },
    }
}

impl Service {
    /// An environment's releases, newest first.
    pub fn releases(&self, env: &str) -> Outcome<Vec<ReleaseInfo>> {
        let fleet = self.fleet();
        fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
        Ok(fleet.releases_of(env).iter().rev().map(|r| views::release_info(&fleet, r)).collect())
    }

    /// One release.
    pub fn release(&self, env: &str, sequence: u64) -> Outcome<ReleaseInfo> {
        let fleet = self.fleet();
        Ok(views::release_info(&fleet, find_release(&fleet, env, sequence)?))
    }

    /// Releases an image to an environment (a promotion when it has an upstream).
    pub async fn create_release(
        &self,
        actor: &Actor,
        env: &EnvironmentName,
        new: NewRelease,
    ) -> Outcome<ReleaseInfo> {
        let statement = new.statement.map(|s| s.0);
        self.release_image(
            actor,
            env,
            ReleaseOf::Image(new.image_id),
            statement,
            ReleaseKind::Release,
        )
        .await
    }

    /// What a rollback of `env` would release.
    pub fn rollback_target(&self, env: &str, board: Option<&BoardName>) -> Outcome<RollbackTarget> {
        let fleet = self.fleet();
        fleet.environment(env).ok_or_else(|| unknown_environment(env))?;
        let board = pick_board(&fleet, env, board)?;
        let image = release::rollback_target(&fleet, env, board.as_str()).ok_or_else(|| {
            Failure::conflict(
                "nothing_to_roll_back",
                format!("{env} has no earlier release of another image for board {board}"),
            )
        })?;
        Ok(RollbackTarget { board, image_id: image, sequence: fleet.next_sequence(env) })
    }

    /// Re-releases the previous image of `env` under a new sequence.
    pub async fn rollback(
        &self,
        actor: &Actor,
        env: &EnvironmentName,
        req: RollbackRequest,
    ) -> Outcome<ReleaseInfo> {
        let statement = req.statement.map(|s| s.0);
        let target = ReleaseOf::PreviousImage(req.board);
        self.release_image(actor, env, target, statement, ReleaseKind::Rollback).await
    }

    /// Decides a release on the model: roles, the gate, the statement (checked, or signed
    /// here where the server holds the key) for the environment's next sequence.
    fn decide_release(
        &self,
        actor: &Actor,
        env: &EnvironmentName,
        image: ImageId,
        statement: Option<&[u8]>,
        kind: ReleaseKind,
    ) -> Outcome<ReleaseRow> {
        let fleet = self.fleet();
        let environment =
            fleet.environment(env.as_str()).ok_or_else(|| unknown_environment(env.as_str()))?;
        // CI releases only where the server holds the key; promotions are for `release`.
        if actor.role == Role::Ci && environment.signing.is_none() {
            return Err(Failure::forbidden(format!(
                "role ci may release only to environments whose key the server holds; {env}'s is held offline"
            )));
        }
        actor.require(&[Role::Release, Role::Ci], "release images")?;
        let img = fleet.images.get(&image).ok_or_else(|| unknown_image(image))?;
        if kind == ReleaseKind::Rollback {
            // The previous image already entered this environment: no gate.
            if fleet
                .current(env.as_str(), img.board.as_str())
                .is_some_and(|c| c.row.image_id == image)
            {
                return Err(Refusal::AlreadyCurrent(format!(
                    "image {} is already current",
                    short(image)
                ))
                .into());
            }
        } else {
            release::check_not_current(&fleet, env.as_str(), img)?;
            release::gate(&fleet, environment, img)?;
        }
        let sequence = fleet.next_sequence(env.as_str());
        let signed = release::statement(environment, image, sequence, statement)?;
        Ok(ReleaseRow {
            environment: env.clone(),
            sequence,
            image_id: image,
            board: img.board.clone(),
            kind,
            statement: signed,
            created_at: Timestamp::now(),
            created_by: actor.name.clone(),
            state: RolloutState::Rolling,
            stage: 0,
            reason: None,
            halted: false,
        })
    }

    async fn release_image(
        &self,
        actor: &Actor,
        env: &EnvironmentName,
        of: ReleaseOf,
        statement: Option<Vec<u8>>,
        kind: ReleaseKind,
    ) -> Outcome<ReleaseInfo> {
        actor.require(&[Role::Release, Role::Ci], "release images")?;
        let _guard = self.manage().await?;
        // A rollback's image is decided on the caught-up model, under the lock.
        let image = match of {
            ReleaseOf::Image(image) => image,
            ReleaseOf::PreviousImage(board) => {
                self.rollback_target(env.as_str(), board.as_ref())?.image_id
            }
        };
        let action = match kind {
            ReleaseKind::Rollback => AuditAction::ReleaseRollback,
            ReleaseKind::Release => AuditAction::ReleaseCreate,
        };
        // Where the server signs, a sequence another replica took meanwhile is simply the
        // wrong number: decide again on the caught-up model and sign the next one. (Each loss
        // means another release went through, so this ends; the bound is for safety.)
        let mut attempts = if statement.is_none() { 32 } else { 1 };
        let (sequence, board, target) = loop {
            let row = self.decide_release(actor, env, image, statement.as_deref(), kind)?;
            let target = format!("{env}/{}", row.sequence);
            let detail = json!({
                "image_id": row.image_id, "board": row.board, "kind": row.kind,
                "signed_by": if statement.is_some() { "offline key" } else { "server" },
            });
            let (sequence, board) = (row.sequence, row.board.clone());
            let batch =
                vec![Mutation::InsertRelease(Box::new(row)), audit(actor, action, &target, detail)];
            match self.journal.commit(batch).await {
                Ok(()) => break (sequence, board, target),
                Err(CommitError::Conflict(Conflict::SequenceTaken { .. })) if attempts > 1 => {
                    attempts -= 1;
                    self.journal.sync().await?;
                }
                // The statement (signed offline for this sequence) carries a taken number.
                Err(CommitError::Conflict(Conflict::SequenceTaken { .. })) => {
                    let what = if statement.is_some() {
                        "read the environment again (its next_sequence), sign for that, and retry"
                    } else {
                        "too many releases at once; retry"
                    };
                    return Err(Failure::conflict(
                        "sequence_taken",
                        format!(
                            "another release took sequence {sequence} of {env} meanwhile; {what}"
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        };
        tracing::info!(release = %target, image = %image, actor = %actor.name, "released");
        self.reevaluate(env.as_str(), board.as_str()).await;
        self.release(env.as_str(), sequence)
    }

    /// Pauses (`pause == true`) or resumes a release's rollout. Resuming a halted rollout
    /// overrides the halt (it is re-checked at once, so it only sticks if failures are back
    /// under the threshold or the settings changed).
    pub async fn set_paused(
        &self,
        actor: &Actor,
        env: &EnvironmentName,
        sequence: u64,
        pause: bool,
    ) -> Outcome<ReleaseInfo> {
        actor.require(&[Role::Release], "pause or resume rollouts")?;
        let _guard = self.manage().await?;
        let (board, m) = {
            let fleet = self.fleet();
            let r = find_release(&fleet, env.as_str(), sequence)?;
            let state = r.row.state;
            let allowed = if pause {
                state.offers()
            } else {
                matches!(state, RolloutState::Paused | RolloutState::Halted)
            };
            if !allowed {
                return Err(Failure::new(
                    FailureKind::Conflict,
                    "bad_state",
                    format!(
                        "release {env}/{sequence} is {state}; cannot {}",
                        if pause { "pause it" } else { "resume it" }
                    ),
                ));
            }
            let (to, reason) = if pause {
                (RolloutState::Paused, Some(format!("paused by {}", actor.name)))
            } else {
                (RolloutState::Rolling, None)
            };
            let m = Mutation::MoveRollout {
                environment: env.clone(),
                sequence,
                from: r.at(),
                to: RolloutAt { state: to, stage: r.row.stage },
                reason,
            };
            (r.row.board.clone(), m)
        };
        let action = if pause { AuditAction::ReleasePause } else { AuditAction::ReleaseResume };
        match self
            .journal
            .commit(vec![m, audit(actor, action, format!("{env}/{sequence}"), json!({}))])
            .await
        {
            Ok(()) => {}
            Err(CommitError::Conflict(Conflict::Moved { .. })) => {
                return Err(Failure::conflict(
                    "bad_state",
                    format!(
                        "release {env}/{sequence} changed meanwhile (another request or the rollout itself moved it); read it again"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        if !pause {
            self.reevaluate(env.as_str(), board.as_str()).await;
        }
        self.release(env.as_str(), sequence)
    }
}
