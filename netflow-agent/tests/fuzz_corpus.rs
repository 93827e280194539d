//! The fuzzers' findings as regression tests: every input of every target's
//! committed corpus (`fuzz/corpus/<target>`: the seeds and what `cargo
//! xtask fuzz` kept) and every crash input (`fuzz/regressions/<target>`,
//! once fixed) is run through the same entry point the fuzz target calls.

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use netflow_agent::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_crash_input_runs_clean() {
    let mut failures = Vec::new();
    for target in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(target.name));
        assert!(
            !corpus.is_empty(),
            "{}: no corpus in fuzz/corpus/{}",
            target.name,
            target.name
        );
        let crashes = inputs(&fuzz_dir().join("regressions").join(target.name));
        for input in corpus.iter().chain(&crashes) {
            let data = fs::read(input).expect("a corpus file");
            if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
                failures.push(format!("{}: {}", target.name, input.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs that panic:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for target in TARGETS {
        let file = fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{}.rs", target.name));
        let text =
            fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert!(
            text.contains(&format!("target(\"{}\")", target.name)),
            "{} does not run its entry",
            file.display()
        );
    }
}
