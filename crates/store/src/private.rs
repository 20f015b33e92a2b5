//! Files that hold callers' data (the cache, the request log, the tenant secret) are
//! readable by the proxy's own user only: directories `0700`, files `0600`, also when
//! an older version or a wide umask left them more open.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of a directory holding callers' data.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a file holding callers' data.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode `0700`, and sets `dir` itself to
/// `0700` if it already existed (it is the proxy's own: the data directory). Parents
/// that already existed are left as they are.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    create_parents(dir)?;
    set_mode(dir, DIR_MODE)
}

/// Creates the missing directories of `dir` with mode `0700`, leaving existing ones
/// alone (the request log may live in a shared directory such as `/var/log`).
pub fn create_parents(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Options that create a file with mode `0600` (an existing file keeps its mode: see
/// [`restrict`]).
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Opens `path` for appending, creating it with mode `0600`, and narrows an existing
/// file to `0600`.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = options().create(true).append(true).open(path)?;
    restrict(path)?;
    Ok(file)
}

/// Sets an existing file to `0600`; a missing file is not an error.
pub fn restrict(path: &Path) -> io::Result<()> {
    match set_mode(path, FILE_MODE) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current == mode {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_the_owners_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("a/b/data");
        create_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);

        // An existing, wider data dir is narrowed; its existing parent is not.
        let wide = tmp.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);
        let before = mode(tmp.path());
        create_parents(tmp.path()).unwrap();
        assert_eq!(mode(tmp.path()), before);

        let log = data.join("requests.jsonl");
        std::fs::write(&log, b"old\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_append(&log).unwrap());
        assert_eq!(mode(&log), 0o600);
        let fresh = data.join("fresh");
        drop(open_append(&fresh).unwrap());
        assert_eq!(mode(&fresh), 0o600);
        restrict(&data.join("missing")).unwrap();
    }
}
