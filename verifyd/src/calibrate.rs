//! Start-up calibration: time every backend compiled in on a small corpus
//! and pick the fastest one for this CPU.
//!
//! Which ML-DSA-65 implementation is fastest depends on the machine (AVX2,
//! the compiler, the C library's assembly), so a fixed default is wrong
//! somewhere. At start the daemon signs a few messages once, then verifies
//! them with each backend in turn, *interleaved* round by round so that a
//! burst of noise from a neighbour hits every backend alike, until the time
//! budget is spent. Each backend's figure is the median of its rounds.
//!
//! A backend that gets any verdict wrong (a valid item rejected, a tampered
//! one accepted) is excluded and reported, never picked. The default backend
//! is kept unless another is faster by more than [`PREFER_DEFAULT_MARGIN`],
//! so a restart on the same machine does not flip between two backends that
//! are equal within noise.
//!
//! [`pick`] is the decision alone (pure, unit-tested); [`calibrate`] measures
//! and then calls it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Verdict;
use crate::backend::{Backend, BackendKind, DecodedKey, verify_item};
use crate::fixtures::{FixtureError, Signer};

/// Default wall-clock budget for the timing rounds (signing the corpus and
/// decoding keys come on top, a few milliseconds in release builds).
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(300);

/// Fewest rounds per backend for a median; taken even past the budget.
pub const MIN_ROUNDS: u32 = 3;

/// Most rounds per backend: more adds nothing once the median is stable.
pub const MAX_ROUNDS: u32 = 200;

/// Another backend must beat the default by this fraction of the default's
/// time to be picked (noise between runs is a few percent).
pub const PREFER_DEFAULT_MARGIN: f64 = 0.03;

/// Messages in the corpus; each round verifies every one, plus one
/// tampered item whose `Invalid` verdict is checked.
const CORPUS_MESSAGES: usize = 4;

/// How one backend did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackendTiming {
    /// The backend.
    pub backend: BackendKind,
    /// Median time of one verification, nanoseconds (`None` if excluded).
    pub verify_ns: Option<u64>,
    /// Rounds measured.
    pub rounds: u32,
    /// Why it was excluded, if it was (a wrong verdict, an undecodable key).
    pub excluded: Option<String>,
}

/// The outcome of a calibration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// The backend to use.
    pub picked: BackendKind,
    /// Every backend tried, in [`BackendKind::ALL`] order.
    pub timings: Vec<BackendTiming>,
    /// Wall time the whole calibration took, milliseconds.
    pub elapsed_ms: u64,
}

/// Calibration could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// The corpus could not be signed.
    #[error("calibration corpus: {0}")]
    Corpus(#[from] FixtureError),
    /// No backend was given.
    #[error("no backend to calibrate")]
    NoBackends,
}

/// Chooses among measured backends: the fastest, unless `default` is within
/// [`PREFER_DEFAULT_MARGIN`] of it. Excluded backends are never chosen; if
/// all are excluded, `default` is returned (the daemon then runs what it
/// would have run without calibration, and the report says why).
#[must_use]
pub fn pick(timings: &[BackendTiming], default: BackendKind) -> BackendKind {
    let fastest = timings
        .iter()
        .filter_map(|t| t.verify_ns.map(|ns| (t.backend, ns)))
        .min_by_key(|&(_, ns)| ns);
    let Some((fastest, fastest_ns)) = fastest else {
        return default;
    };
    let default_ns = timings
        .iter()
        .find(|t| t.backend == default)
        .and_then(|t| t.verify_ns);
    match default_ns {
        // Precision loss converting nanoseconds to f64 is far below the
        // margin for any time a verification can take.
        Some(d) if (d as f64) <= fastest_ns as f64 * (1.0 + PREFER_DEFAULT_MARGIN) => default,
        _ => fastest,
    }
}

struct Candidate {
    kind: BackendKind,
    key: Option<DecodedKey>,
    samples: Vec<u64>,
    excluded: Option<String>,
}

