//! Durable file operations: a spooled file counts as written only once it
//! and the directory entry that names it are on disk.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::{Result, io_err};

/// fsync a directory so that creations, renames and removals in it
/// survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Write `bytes` to `path` so that after a crash the file either does not
/// exist or is complete: temporary file, fsync, rename, fsync directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&temporary).map_err(io_err(&temporary))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&temporary))?;
    }
    fs::rename(&temporary, path).map_err(io_err(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Size of a file, 0 if it does not exist.
pub(crate) fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
