//! The committed corpus, the crashes fuzzing found and the seeds go through their targets
//! on every `cargo test`, so what fuzzing found stays fixed.

use std::path::{Path, PathBuf};

use super::{seeds, TARGETS};

/// The stack each corpus input and seed gets here: the 2 MiB of a node's worker threads.
const NODE_STACK: usize = 2 << 20;

/// The stack each fixed crash gets: the fuzzers' (`scripts/fuzz`, `FUZZ_STACK_KB`), which
/// is what made some of them crash. A decoder whose stack grows with its input overflows
/// it and aborts the tests.
const FUZZ_STACK: usize = 512 << 10;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs target `name` on every input, each on a thread with `stack` bytes of stack.
fn replay(name: &str, inputs: Vec<(String, Vec<u8>)>, stack: usize) -> usize {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let count = inputs.len();
    std::thread::scope(|scope| {
        for (what, data) in inputs {
            let run = std::thread::Builder::new()
                .stack_size(stack)
                .spawn_scoped(scope, move || target(&data))
                .expect("a thread");
            assert!(run.join().is_ok(), "{name} crashed on {what}");
        }
    });
    count
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|file| {
            let data =
                std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            (file.display().to_string(), data)
        })
        .collect()
}

#[test]
fn every_fuzz_target_has_a_function_and_a_corpus() {
    let dir = fuzz_dir();
    for (name, _) in TARGETS {
        let source = dir.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(source.is_file(), "no fuzz target {}", source.display());
        let corpus = dir.join("corpus").join(name);
        assert!(
            !files(&corpus).is_empty(),
            "no corpus in {}",
            corpus.display()
        );
    }
    let sources = files(&dir.join("fuzz_targets"));
    assert_eq!(sources.len(), TARGETS.len(), "{sources:?}");
}

#[test]
fn the_committed_corpus_replays_without_a_crash() {
    let dir = fuzz_dir().join("corpus");
    let replayed: usize = TARGETS
        .iter()
        .map(|(name, _)| replay(name, read_all(&dir.join(name)), NODE_STACK))
        .sum();
    assert!(replayed >= TARGETS.len(), "replayed only {replayed} inputs");
}

/// Each crash fuzzing found, kept in `fuzz/regressions/<target>/` once fixed.
#[test]
fn every_crash_fuzzing_found_stays_fixed() {
    let dir = fuzz_dir().join("regressions");
    let replayed: usize = TARGETS
        .iter()
        .map(|(name, _)| replay(name, read_all(&dir.join(name)), FUZZ_STACK))
        .sum();
    assert!(replayed > 0, "no regressions in {}", dir.display());
}

#[test]
fn every_seed_replays_without_a_crash() {
    for (name, _) in TARGETS {
        let inputs: Vec<_> = seeds::all()
            .into_iter()
            .filter(|(target, _, _)| target == name)
            .map(|(_, seed, data)| (seed, data))
            .collect();
        assert!(!inputs.is_empty(), "no seed for {name}");
        replay(name, inputs, NODE_STACK);
    }
}

/// Writes the seeds to `fuzz/corpus/<target>/seed-<name>`; `scripts/fuzz --seed` runs it.
#[test]
#[ignore = "writes fuzz/corpus; run by scripts/fuzz --seed"]
fn write_seeds() {
    let dir = fuzz_dir().join("corpus");
    for (target, name, data) in seeds::all() {
        let folder = dir.join(target);
        std::fs::create_dir_all(&folder).expect("a corpus folder");
        std::fs::write(folder.join(format!("seed-{name}")), data).expect("a seed file");
    }
}