/// Times every backend compiled in ([`BackendKind::ALL`]) for about
/// `budget` and picks one (see the module docs). Blocks the calling thread;
/// run it before the worker pool starts.
pub fn calibrate_built_in(budget: Duration) -> Result<Calibration, CalibrationError> {
    let backends: Vec<Arc<dyn Backend>> = BackendKind::ALL.iter().map(|k| k.build()).collect();
    calibrate(&backends, BackendKind::DEFAULT, budget)
}

/// Times each of `backends` for about `budget` and picks one (see the
/// module docs). Blocks the calling thread.
// Measuring wall time is the whole job here: this is a driver, [`pick`] is
// the decision.
#[allow(clippy::disallowed_methods)]
pub fn calibrate(
    backends: &[Arc<dyn Backend>],
    default: BackendKind,
    budget: Duration,
) -> Result<Calibration, CalibrationError> {
    if backends.is_empty() {
        return Err(CalibrationError::NoBackends);
    }
    let start = Instant::now();
    let signer = Signer::from_seed(BackendKind::AwsLc, [0x7e; 32])?;
    let mut messages = Vec::with_capacity(CORPUS_MESSAGES);
    for i in 0..CORPUS_MESSAGES {
        let msg = format!("tern verifyd calibration message {i}").into_bytes();
        let sig = signer.sign(&msg)?;
        messages.push((msg, sig));
    }
    let mut tampered = messages[0].clone();
    tampered.0.push(b'!');

    let mut candidates: Vec<Candidate> = backends
        .iter()
        .map(|backend| {
            let kind = backend.kind();
            let (key, excluded) = match backend.decode_key(signer.public_key()) {
                Ok(k) => (Some(k), None),
                Err(e) => (None, Some(format!("key did not decode: {e}"))),
            };
            Candidate {
                kind,
                key,
                samples: Vec::new(),
                excluded,
            }
        })
        .collect();

    let per_round = messages.len() as u64;
    for round in 0..MAX_ROUNDS {
        if round >= MIN_ROUNDS && start.elapsed() >= budget {
            break;
        }
        for c in candidates.iter_mut().filter(|c| c.excluded.is_none()) {
            let Some(key) = c.key.as_deref() else {
                continue;
            };
            let t0 = Instant::now();
            let mut wrong = None;
            for (msg, sig) in &messages {
                let v = verify_item(key, msg, &[], sig);
                if v != Verdict::Valid {
                    wrong = Some(format!("a valid signature got {v:?}"));
                }
            }
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX) / per_round;
            let v = verify_item(key, &tampered.0, &[], &tampered.1);
            if v != Verdict::Invalid {
                wrong = Some(format!("a tampered message got {v:?}"));
            }
            match wrong {
                Some(why) => c.excluded = Some(why),
                None => c.samples.push(ns),
            }
        }
    }

    let timings: Vec<BackendTiming> = candidates
        .into_iter()
        .map(|mut c| {
            c.samples.sort_unstable();
            let verify_ns = match c.excluded {
                Some(_) => None,
                None => c.samples.get(c.samples.len() / 2).copied(),
            };
            BackendTiming {
                backend: c.kind,
                verify_ns,
                rounds: u32::try_from(c.samples.len()).unwrap_or(u32::MAX),
                excluded: c.excluded,
            }
        })
        .collect();
    let picked = pick(&timings, default);
    Ok(Calibration {
        picked,
        timings,
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(backend: BackendKind, ns: Option<u64>) -> BackendTiming {
        BackendTiming {
            backend,
            verify_ns: ns,
            rounds: 5,
            excluded: ns.is_none().then(|| "wrong verdict".to_owned()),
        }
    }

    #[test]
    fn fastest_wins_when_clearly_faster() {
        let ts = [
            t(BackendKind::AwsLc, Some(100_000)),
            t(BackendKind::RustCrypto, Some(80_000)),
        ];
        assert_eq!(pick(&ts, BackendKind::AwsLc), BackendKind::RustCrypto);
    }

    #[test]
    fn default_kept_within_noise_margin() {
        let ts = [
            t(BackendKind::AwsLc, Some(102_000)),
            t(BackendKind::RustCrypto, Some(100_000)),
        ];
        assert_eq!(pick(&ts, BackendKind::AwsLc), BackendKind::AwsLc);
        // Just past the margin, the faster one is taken.
        let ts = [
            t(BackendKind::AwsLc, Some(104_000)),
            t(BackendKind::RustCrypto, Some(100_000)),
        ];
        assert_eq!(pick(&ts, BackendKind::AwsLc), BackendKind::RustCrypto);
    }

    #[test]
    fn excluded_backend_is_never_picked() {
        let ts = [
            t(BackendKind::AwsLc, Some(100_000)),
            t(BackendKind::RustCrypto, None),
        ];
        assert_eq!(pick(&ts, BackendKind::RustCrypto), BackendKind::AwsLc);
        let all_out = [
            t(BackendKind::AwsLc, None),
            t(BackendKind::RustCrypto, None),
        ];
        assert_eq!(pick(&all_out, BackendKind::AwsLc), BackendKind::AwsLc);
    }

    /// Measures every backend compiled in, within the budget, and picks one
    /// that is measured and not excluded.
    #[test]
    fn calibrate_measures_every_backend() {
        let cal = calibrate_built_in(Duration::from_millis(50)).expect("calibration runs");
        assert_eq!(cal.timings.len(), BackendKind::ALL.len());
        for timing in &cal.timings {
            assert_eq!(timing.excluded, None, "{timing:?}");
            assert!(timing.rounds >= MIN_ROUNDS, "{timing:?}");
            assert!(timing.verify_ns.is_some_and(|ns| ns > 0), "{timing:?}");
        }
        let picked = cal
            .timings
            .iter()
            .find(|t| t.backend == cal.picked)
            .expect("picked is one of the measured backends");
        let fastest = cal.timings.iter().filter_map(|t| t.verify_ns).min();
        let picked_ns = picked.verify_ns.expect("picked was measured");
        assert!(
            picked_ns as f64 <= fastest.expect("measured") as f64 * (1.0 + PREFER_DEFAULT_MARGIN),
            "{cal:?}"
        );
    }

    #[test]
    fn no_backends_is_an_error() {
        assert!(matches!(
            calibrate(&[], BackendKind::DEFAULT, DEFAULT_BUDGET),
            Err(CalibrationError::NoBackends)
        ));
    }

    /// A backend that accepts every signature: as fast as can be, and wrong.
    #[derive(Debug)]
    struct AcceptsAll;
    #[derive(Debug)]
    struct AcceptsAllKey;
    impl crate::backend::VerifyKey for AcceptsAllKey {
        fn verify_sized(&self, _: &[u8], _: &[u8], _: &[u8]) -> bool {
            true
        }
        fn footprint(&self) -> usize {
            0
        }
    }
    impl Backend for AcceptsAll {
        fn kind(&self) -> BackendKind {
            BackendKind::RustCrypto
        }
        fn decode_key(&self, _: &[u8]) -> Result<DecodedKey, crate::backend::KeyError> {
            Ok(Arc::new(AcceptsAllKey))
        }
        fn supports_context(&self) -> bool {
            false
        }
    }

    /// The fastest backend is excluded, with the reason, when it accepts a
    /// tampered message; the correct one is picked.
    #[test]
    fn wrong_verdicts_exclude_even_the_fastest() {
        let backends: Vec<Arc<dyn Backend>> =
            vec![BackendKind::AwsLc.build(), Arc::new(AcceptsAll)];
        let cal = calibrate(
            &backends,
            BackendKind::RustCrypto,
            Duration::from_millis(20),
        )
        .expect("calibration runs");
        assert_eq!(cal.picked, BackendKind::AwsLc, "{cal:?}");
        let liar = &cal.timings[1];
        assert_eq!(liar.verify_ns, None);
        assert!(
            liar.excluded
                .as_deref()
                .is_some_and(|w| w.contains("tampered")),
            "{liar:?}"
        );
    }
}
