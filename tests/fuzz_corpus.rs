//! Replays the fuzz corpora through the fuzz targets' bodies (`wsedge::fuzzing`): every seed in
//! `fuzz/corpus/<target>/` and every input the fuzzer ever crashed on, kept in
//! `fuzz/regressions/<target>/`. CI runs this (fast); it does not fuzz (see fuzz/README.md).

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("ws_frame", wsedge::fuzzing::ws_frame),
    ("ws_conn", wsedge::fuzzing::ws_conn),
    ("room_frame", wsedge::fuzzing::room_frame),
    ("awareness", wsedge::fuzzing::awareness),
    ("http_framing", wsedge::fuzzing::http_framing),
    ("config", wsedge::fuzzing::config),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir` (none if it does not exist), sorted for a stable order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    v.sort();
    v
}

/// Run every input; a panic names the file (the target's own message says what broke).
fn replay(run: Target, inputs: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for path in inputs {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    failed
}

#[test]
fn seed_corpora_replay_through_every_target() {
    let mut failed = Vec::new();
    for (name, run) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            seeds.len() >= 5,
            "fuzz/corpus/{name} has {} seeds: regenerate them (fuzz/README.md)",
            seeds.len()
        );
        failed.extend(replay(run, &seeds));
    }
    assert!(
        failed.is_empty(),
        "seeds that fail their target: {failed:#?}"
    );
}

#[test]
fn every_crash_the_fuzzer_found_stays_fixed() {
    let dir = fuzz_dir().join("regressions");
    assert!(
        dir.join("README.md").is_file(),
        "fuzz/regressions/README.md is missing"
    );
    let mut failed = Vec::new();
    for (name, run) in TARGETS {
        failed.extend(replay(run, &files(&dir.join(name))));
    }
    // A directory named after no target would never be replayed.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/regressions/{name} is not a fuzz target"
            );
        }
    }
    assert!(
        failed.is_empty(),
        "regressions that fail again: {failed:#?}"
    );
}
