//! The rollout engine: which devices a release is offered to, and when it advances, completes
//! or halts. Plain functions over device states, so every rule is testable without a server.
//!
//! - A device's bucket is a stable hash of its id, 0..10000; stage `k` of stages `[5, 25, 100]`
//!   holds the devices with a bucket below `stages[k] * 100` (so stages are cumulative and a
//!   device never leaves a stage it was in).
//! - A stage is done when at least `advance_ratio` of its devices that have not failed run the
//!   image confirmed; then the next stage starts, or after the last one the rollout completes
//!   (and is still offered to devices that have not taken it).
//! - When failed devices pass `failure_threshold` of the stage's devices, the rollout halts by
//!   itself: no more offers until someone resumes it.

use firmware::image::ImageId;
use sha2::{Digest, Sha256};

use crate::api::{RolloutProgress, RolloutState};
use crate::fleet::Device;

/// Buckets per 100 %.
pub const BUCKETS: u16 = 10_000;

/// A device's stable bucket, 0..10000.
pub fn bucket(device_id: &str) -> u16 {
    let digest = Sha256::digest(device_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
}

/// The bucket bound of stage `stage`: devices below it are in.
pub fn cutoff(stages: &[u8], stage: usize) -> u16 {
    let percent = stages.get(stage).or(stages.last()).copied().unwrap_or(100).min(100);
    u16::from(percent) * (BUCKETS / 100)
}

/// Checks stage percentages: 1 to 8 stages, increasing, each 1..=100, the last 100.
pub fn check_stages(stages: &[u8]) -> Result<(), String> {
    if stages.is_empty() || stages.len() > 8 {
        return Err(format!("stages must list 1 to 8 percentages, got {}", stages.len()));
    }
    if stages.iter().any(|&p| p == 0 || p > 100) {
        return Err(format!("stages {stages:?}: each must be 1 to 100 (percent)"));
    }
    if stages.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("stages {stages:?} must increase (they are cumulative)"));
    }
    if stages.last() != Some(&100) {
        return Err(format!("stages {stages:?} must end at 100"));
    }
    Ok(())
}

/// An environment's rollout settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    /// Cumulative percentages.
    pub stages: &'a [u8],
    /// Failed share of a stage above which the rollout halts.
    pub failure_threshold: f64,
    /// Share of a stage's non-failed devices that must confirm to advance.
    pub advance_ratio: f64,
}

/// Where a rollout stands.
#[derive(Clone, PartialEq, Debug)]
pub struct Position {
    /// State.
    pub state: RolloutState,
    /// Stage index.
    pub stage: usize,
    /// Why it stopped, if it did.
    pub reason: Option<String>,
}

/// Counts the devices of a stage (bucket below `cutoff`) for `image`.
pub fn count<'a>(
    devices: impl Iterator<Item = &'a Device>,
    image: ImageId,
    cutoff: u16,
) -> RolloutProgress {
    let mut p = RolloutProgress::default();
    for d in devices {
        p.devices += 1;
        if d.bucket >= cutoff {
            continue;
        }
        p.in_stage += 1;
        if d.confirmed(image) {
            p.confirmed += 1;
        } else if d.failed == Some(image) {
            p.failed += 1;
        }
    }
    p.failure_ratio = if p.in_stage == 0 { 0.0 } else { p.failed as f64 / p.in_stage as f64 };
    p
}

/// Whether a device in bucket `bucket` is offered a release at `position`.
pub fn offered(settings: &Settings<'_>, position: &Position, bucket: u16) -> bool {
    matches!(position.state, RolloutState::Rolling | RolloutState::Completed)
        && bucket < cutoff(settings.stages, position.stage)
}

