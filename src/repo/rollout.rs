//! The `rollout:` section of fleet.yaml (fleet-wide, or per rule): the plan a new revision
//! follows to reach the fleet in waves. Parsing and validation (file and line on every error),
//! and the pure parts of the plan that `check` and the fleet both use: an agent's cohort, its
//! wave, and whether a freeze window covers a moment.

use super::fleet::{parse_selector, FLEET_FILE};
use super::selector::Selector;
use crate::diagnostics::Diagnostic;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// Cohorts run from 0 to `COHORTS - 1`; a wave of p % admits cohorts below p × 100.
pub const COHORTS: u32 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    #[serde(default)]
    canary: Option<Spanned<RawCanary>>,
    #[serde(default)]
    waves: Option<Spanned<Vec<Spanned<f64>>>>,
    #[serde(default)]
    soak: Option<Spanned<Value>>,
    #[serde(default)]
    max_failed: Option<Spanned<Value>>,
    #[serde(default)]
    paused: Option<bool>,
    #[serde(default)]
    freeze: Option<Vec<Spanned<RawFreeze>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    #[serde(rename = "match")]
    selector: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    schedule: Spanned<String>,
    duration: Spanned<String>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
}

/// How many failures halt a rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFailed {
    Count(u64),
    /// A percentage of the admitted agents (at least one failure).
    Percent(f64),
}

impl MaxFailed {
    /// Whether `failed` failures among `admitted` admitted agents halt the rollout.
    pub fn reached(&self, failed: usize, admitted: usize) -> bool {
        match *self {
            MaxFailed::Count(n) => failed as u64 >= n,
            MaxFailed::Percent(p) => failed > 0 && failed as f64 * 100.0 >= p * admitted as f64,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MaxFailed::Count(n) => n.to_string(),
            MaxFailed::Percent(p) => format!("{p}%"),
        }
    }
}

/// A window, starting at each occurrence of a cron schedule in a time zone, in which no wave
/// is admitted.
#[derive(Debug, Clone)]
pub struct FreezeWindow {
    pub schedule: String,
    cron: croner::Cron,
    pub duration: Duration,
    pub time_zone: chrono_tz::Tz,
}

impl FreezeWindow {
    /// Whether `now` falls inside a window `[start, start + duration)`: the first occurrence after
    /// `now - duration`
    /// is not later than `now`.
    pub fn covers(&self, now: DateTime<Utc>) -> bool {
        let Ok(span) = chrono::Duration::from_std(self.duration) else {
            return true;
        };
        let start = (now - span).with_timezone(&self.time_zone);
        self.cron
            .find_next_occurrence(&start, false)
            .is_ok_and(|at| at.with_timezone(&Utc) <= now)
    }
}

#[derive(Debug, Clone)]
pub struct RolloutSpec {
    /// Wave 0, ahead of every cohort.
    pub canary: Option<Selector>,
    /// Waves 1..n: cumulative thresholds in hundredths of a percent (cohort < threshold).
    pub waves: Vec<u32>,
    pub soak: Duration,
    pub max_failed: MaxFailed,
    pub paused: bool,
    pub freeze: Vec<FreezeWindow>,
}

impl RolloutSpec {
    /// Waves including the canary slot (index 0), which is empty without a canary.
    pub fn wave_count(&self) -> usize {
        self.waves.len() + 1
    }

    /// The wave an agent belongs to: 0 for the canary, else the first wave whose threshold is
    /// above its cohort.
    pub fn wave_of(&self, cohort: u32, attributes: &BTreeMap<String, String>) -> usize {
        if self.canary.as_ref().is_some_and(|c| c.matches(attributes)) {
            return 0;
        }
        self.waves
            .iter()
            .position(|&threshold| cohort < threshold)
            .map_or(self.waves.len(), |i| i + 1)
    }

    /// "canary" or "25 %": what wave `index` admits.
    pub fn wave_label(&self, index: usize) -> String {
        match index {
            0 => "canary".into(),
            i => match self.waves.get(i - 1) {
                Some(bp) => format!("{} %", *bp as f64 / 100.0),
                None => "?".into(),
            },
        }
    }

