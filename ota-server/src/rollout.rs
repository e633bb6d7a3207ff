//! The rollout engine: which devices a release is offered to, and when it advances, completes
//! or halts. Plain functions over device states, so every rule is testable without a server.
//!
//! - A device's bucket is a stable hash of its id, 0..10000. Stage `k` of stages `[5, 25, 100]`
//!   holds the `ceil(stages[k] % of N)` devices (at least one) with the lowest buckets, of the
//!   N devices of the environment on the release's board: stages are cumulative, never empty
//!   while there are devices, and a device keeps its place as long as the fleet does not grow.
//! - A stage is done when at least `advance_ratio` of its devices that have not failed run the
//!   image confirmed (and it has a device); then the next stage starts, or after the last one
//!   the rollout completes (and is still offered to devices that have not taken it). With no
//!   devices a rollout stays at its first stage: it completes only when devices confirmed it.
//! - When failed devices pass `failure_threshold` of the stage's devices, the rollout halts by
//!   itself: no more offers until someone resumes it.

use ota_proto::{RolloutProgress, RolloutSettings};
use sha2::{Digest, Sha256};

use crate::fleet::Device;
use crate::store::{ImageId, RolloutAt, RolloutState};

/// Buckets per 100 %.
pub const BUCKETS: u16 = 10_000;

/// A device's stable bucket, 0..10000.
pub fn bucket(device_id: &str) -> u16 {
    let digest = Sha256::digest(device_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
}

/// Every stage's bucket bound (devices below it are in) for a fleet with these buckets: one
/// pass over the devices and one over a histogram. Ties at a bound are all in.
pub fn cutoffs(buckets: impl Iterator<Item = u16>, stages: &[u8]) -> Vec<u16> {
    let mut histogram = vec![0u32; usize::from(BUCKETS)];
    let mut n = 0u64;
    for b in buckets {
        histogram[usize::from(b.min(BUCKETS - 1))] += 1;
        n += 1;
    }
    stages
        .iter()
        .map(|&percent| {
            if n == 0 {
                return 0;
            }
            let size = (u64::from(percent.min(100)) * n).div_ceil(100).max(1);
            let mut seen = 0u64;
            for (b, &count) in histogram.iter().enumerate() {
                seen += u64::from(count);
                if seen >= size {
                    return b as u16 + 1;
                }
            }
            BUCKETS
        })
        .collect()
}

/// Where a rollout goes next, and why if it stops.
#[derive(Clone, PartialEq, Debug)]
pub struct Next {
    /// Its new place.
    pub at: RolloutAt,
    /// Why it halted.
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
        } else if d.failed(image) {
            p.failed += 1;
        }
    }
    p.failure_ratio = if p.in_stage == 0 { 0.0 } else { p.failed as f64 / p.in_stage as f64 };
    p
}

/// Whether a device in bucket `bucket` is offered a release at `at`, given the stages' bucket
/// bounds.
pub fn offered(at: RolloutAt, cutoffs: &[u16], bucket: u16) -> bool {
    let stage = (at.stage as usize).min(cutoffs.len().saturating_sub(1));
    at.state.offers() && bucket < cutoffs.get(stage).copied().unwrap_or(0)
}

