//! Environments (dev → test → prod) and their rollout settings.

use serde::{Deserialize, Serialize};

use crate::{EnvironmentName, KeyId, PublicKey, ReleaseInfo};

/// How an environment rolls a release out and what it takes from upstream: the one definition,
/// used to create an environment, to change one, to show one and to decide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSettings {
    /// Cumulative percentages of the environment's devices per stage, increasing, ending at
    /// 100 (default `[100]`: everyone at once).
    #[serde(default = "RolloutSettings::default_stages")]
    pub stages: Vec<u8>,
    /// Failed share of a stage, in [0, 1], above which a rollout halts by itself (default 0.2).
    #[serde(default = "RolloutSettings::default_failure_threshold")]
    pub failure_threshold: f64,
    /// Share, in (0, 1], of a stage's devices (failures aside) that must confirm before the
    /// next stage starts (default 0.9).
    #[serde(default = "RolloutSettings::default_advance_ratio")]
    pub advance_ratio: f64,
    /// Devices of the upstream environment that must have confirmed an image before it may
    /// enter this one (default 1; without an upstream it has no effect).
    #[serde(default = "RolloutSettings::default_promote_min_confirmed")]
    pub promote_min_confirmed: u32,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            stages: Self::default_stages(),
            failure_threshold: Self::default_failure_threshold(),
            advance_ratio: Self::default_advance_ratio(),
            promote_min_confirmed: Self::default_promote_min_confirmed(),
        }
    }
}

impl RolloutSettings {
    fn default_stages() -> Vec<u8> {
        vec![100]
    }
    fn default_failure_threshold() -> f64 {
        0.2
    }
    fn default_advance_ratio() -> f64 {
        0.9
    }
    fn default_promote_min_confirmed() -> u32 {
        1
    }

    /// Checks the settings; the message says which one is wrong and what it must be.
    pub fn check(&self) -> Result<(), String> {
        let stages = &self.stages;
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
        let ratio = |name: &str, value: f64, allow_zero: bool| {
            let ok =
                value.is_finite() && value <= 1.0 && (value > 0.0 || (allow_zero && value == 0.0));
            let range = if allow_zero { "[0, 1]" } else { "(0, 1]" };
            if ok { Ok(()) } else { Err(format!("{name} must be a ratio in {range}, got {value}")) }
        };
        ratio("failure_threshold", self.failure_threshold, true)?;
        ratio("advance_ratio", self.advance_ratio, false)
    }
}

/// A new environment (`POST /environments`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// Its name.
    pub name: EnvironmentName,
    /// Where an image must be confirmed before it may enter this environment.
    #[serde(default)]
    pub upstream: Option<EnvironmentName>,
    /// Rollout settings (each field has a default).
    #[serde(default)]
    pub rollout: RolloutSettings,
    /// The release public key. Absent: the server makes a key pair and holds it (so CI can
    /// release there without an offline signature).
    #[serde(default)]
    pub release_public_key: Option<PublicKey>,
}

/// An environment and what it currently runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    /// Its name.
    pub name: EnvironmentName,
    /// Upstream environment, if any.
    pub upstream: Option<EnvironmentName>,
    /// Rollout settings.
    pub rollout: RolloutSettings,
    /// The release public key.
    pub release_public_key: PublicKey,
    /// Its key id (as in signed statements).
    pub release_key_id: KeyId,
    /// Whether the server holds the private key (releases need no statement then).
    pub server_holds_key: bool,
    /// The sequence number the next release statement must carry.
    pub next_sequence: u64,
    /// Devices enrolled.
    pub devices: u64,
    /// The current release per board, with rollout progress.
    pub current: Vec<ReleaseInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_field_by_field_and_are_checked() {
        let s: RolloutSettings = serde_json::from_str(r#"{"stages": [5, 100]}"#).unwrap();
        assert_eq!(s, RolloutSettings { stages: vec![5, 100], ..RolloutSettings::default() });
        assert!(s.check().is_ok());
        let bad = |json: &str| serde_json::from_str::<RolloutSettings>(json).unwrap().check();
        assert!(bad(r#"{"stages": [50, 25, 100]}"#).unwrap_err().contains("increase"));
        assert!(bad(r#"{"stages": [5, 50]}"#).unwrap_err().contains("end at 100"));
        assert!(bad(r#"{"stages": []}"#).is_err());
        assert!(bad(r#"{"stages": [0, 100]}"#).is_err());
        assert!(bad(r#"{"failure_threshold": 1.5}"#).unwrap_err().contains("[0, 1]"));
        assert!(bad(r#"{"advance_ratio": 0}"#).unwrap_err().contains("(0, 1]"));
        assert!(serde_json::from_str::<RolloutSettings>(r#"{"stage": [100]}"#).is_err());
    }
}
