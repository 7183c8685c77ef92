//! A run line's per-step cache hits (`steps` and `step_progress`), as a hook sends them to
//! the collector with the run: what `wrap` read from the build's progress output. The line
//! comes from a hook, so it is hostile: at most [`STEPS`] steps, each name and record id
//! within [`NAME_BYTES`], each digest a digest, ordinals in order.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ingest::progress::{Mode, STEPS, Step, StepHit};
use crate::model::{Digest, limits};

/// One step on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepWire {
    /// Its place in the build, from 0.
    pub ordinal: usize,
    /// The vertex name: `[stage-0 2/4] RUN echo hi`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub cached: bool,
    /// The builder record that served it, where the hook could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl StepWire {
    fn of(ordinal: usize, hit: &StepHit) -> Self {
        Self {
            ordinal,
            name: hit.step.name.clone(),
            digest: hit.step.digest.clone(),
            cached: hit.step.cached,
            record: hit.record.clone(),
        }
    }
}

/// Adds the steps to a run line, as many as keep the line within
/// [`limits::LINE_BYTES`]. Returns how many were left out.
pub fn put(line: &mut Value, mode: Mode, hits: &[StepHit]) -> usize {
    let Some(map) = line.as_object_mut() else {
        return hits.len();
    };
    // The line's bytes so far, plus the two keys and their punctuation.
    let mut bytes = Value::Object(map.clone()).to_string().len() + 48;
    let mut steps = Vec::new();
    for (i, hit) in hits.iter().take(STEPS).enumerate() {
        let step = serde_json::to_value(StepWire::of(i, hit)).unwrap_or(Value::Null);
        bytes += step.to_string().len() + 1;
        if bytes > limits::LINE_BYTES {
            break;
        }
        steps.push(step);
    }
    let left_out = hits.len() - steps.len();
    if !steps.is_empty() {
        map.insert("steps".into(), Value::Array(steps));
        map.insert("step_progress".into(), mode.as_str().into());
    }
    left_out
}

/// Takes the steps out of a run line, checked: `None` when it has none.
pub fn take(line: &mut Map<String, Value>) -> Result<Option<(Mode, Vec<StepHit>)>, String> {
    let steps = line.remove("steps");
    let progress = line.remove("step_progress");
    let Some(steps) = steps else {
        return match progress {
            None => Ok(None),
            Some(_) => Err("`step_progress` without `steps`".to_owned()),
        };
    };
    let Value::Array(steps) = steps else {
        return Err("`steps` is not an array".to_owned());
    };
    if steps.len() > STEPS {
        return Err(format!(
            "`steps` has {} entries, over the limit of {STEPS}",
            steps.len()
        ));
    }
    let mode = match progress.as_ref().and_then(Value::as_str) {
        Some(text) => Mode::of_flag(text)
            .ok_or_else(|| "`step_progress` is not `plain` or `rawjson`".to_owned())?,
        None => return Err("`steps` without `step_progress` (`plain` or `rawjson`)".to_owned()),
    };
    let mut hits = Vec::with_capacity(steps.len());
    for (i, step) in steps.into_iter().enumerate() {
        let step: StepWire =
            serde_json::from_value(step).map_err(|e| format!("`steps[{i}]`: {e}"))?;
        if step.ordinal != i {
            return Err(format!("`steps[{i}].ordinal` is not {i}"));
        }
        if step.name.trim().is_empty() {
            return Err(format!("`steps[{i}].name` is empty"));
        }
        limits::name(|| format!("steps[{i}].name"), &step.name).map_err(|e| e.to_string())?;
        if let Some(digest) = &step.digest {
            Digest::parse(digest, &format!("steps[{i}].digest")).map_err(|e| e.to_string())?;
        }
        if let Some(record) = &step.record {
            if record.is_empty() {
                return Err(format!("`steps[{i}].record` is empty"));
            }
            limits::name(|| format!("steps[{i}].record"), record).map_err(|e| e.to_string())?;
        }
        hits.push(StepHit {
            step: Step {
                name: step.name,
                digest: step.digest,
                cached: step.cached,
            },
            record: step.record,
        });
    }
    Ok(Some((mode, hits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(name: &str, cached: bool) -> StepHit {
        StepHit {
            step: Step {
                name: name.to_owned(),
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                cached,
            },
            record: cached.then(|| "rec1".to_owned()),
        }
    }

    /// Steps put on a line are read back as they were.
    #[test]
    fn steps_round_trip() {
        let hits = vec![hit("[1/2] RUN a", true), hit("[2/2] RUN b", false)];
        let mut line = serde_json::json!({"v": 1, "type": "run"});
        assert_eq!(put(&mut line, Mode::RawJson, &hits), 0);
        let map = line.as_object_mut().unwrap();
        assert_eq!(take(map).unwrap(), Some((Mode::RawJson, hits)));
        assert!(!map.contains_key("steps"));
    }

    /// A hook cannot send more steps than a build may record, nor steps out of order.
    #[test]
    fn too_many_or_reordered_steps_are_refused() {
        let step = |i: usize| serde_json::json!({"ordinal": i, "name": "RUN x", "cached": true});
        let many: Vec<Value> = (0..=STEPS).map(step).collect();
        let mut line = serde_json::json!({"steps": many, "step_progress": "plain"});
        let err = take(line.as_object_mut().unwrap()).unwrap_err();
        assert!(err.contains("over the limit of 1000"), "{err}");
        let mut line = serde_json::json!({"steps": [step(1)], "step_progress": "plain"});
        assert!(take(line.as_object_mut().unwrap()).is_err());
        let mut line = serde_json::json!({"steps": [{"ordinal": 0, "name": "x", "cached": true, "digest": "nope"}], "step_progress": "plain"});
        assert!(take(line.as_object_mut().unwrap()).is_err());
    }

    /// Steps that would take a line over its byte limit are left out, not sent to a refusal.
    #[test]
    fn steps_keep_the_line_within_its_limit() {
        let hits: Vec<StepHit> = (0..STEPS)
            .map(|i| hit(&format!("{i}{}", "n".repeat(limits::NAME_BYTES - 8)), true))
            .collect();
        let mut line = serde_json::json!({"v": 1, "type": "run"});
        let left_out = put(&mut line, Mode::Plain, &hits);
        assert!(left_out > 0);
        assert!(line.to_string().len() <= limits::LINE_BYTES);
    }
}
