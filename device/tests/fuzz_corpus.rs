//! The fuzz harnesses (`twinbank::testing::fuzz`) without a fuzzer, on the stable toolchain:
//! the seed corpora in `fuzz/corpus/` are exactly what the crate's encoders make today, every
//! seed and every past finding (`fuzz/regressions/<target>/`) passes its harness, and every
//! harness has its fuzz target.
//!
//! Regenerate the seeds after a format change with `cargo xtask fuzz --seeds`
//! (= `TWINBANK_BLESS_SEEDS=1 cargo test -p twinbank --test fuzz_corpus seed_corpora`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use twinbank::testing::fuzz::{Target, TARGETS};

/// Prefix of the generated seed files (anything else in a corpus directory is not ours).
const SEED_PREFIX: &str = "seed-";
/// Set to rewrite the seed files instead of checking them.
const BLESS: &str = "TWINBANK_BLESS_SEEDS";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of a directory, by name (none when it does not exist).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("read corpus file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

fn wanted(t: &Target) -> BTreeMap<String, Vec<u8>> {
    (t.seeds)()
        .into_iter()
        .map(|s| (format!("{SEED_PREFIX}{}", s.name), s.bytes))
        .collect()
}

#[test]
fn seed_corpora_are_current() {
    let bless = std::env::var_os(BLESS).is_some();
    let mut stale = Vec::new();
    for t in TARGETS {
        let dir = fuzz_dir().join("corpus").join(t.name);
        let want = wanted(t);
        assert!(want.len() >= 2, "{}: too few seeds", t.name);
        let have: BTreeMap<String, Vec<u8>> = files(&dir)
            .into_iter()
            .filter(|(name, _)| name.starts_with(SEED_PREFIX))
            .collect();
        if have == want {
            continue;
        }
        if !bless {
            stale.push(t.name);
            continue;
        }
        std::fs::create_dir_all(&dir).unwrap();
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, bytes) in &want {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    assert!(
        stale.is_empty(),
        "the seed corpora of {stale:?} differ from what the encoders make now: run \
         `cargo xtask fuzz --seeds` and commit fuzz/corpus/"
    );
}

#[test]
fn every_seed_and_past_finding_passes_its_harness() {
    for t in TARGETS {
        let mut inputs: Vec<Vec<u8>> = wanted(t).into_values().collect();
        for sub in ["corpus", "regressions"] {
            inputs.extend(files(&fuzz_dir().join(sub).join(t.name)).into_values());
        }
        for input in &inputs {
            (t.run)(input);
        }
        assert!(inputs.len() >= 2, "{}: nothing ran", t.name);
    }
}

#[test]
fn every_harness_has_a_fuzz_target() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for t in TARGETS {
        let file = fuzz_dir().join(format!("fuzz_targets/{}.rs", t.name));
        let source =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            source.contains(&format!("twinbank::testing::fuzz::{}(data)", t.name)),
            "{} does not call its harness",
            file.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "fuzz/Cargo.toml has no line for {}",
            t.name
        );
    }
}

/// The protocol seeds do what their names say, so the fuzzer starts from deep states.
#[test]
fn protocol_seeds_reach_their_states() {
    use twinbank::testing::fuzz::{protocol_summary, target};
    use twinbank::{Bank, BankState};
    let seeds = (target("protocol").unwrap().seeds)();
    let run = |name: &str| {
        let s = seeds.iter().find(|s| s.name == name).unwrap();
        protocol_summary(&s.bytes)
    };
    let confirmed =
        |st: &twinbank::BootState, b: Bank| matches!(st.bank(b), BankState::Confirmed(_));
    for name in ["install-confirm", "resume-after-power-cut"] {
        let s = run(name);
        let st = s.state.unwrap();
        assert_eq!(s.refused, 0, "{name}");
        assert!(
            st.preferred == Bank::B && confirmed(&st, Bank::B),
            "{name}: {st:?}"
        );
    }
    let s = run("reject-and-rollback");
    let st = s.state.unwrap();
    assert!(st.preferred == Bank::A && confirmed(&st, Bank::A) && confirmed(&st, Bank::B));
    let s = run("refusals");
    let st = s.state.unwrap();
    assert!(s.refused >= 5, "{s:?}");
    assert!(
        st.preferred == Bank::A && st.bank(Bank::B) == &BankState::Empty,
        "{st:?}"
    );
}

/// The SMP seeds do what their names say: the update is confirmed, the rollback switches back,
/// the refusals and queries change nothing.
#[test]
fn smp_seeds_reach_their_states() {
    use twinbank::testing::fuzz::{smp_summary, target};
    use twinbank::{Bank, BankState};
    let seeds = (target("smp").unwrap().seeds)();
    let run = |name: &str| {
        let s = seeds.iter().find(|s| s.name == name).unwrap();
        smp_summary(&s.bytes).unwrap()
    };
    let confirmed =
        |st: &twinbank::BootState, b: Bank| matches!(st.bank(b), BankState::Confirmed(_));
    for name in ["upload-test-reset-confirm", "upload-power-cut-resume"] {
        let st = run(name);
        assert!(
            st.preferred == Bank::B && confirmed(&st, Bank::B),
            "{name}: {st:?}"
        );
    }
    let st = run("rollback");
    assert!(
        st.preferred == Bank::A && confirmed(&st, Bank::A) && confirmed(&st, Bank::B),
        "rollback: {st:?}"
    );
    for name in ["queries", "refusals", "interleaved", "erase"] {
        let st = run(name);
        assert!(
            st.preferred == Bank::A && matches!(st.bank(Bank::B), BankState::Empty),
            "{name}: {st:?}"
        );
    }
}

/// The delta seeds do what their names say: real patches (whole, resumed, after a power cut)
/// rebuild their target; the truncated and corrupted ones are refused.
#[test]
fn delta_seeds_apply_or_are_refused() {
    use twinbank::testing::fuzz::{delta_outcome, target};
    let seeds = (target("delta").unwrap().seeds)();
    for s in &seeds {
        let outcome = delta_outcome(&s.bytes);
        let refused = ["truncated", "corrupted"].contains(&s.name.as_str());
        assert_eq!(outcome.is_err(), refused, "{}: {outcome:?}", s.name);
    }
}

/// The `protocol` harness takes every answer the server gives as fitting: `Cancel` is answered
/// `Done`, and a delta request to a server without an applier `DeltaUnsupported` (the harness
/// once called both a broken invariant).
#[test]
fn protocol_harness_knows_cancel_and_delta_answers() {
    use twinbank::protocol::message::{Envelope, Request};
    use twinbank::protocol::server::OUT_FRAME;
    use twinbank::protocol::{encode_frame, MAX_FRAME};
    /// The `protocol` script ops (device/src/testing/fuzz/protocol.rs): `UploadBegin` of an
    /// image, raw wire bytes.
    const BEGIN: u8 = 0;
    const WIRE: u8 = 14;
    // Geometry 1, then an upload begun (so that `Cancel` has something to cancel).
    let mut script = vec![1u8, BEGIN, 1];
    for (seq, body) in [(1, Request::Cancel), (2, Request::DeltaFinish)] {
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut frame = vec![0u8; OUT_FRAME];
        let n = encode_frame(&Envelope { seq, body }, &mut scratch, &mut frame).unwrap();
        script.push(WIRE);
        script.extend_from_slice(&(n as u16).to_le_bytes());
        script.extend_from_slice(&frame[..n]);
    }
    let s = twinbank::testing::fuzz::protocol_summary(&script);
    assert_eq!((s.accepted, s.refused), (2, 1), "{s:?}");
}