    pub fn frozen_at(&self, now: DateTime<Utc>) -> bool {
        self.freeze.iter().any(|w| w.covers(now))
    }
}

/// `u64be(sha256(uid16)[0..8]) mod 10000`: the same on every replica and in every rollout.
pub fn cohort(uid16: &[u8; 16]) -> u32 {
    let digest = Sha256::digest(uid16);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) % COHORTS as u64) as u32
}

/// Validates a parsed `rollout:` section; `rule` names the rule that carries it, if any.
pub(super) fn parse(
    raw: Spanned<RawRollout>,
    rule: Option<&str>,
) -> Result<RolloutSpec, Vec<Diagnostic>> {
    let raw = raw.value;
    let mut errors = Vec::new();
    let error = |message: String, line: usize| {
        let d = Diagnostic::error(message)
            .in_file(FLEET_FILE)
            .at(Some(line), None);
        match rule {
            Some(r) => d.for_rule(r),
            None => d,
        }
    };

    let canary = match raw.canary {
        None => None,
        Some(c) => match parse_selector(c.value.selector) {
            Ok(s) => Some(s),
            Err(message) => {
                errors.push(error(
                    format!("rollout canary: {message}"),
                    c.referenced.line() as usize,
                ));
                None
            }
        },
    };

    let waves = match raw.waves {
        None => vec![COHORTS],
        Some(w) => {
            let line = w.referenced.line() as usize;
            let mut out = Vec::new();
            let mut problem = None;
            for p in &w.value {
                let at = (p.referenced.line() as usize).max(line);
                let percent = p.value;
                if !(percent > 0.0 && percent <= 100.0) {
                    problem = Some((
                        format!("rollout wave {percent} is not a percentage in (0, 100]"),
                        at,
                    ));
                    break;
                }
                let bp = (percent * 100.0).round() as u32;
                if out.last().is_some_and(|&prev| bp <= prev) {
                    problem = Some((
                        format!(
                            "rollout waves must ascend: {percent} does not follow {}",
                            *out.last().unwrap_or(&0) as f64 / 100.0
                        ),
                        at,
                    ));
                    break;
                }
                out.push(bp);
            }
            if problem.is_none() && out.last() != Some(&COHORTS) {
                problem = Some((
                    "rollout waves must end at 100 (the last wave admits every agent)".into(),
                    line,
                ));
            }
            match problem {
                Some((message, at)) => {
                    errors.push(error(message, at));
                    Vec::new()
                }
                None => out,
            }
        }
    };

    let soak = match raw.soak {
        None => Duration::ZERO,
        Some(s) => match duration_value(&s.value) {
            Ok(d) => d,
            Err(message) => {
                errors.push(error(
                    format!("rollout soak: {message}"),
                    s.referenced.line() as usize,
                ));
                Duration::ZERO
            }
        },
    };

    let max_failed = match raw.max_failed {
        None => MaxFailed::Count(1),
        Some(m) => match max_failed_value(&m.value) {
            Ok(v) => v,
            Err(message) => {
                errors.push(error(
                    format!("rollout max_failed: {message}"),
                    m.referenced.line() as usize,
                ));
                MaxFailed::Count(1)
            }
        },
    };

    let mut freeze = Vec::new();
    for window in raw.freeze.unwrap_or_default() {
        let w = window.value;
        let cron = match w.schedule.value.parse::<croner::Cron>() {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(error(
                    format!(
                        "rollout freeze schedule `{}` is not a cron expression: {e}",
                        w.schedule.value
                    ),
                    w.schedule.referenced.line() as usize,
                ));
                None
            }
        };
        let duration = match humantime::parse_duration(w.duration.value.trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                errors.push(error(
                    "rollout freeze duration must be longer than 0s".into(),
                    w.duration.referenced.line() as usize,
                ));
                None
            }
            Err(e) => {
                errors.push(error(
                    format!(
                        "rollout freeze duration `{}` is not a duration such as 62h: {e}",
                        w.duration.value
                    ),
                    w.duration.referenced.line() as usize,
                ));
                None
            }
        };
        let time_zone = match &w.time_zone {
            None => Some(chrono_tz::UTC),
            Some(tz) => match tz.value.parse::<chrono_tz::Tz>() {
                Ok(z) => Some(z),
                Err(_) => {
                    errors.push(error(
                        format!(
                            "rollout freeze time_zone `{}` is not an IANA time zone (such as Europe/Berlin)",
                            tz.value
                        ),
                        tz.referenced.line() as usize,
                    ));
                    None
                }
            },
        };
        if let (Some(cron), Some(duration), Some(time_zone)) = (cron, duration, time_zone) {
            freeze.push(FreezeWindow {
                schedule: w.schedule.value,
                cron,
                duration,
                time_zone,
            });
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RolloutSpec {
        canary,
        waves,
        soak,
        max_failed,
        paused: raw.paused.unwrap_or(false),
        freeze,
    })
}

