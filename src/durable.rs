//! Making a directory's entries durable: after a file is created, renamed, linked or
//! removed, the name itself survives a power loss only once its directory is fsynced.

use std::io;
use std::path::Path;

/// Fsyncs the directory `dir` (the current directory when `dir` is empty, as the parent
/// of a bare file name is), so that the entries made or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_and_the_empty_path_sync_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        sync_dir(Path::new("")).unwrap();
        let missing = sync_dir(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