/// The next place of a rollout now at `now`, given its devices and their stage bounds (from
/// [`cutoffs`]), or `None` if it stays.
pub fn evaluate<'a>(
    settings: &RolloutSettings,
    now: RolloutAt,
    image: ImageId,
    devices: impl Iterator<Item = &'a Device> + Clone,
    bounds: &[u16],
) -> Option<Next> {
    if !now.state.offers() {
        return None;
    }
    let stages = &settings.stages;
    // The stages may have been shortened since the rollout reached its stage.
    let mut at =
        RolloutAt { state: now.state, stage: now.stage.min(stages.len().saturating_sub(1) as u32) };
    let mut reason = None;
    loop {
        let stage = at.stage as usize;
        let cutoff = bounds.get(stage).copied().unwrap_or(0);
        let p = count(devices.clone(), image, cutoff);
        if p.in_stage > 0 && p.failure_ratio > settings.failure_threshold {
            at.state = RolloutState::Halted;
            reason = Some(format!(
                "{} of {} devices in stage {} ({}%) reverted or refused the image: {:.1}% is \
                 above the failure threshold of {:.1}%",
                p.failed,
                p.in_stage,
                stage + 1,
                stages.get(stage).copied().unwrap_or(100),
                100.0 * p.failure_ratio,
                100.0 * settings.failure_threshold
            ));
            break;
        }
        if at.state == RolloutState::Completed || p.in_stage == 0 {
            break;
        }
        let candidates = p.in_stage - p.failed;
        let needed = (settings.advance_ratio * candidates as f64).ceil() as u64;
        if p.confirmed < needed {
            break;
        }
        if stage + 1 < stages.len() {
            at.stage += 1;
        } else {
            at.state = RolloutState::Completed;
        }
    }
    (at != now).then_some(Next { at, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BoardName, DeviceId, DeviceRow, EnvironmentName, Timestamp};

    const IMAGE: ImageId = ImageId([7; 32]);

    fn device(n: usize) -> Device {
        Device::from_row(DeviceRow::enrolled(
            DeviceId::new(format!("dev-{n}")).unwrap(),
            BoardName::new("microbit").unwrap(),
            EnvironmentName::new("prod").unwrap(),
            [0; 32],
            Timestamp(0),
        ))
    }

    fn confirm(d: &mut Device) {
        d.row.reported.running = Some(IMAGE);
        d.row.reported.confirmed = true;
    }

    fn settings(stages: &[u8], failure_threshold: f64, advance_ratio: f64) -> RolloutSettings {
        RolloutSettings {
            stages: stages.to_vec(),
            failure_threshold,
            advance_ratio,
            promote_min_confirmed: 1,
        }
    }

    fn eval(settings: &RolloutSettings, now: RolloutAt, devices: &[Device]) -> Option<RolloutAt> {
        let bounds = cutoffs(devices.iter().map(|d| d.bucket), &settings.stages);
        evaluate(settings, now, IMAGE, devices.iter(), &bounds).map(|n| n.at)
    }

    fn at(state: RolloutState, stage: u32) -> RolloutAt {
        RolloutAt { state, stage }
    }

    fn rolling(stage: u32) -> RolloutAt {
        at(RolloutState::Rolling, stage)
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("dev-1"), bucket("dev-1"));
        let in_5 = (0..10_000).filter(|n| bucket(&format!("dev-{n}")) < 500).count();
        assert!((400..600).contains(&in_5), "{in_5} of 10000 in the 5% stage");
    }

    #[test]
    fn stage_advances_only_when_its_devices_confirmed() {
        let s = settings(&[5, 25, 100], 0.2, 1.0);
        let mut devices: Vec<Device> = (0..1000).map(device).collect();
        let first = cutoffs(devices.iter().map(|d| d.bucket), &s.stages)[0];
        assert_eq!(devices.iter().filter(|d| d.bucket < first).count(), 50);
        assert_eq!(eval(&s, rolling(0), &devices), None);
        // All but one device of stage 1 confirmed: stays.
        let stage1: Vec<usize> = (0..1000).filter(|&i| devices[i].bucket < first).collect();
        for &i in &stage1[1..] {
            confirm(&mut devices[i]);
        }
        assert_eq!(eval(&s, rolling(0), &devices), None);
        confirm(&mut devices[stage1[0]]);
        assert_eq!(eval(&s, rolling(0), &devices), Some(rolling(1)));
        // Everyone confirmed: straight through to completed.
        devices.iter_mut().for_each(confirm);
        let done = eval(&s, rolling(0), &devices).unwrap();
        assert_eq!(done, at(RolloutState::Completed, 2));
        assert_eq!(eval(&s, done, &devices), None);
    }

    #[test]
    fn halts_when_failures_pass_the_threshold() {
        let mut devices: Vec<Device> = (0..100).map(device).collect();
        let all = settings(&[100], 0.2, 0.9);
        for d in devices.iter_mut().take(20) {
            d.row.failed_image = Some(IMAGE);
        }
        // 20% is not above 20%.
        assert_eq!(eval(&all, rolling(0), &devices), None);
        devices[20].row.failed_image = Some(IMAGE);
        let bounds = cutoffs(devices.iter().map(|d| d.bucket), &all.stages);
        let halted = evaluate(&all, rolling(0), IMAGE, devices.iter(), &bounds).unwrap();
        assert_eq!(halted.at.state, RolloutState::Halted);
        assert!(halted.reason.unwrap().contains("21 of 100 devices"));
        // A halted rollout stays halted and offers nothing.
        let stopped = at(RolloutState::Halted, 0);
        assert_eq!(eval(&all, stopped, &devices), None);
        assert!(!offered(stopped, &[10_000], 0));
        assert!(offered(rolling(0), &[10_000], 9_999));
    }

    #[test]
    fn failed_devices_do_not_block_advancing() {
        let mut devices: Vec<Device> = (0..100).map(device).collect();
        let all = settings(&[100], 0.2, 1.0);
        for (i, d) in devices.iter_mut().enumerate() {
            if i < 10 { d.row.failed_image = Some(IMAGE) } else { confirm(d) }
        }
        assert_eq!(eval(&all, rolling(0), &devices).unwrap().state, RolloutState::Completed);
    }

    #[test]
    fn stages_are_never_empty_and_nothing_completes_without_devices() {
        let all = settings(&[1, 100], 0.2, 1.0);
        assert_eq!(eval(&all, rolling(0), &[]), None);
        // Ten devices: 1 % of them is still one device.
        let mut devices: Vec<Device> = (0..10).map(device).collect();
        let bounds = cutoffs(devices.iter().map(|d| d.bucket), &all.stages);
        assert_eq!(devices.iter().filter(|d| d.bucket < bounds[0]).count(), 1);
        assert_eq!(devices.iter().filter(|d| d.bucket < bounds[1]).count(), 10);
        assert_eq!(eval(&all, rolling(0), &devices), None);
        let first = devices.iter().position(|d| d.bucket < bounds[0]).unwrap();
        confirm(&mut devices[first]);
        assert_eq!(eval(&all, rolling(0), &devices), Some(rolling(1)));
    }

    #[test]
    fn cutoffs_follow_ranks() {
        assert_eq!(cutoffs([7u16, 3, 3, 9000].into_iter(), &[25, 50, 100]), vec![4, 4, 9001]);
        assert_eq!(cutoffs([5u16].into_iter(), &[5, 100]), vec![6, 6]);
        assert_eq!(cutoffs(std::iter::empty(), &[5, 100]), vec![0, 0]);
    }
}