fn duration_value(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(s) if s >= 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(format!(
                "{n} is negative: a soak is a duration of 0s or more"
            )),
        },
        Value::String(s) if s.trim_start().starts_with('-') => Err(format!(
            "`{s}` is negative: a soak is a duration of 0s or more"
        )),
        Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("`{s}` is not a duration such as 60s: {e}")),
        other => Err(format!("{other} is not a duration such as 60s")),
    }
}

fn max_failed_value(value: &Value) -> Result<MaxFailed, String> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(count) if count >= 1 => Ok(MaxFailed::Count(count)),
            _ => Err(format!(
                "{n} is not a count of at least 1 (or a percentage such as \"5%\")"
            )),
        },
        Value::String(s) => {
            let text = s.trim();
            if let Some(p) = text.strip_suffix('%') {
                match p.trim().parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Ok(MaxFailed::Percent(p)),
                    _ => Err(format!("`{s}` is not a percentage in (0%, 100%]")),
                }
            } else {
                text.parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .map(MaxFailed::Count)
                    .ok_or_else(|| {
                        format!("`{s}` is not a count of at least 1 or a percentage such as \"5%\"")
                    })
            }
        }
        other => Err(format!(
            "{other} is not a count or a percentage such as \"5%\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::fleet::FleetSpec;
    use chrono::TimeZone;

    const RULES: &str = "rules:\n  - name: all\n    match: {}\n    template: t.j2\n";

    fn spec(rollout: &str) -> Result<FleetSpec, Vec<Diagnostic>> {
        FleetSpec::parse(&format!("{RULES}rollout:\n{rollout}"))
    }

    fn errors(rollout: &str) -> Vec<Diagnostic> {
        spec(rollout).expect_err("should not parse")
    }

    #[test]
    fn a_full_section_parses() {
        let fleet = spec(
            "  canary: { match: { environment: staging } }\n  waves: [5, 25, 100]\n  soak: 60s\n  max_failed: \"5%\"\n  paused: true\n  freeze:\n    - { schedule: \"0 18 * * 5\", duration: 62h, time_zone: Europe/Berlin }\n",
        )
        .unwrap();
        let r = fleet.rollout.unwrap();
        assert_eq!(r.waves, vec![500, 2500, 10_000]);
        assert_eq!(r.soak, Duration::from_secs(60));
        assert_eq!(r.max_failed, MaxFailed::Percent(5.0));
        assert!(r.paused);
        assert_eq!(r.freeze.len(), 1);
        assert_eq!(r.wave_label(2), "25 %");
    }

    #[test]
    fn waves_that_do_not_ascend_or_end_at_100_are_errors_at_their_line() {
        let e = errors("  waves: [5, 5, 100]\n");
        assert_eq!(e[0].line, Some(6), "{e:?}");
        assert!(e[0].message.contains("ascend"), "{e:?}");
        let e = errors("  waves: [5, 25]\n");
        assert!(e[0].message.contains("end at 100"), "{e:?}");
        let e = errors("  waves: [0, 100]\n");
        assert!(e[0].message.contains("percentage"), "{e:?}");
    }

    #[test]
    fn a_negative_soak_and_unknown_keys_are_errors() {
        let e = errors("  waves: [100]\n  soak: -5s\n");
        assert_eq!(e[0].line, Some(7), "{e:?}");
        assert!(e[0].message.contains("negative"), "{e:?}");
        let e = errors("  wavez: [100]\n");
        assert_eq!(e[0].line, Some(6), "{e:?}");
        assert!(e[0].message.contains("wavez"), "{e:?}");
    }

    #[test]
    fn bad_cron_zone_and_max_failed_are_errors_at_their_line() {
        let e = errors("  freeze:\n    - schedule: \"61 * * * *\"\n      duration: 1h\n");
        assert_eq!(e[0].line, Some(7), "{e:?}");
        assert!(e[0].message.contains("cron"), "{e:?}");
        let e = errors(
            "  freeze:\n    - schedule: \"0 18 * * 5\"\n      duration: 1h\n      time_zone: Mars/Olympus\n",
        );
        assert_eq!(e[0].line, Some(9), "{e:?}");
        assert!(e[0].message.contains("time zone"), "{e:?}");
        let e = errors("  max_failed: 0\n");
        assert!(e[0].message.contains("max_failed"), "{e:?}");
        let e = errors("  max_failed: \"150%\"\n");
        assert!(e[0].message.contains("percentage"), "{e:?}");
    }

    #[test]
    fn a_rule_carries_its_own_rollout() {
        let fleet = FleetSpec::parse(
            "rules:\n  - name: gw\n    match: {}\n    template: t.j2\n    rollout: { waves: [50, 100], max_failed: 2 }\n",
        )
        .unwrap();
        assert!(fleet.rollout.is_none());
        let r = fleet.rules[0].rollout.as_ref().unwrap();
        assert_eq!(r.waves, vec![5000, 10_000]);
        assert_eq!(r.max_failed, MaxFailed::Count(2));
    }

    #[test]
    fn cohorts_follow_the_contract_formula() {
        let uid = [0u8; 16];
        let digest = Sha256::digest(uid);
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
        assert_eq!(cohort(&uid) as u64, expected);
        // Spread: over many uids every wave gets roughly its share.
        let below_25 = (0u32..4000)
            .filter(|i| {
                let mut u = [0u8; 16];
                u[..4].copy_from_slice(&i.to_be_bytes());
                cohort(&u) < 2500
            })
            .count();
        assert!((800..1200).contains(&below_25), "{below_25}");
    }

    #[test]
    fn canary_first_then_cohort_thresholds() {
        let fleet = spec("  canary: { match: { env: staging } }\n  waves: [5, 25, 100]\n").unwrap();
        let r = fleet.rollout.unwrap();
        let staging = BTreeMap::from([("env".to_string(), "staging".to_string())]);
        let none = BTreeMap::new();
        assert_eq!(r.wave_of(9999, &staging), 0);
        assert_eq!(r.wave_of(0, &none), 1);
        assert_eq!(r.wave_of(499, &none), 1);
        assert_eq!(r.wave_of(500, &none), 2);
        assert_eq!(r.wave_of(2500, &none), 3);
        assert_eq!(r.wave_of(9999, &none), 3);
    }

    #[test]
    fn max_failed_counts_and_percentages() {
        assert!(!MaxFailed::Count(2).reached(1, 10));
        assert!(MaxFailed::Count(2).reached(2, 10));
        assert!(!MaxFailed::Percent(10.0).reached(0, 0));
        assert!(!MaxFailed::Percent(10.0).reached(1, 20));
        assert!(MaxFailed::Percent(10.0).reached(2, 20));
        assert!(MaxFailed::Percent(10.0).reached(1, 5));
    }

    #[test]
    fn freeze_windows_cover_their_span_in_their_zone() {
        let fleet = spec(
            "  freeze:\n    - { schedule: \"0 18 * * 5\", duration: 62h, time_zone: Europe/Berlin }\n",
        )
        .unwrap();
        let r = fleet.rollout.unwrap();
        // Friday 2026-12-04 18:00 in Berlin is 17:00 UTC (winter time).
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
        assert!(!r.frozen_at(at(4, 16, 59)));
        assert!(r.frozen_at(at(4, 17, 0)));
        assert!(r.frozen_at(at(6, 12, 0)));
        // 62 h after Friday 17:00 UTC is Monday 07:00 UTC.
        assert!(r.frozen_at(at(7, 6, 59)));
        assert!(!r.frozen_at(at(7, 7, 0)));
    }
}