/// The next position of a rollout given its devices, or `None` if it stays.
pub fn evaluate<'a>(
    settings: &Settings<'_>,
    now: &Position,
    image: ImageId,
    devices: impl Iterator<Item = &'a Device> + Clone,
) -> Option<Position> {
    if !matches!(now.state, RolloutState::Rolling | RolloutState::Completed) {
        return None;
    }
    let mut next = now.clone();
    loop {
        let p = count(devices.clone(), image, cutoff(settings.stages, next.stage));
        if p.in_stage > 0 && p.failure_ratio > settings.failure_threshold {
            next.state = RolloutState::Halted;
            next.reason = Some(format!(
                "{} of {} devices in stage {} ({}%) reverted or refused the image: {:.1}% is \
                 above the failure threshold of {:.1}%",
                p.failed,
                p.in_stage,
                next.stage + 1,
                settings.stages.get(next.stage).copied().unwrap_or(100),
                100.0 * p.failure_ratio,
                100.0 * settings.failure_threshold
            ));
            break;
        }
        if next.state == RolloutState::Completed {
            break;
        }
        let candidates = p.in_stage - p.failed;
        let needed = (settings.advance_ratio * candidates as f64).ceil() as u64;
        if p.confirmed < needed {
            break;
        }
        if next.stage + 1 < settings.stages.len() {
            next.stage += 1;
        } else {
            next.state = RolloutState::Completed;
        }
    }
    (next != *now).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeviceRow;

    const IMAGE: ImageId = ImageId([7; 32]);

    fn device(n: usize) -> Device {
        Device::from_row(DeviceRow {
            id: format!("dev-{n}"),
            board: "microbit".into(),
            environment: "prod".into(),
            token_hash: [0; 32],
            enrolled_at: 0,
            last_seen: None,
            running: None,
            confirmed: false,
            failed_image: None,
            slot_b: None,
            last_outcome: None,
            release_sequence: None,
        })
    }

    fn confirm(d: &mut Device) {
        d.running = Some(IMAGE);
        d.row.confirmed = true;
    }

    const SETTINGS: Settings<'static> =
        Settings { stages: &[5, 25, 100], failure_threshold: 0.2, advance_ratio: 1.0 };

    fn rolling(stage: usize) -> Position {
        Position { state: RolloutState::Rolling, stage, reason: None }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("dev-1"), bucket("dev-1"));
        let in_5 = (0..10_000).filter(|n| bucket(&format!("dev-{n}")) < 500).count();
        assert!((400..600).contains(&in_5), "{in_5} of 10000 in the 5% stage");
    }

    #[test]
    fn stage_advances_only_when_its_devices_confirmed() {
        let mut devices: Vec<Device> = (0..1000).map(device).collect();
        let first = cutoff(SETTINGS.stages, 0);
        assert_eq!(evaluate(&SETTINGS, &rolling(0), IMAGE, devices.iter()), None);
        // All but one device of stage 1 confirmed: stays.
        let stage1: Vec<usize> = (0..1000).filter(|&i| devices[i].bucket < first).collect();
        for &i in &stage1[1..] {
            confirm(&mut devices[i]);
        }
        assert_eq!(evaluate(&SETTINGS, &rolling(0), IMAGE, devices.iter()), None);
        confirm(&mut devices[stage1[0]]);
        let next = evaluate(&SETTINGS, &rolling(0), IMAGE, devices.iter()).unwrap();
        assert_eq!(next, rolling(1));
        // Everyone confirmed: straight through to completed.
        devices.iter_mut().for_each(confirm);
        let done = evaluate(&SETTINGS, &rolling(0), IMAGE, devices.iter()).unwrap();
        assert_eq!((done.state, done.stage), (RolloutState::Completed, 2));
        assert_eq!(evaluate(&SETTINGS, &done, IMAGE, devices.iter()), None);
    }

    #[test]
    fn halts_when_failures_pass_the_threshold() {
        let mut devices: Vec<Device> = (0..100).map(device).collect();
        let all = Settings { stages: &[100], failure_threshold: 0.2, advance_ratio: 0.9 };
        for d in devices.iter_mut().take(20) {
            d.failed = Some(IMAGE);
        }
        // 20% is not above 20%.
        assert_eq!(evaluate(&all, &rolling(0), IMAGE, devices.iter()), None);
        devices[20].failed = Some(IMAGE);
        let halted = evaluate(&all, &rolling(0), IMAGE, devices.iter()).unwrap();
        assert_eq!(halted.state, RolloutState::Halted);
        assert!(halted.reason.unwrap().contains("21 of 100 devices"));
        // A halted rollout stays halted and offers nothing.
        let stopped = Position { state: RolloutState::Halted, stage: 0, reason: None };
        assert_eq!(evaluate(&all, &stopped, IMAGE, devices.iter()), None);
        assert!(!offered(&all, &stopped, 0));
        assert!(offered(&all, &rolling(0), 9_999));
    }

    #[test]
    fn failed_devices_do_not_block_advancing() {
        let mut devices: Vec<Device> = (0..100).map(device).collect();
        let all = Settings { stages: &[100], failure_threshold: 0.2, advance_ratio: 1.0 };
        for (i, d) in devices.iter_mut().enumerate() {
            if i < 10 { d.failed = Some(IMAGE) } else { confirm(d) }
        }
        let next = evaluate(&all, &rolling(0), IMAGE, devices.iter()).unwrap();
        assert_eq!(next.state, RolloutState::Completed);
    }

    #[test]
    fn empty_stages_pass_through() {
        let all = Settings { stages: &[1, 100], failure_threshold: 0.2, advance_ratio: 1.0 };
        let next = evaluate(&all, &rolling(0), IMAGE, std::iter::empty()).unwrap();
        assert_eq!(next.state, RolloutState::Completed);
    }

    #[test]
    fn stage_lists_are_checked() {
        assert!(check_stages(&[5, 25, 100]).is_ok());
        assert!(check_stages(&[]).is_err());
        assert!(check_stages(&[50, 25, 100]).unwrap_err().contains("increase"));
        assert!(check_stages(&[5, 50]).unwrap_err().contains("end at 100"));
        assert!(check_stages(&[0, 100]).is_err());
    }
}
