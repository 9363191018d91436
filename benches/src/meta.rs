//! Run metadata stamped on every JSON object `stagebench` prints, and the
//! rounding applied to its figures.
//!
//! A result file must say where it came from: the commit of the checkout
//! (and whether it had local changes), the CPU model and core count, whether
//! it was a `--quick` run, the suite arguments and the UTC time. Floats are
//! rounded to [`SIGNIFICANT`] significant digits: the machines this runs on
//! are shared and noisy, and more digits than the run-to-run spread only
//! suggest a precision nobody measured.

use std::process::Command;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::SuiteOpts;

/// Significant digits kept in every float of the JSON output.
pub const SIGNIFICANT: i32 = 4;

/// Where and when a run happened.
#[derive(Debug, Clone)]
pub struct RunMeta {
    suite: &'static str,
    meta: Value,
}

impl RunMeta {
    /// Reads the commit, CPU and clock once for the whole run.
    pub fn collect(suite: &'static str, opts: &SuiteOpts) -> Self {
        let (commit, dirty) = commit();
        let meta = json!({
            "commit": commit,
            "dirty": dirty,
            "cpu_model": cpu_model(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "quick": opts.quick,
            "args": opts.args,
            "utc": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        });
        Self { suite, meta }
    }

    /// `obj` with `suite` and `meta` added and its floats rounded. A
    /// non-object value is wrapped as `{"value": …}`.
    pub fn stamp(&self, obj: Value) -> Value {
        let mut map = match round(obj) {
            Value::Object(m) => m,
            other => Map::from_iter([("value".to_string(), other)]),
        };
        map.insert("suite".into(), json!(self.suite));
        map.insert("meta".into(), self.meta.clone());
        Value::Object(map)
    }
}

/// Rounds every float in `v` (recursively) to [`SIGNIFICANT`] digits;
/// integers, strings and booleans are left alone.
pub fn round(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) => json!(round_sig(f, SIGNIFICANT)),
            None => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(round).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, round(v))).collect()),
        other => other,
    }
}

/// `f` rounded to `digits` significant digits (non-finite values and zero
/// unchanged).
pub fn round_sig(f: f64, digits: i32) -> f64 {
    if f == 0.0 || !f.is_finite() {
        return f;
    }
    let magnitude = f.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1 - magnitude);
    (f * scale).round() / scale
}

/// The checkout's commit and whether tracked files have local changes, or
/// `"unknown"` when git or the checkout is not there (a copied binary).
fn commit() -> (String, Option<bool>) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(c) => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
            (c, dirty)
        }
        None => ("unknown".into(), None),
    }
}

/// The first `model name` of `/proc/cpuinfo`, or `"unknown"`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_significant_digits() {
        assert_eq!(round_sig(3_681_234.0, 4), 3_681_000.0);
        assert_eq!(round_sig(6.0912, 4), 6.091);
        assert_eq!(round_sig(0.031_234_5, 4), 0.031_23);
        assert_eq!(round_sig(-1.23456, 3), -1.23);
        assert_eq!(round_sig(0.0, 4), 0.0);
        assert!(round_sig(f64::NAN, 4).is_nan());
    }

    #[test]
    fn stamp_adds_meta_and_rounds_nested_floats_only() {
        let m = RunMeta {
            suite: "ipc",
            meta: json!({"commit": "abc"}),
        };
        let out =
            m.stamp(json!({"case": "x", "n": 123_456_789u64, "r": [1.234_567, {"p": 9.876_54}]}));
        assert_eq!(out["suite"], "ipc");
        assert_eq!(out["meta"]["commit"], "abc");
        assert_eq!(out["n"], 123_456_789u64);
        assert_eq!(out["r"][0], 1.235);
        assert_eq!(out["r"][1]["p"], 9.877);
        let wrapped = m.stamp(json!(2.5));
        assert_eq!(wrapped["value"], 2.5);
    }
}
