//! Output files that never lose or clobber data.
//!
//! * [`AtomicWriter`]: data goes to a hidden temp file beside the destination
//!   (`.NAME.PID.N.tmp`), which [`AtomicWriter::commit`] renames onto it, so a reader never sees
//!   a half-written file and an interrupted run leaves the old file as it was. The temp file is
//!   created with mode `0666 & !umask` (what `open(2)` gives an ordinary new file, unlike
//!   `mkstemp`'s 0600); an existing destination keeps its permission bits.
//! * Concurrent writers of one path: the last rename wins, atomically (each writer has its own
//!   temp file, so the file is always one complete run's output). A writer that finds, when it
//!   commits, that another process replaced the destination since it started says so on stderr.
//! * [`check_output`]: before any work, an output path that is a folder, whose folder is
//!   missing or not writable, or that is the same file as one of the inputs is refused with a
//!   message naming the path the user gave.
//! * [`interrupt`]: SIGINT / SIGTERM / SIGHUP handling; live temp files are registered so that
//!   an interrupted process removes them before it exits with status 130.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Temp files that exist right now (removed by the signal handler before exiting).
static LIVE_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn register(p: &Path) {
    if let Ok(mut v) = LIVE_TEMPS.lock() {
        v.push(p.to_path_buf());
    }
}

fn unregister(p: &Path) {
    if let Ok(mut v) = LIVE_TEMPS.lock()
        && let Some(i) = v.iter().position(|q| q == p)
    {
        v.swap_remove(i);
    }
}

/// Identity of an existing file: (device, inode, mtime ns, size).
fn identity(p: &Path) -> Option<(u64, u64, i128, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.size(),
    ))
}

/// The folder a file path lives in (`.` for a bare file name).
pub fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A file being written atomically (see the module docs). Dropping it without
/// [`AtomicWriter::commit`] removes the temp file and leaves `dest` untouched.
pub struct AtomicWriter {
    inner: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Identity of `dest` when writing started (None: it did not exist).
    before: Option<(u64, u64, i128, u64)>,
}

/// What [`AtomicWriter::commit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Another process created or replaced the destination while this writer was open; its
    /// content was replaced by this one's (last writer wins).
    pub raced: bool,
}

impl AtomicWriter {
    /// Starts writing `dest`. Errors: [`Error::Io`] naming `dest` (not the temp file) when
    /// `dest` is a folder, its folder is missing, or the folder is not writable.
    pub fn create(dest: &Path) -> Result<AtomicWriter> {
        check_dest(dest)?;
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let before = identity(dest);
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
            // register first: a signal between create and register must not leak the file
            register(&tmp);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(AtomicWriter {
                        inner: Some(BufWriter::with_capacity(1 << 16, f)),
                        tmp,
                        dest: dest.to_path_buf(),
                        before,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => unregister(&tmp),
                Err(e) => {
                    unregister(&tmp);
                    return Err(dest_error(dest, e));
                }
            }
        }
    }

    /// Flushes, syncs and renames the temp file onto the destination, giving it the
    /// destination's previous permission bits when it existed. Warns on stderr (and reports
    /// in [`Committed::raced`]) when another process replaced the destination meanwhile.
    ///
    /// Errors: [`Error::Io`] naming the destination.
    pub fn commit(mut self) -> Result<Committed> {
        let w = self.inner.take().expect("writer present until commit");
        let r = self.finish(w);
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        unregister(&self.tmp);
        r
    }

    fn finish(&self, w: BufWriter<File>) -> Result<Committed> {
        let dest = &self.dest;
        let f = w
            .into_inner()
            .map_err(|e| Error::io(dest, e.into_error()))?;
        if let Ok(m) = std::fs::metadata(dest)
            && m.is_file()
        {
            let mode = m.permissions().mode() & 0o7777;
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(dest, e))?;
        }
        f.sync_all().map_err(|e| Error::io(dest, e))?;
        drop(f);
        let raced = identity(dest) != self.before;
        std::fs::rename(&self.tmp, dest).map_err(|e| dest_error(dest, e))?;
        if raced {
            tracing::warn!(
                "{}: another process wrote this file while this run was writing it; \
                 it now holds this run's output (the last writer wins)",
                dest.display()
            );
        }
        Ok(Committed { raced })
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            unregister(&self.tmp);
        }
    }
}

impl Write for AtomicWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.as_mut().expect("open writer").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.as_mut().expect("open writer").flush()
    }
}

/// Writes `bytes` to `dest` atomically ([`AtomicWriter`]).
///
/// Errors: [`Error::Io`] naming `dest`.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut w = AtomicWriter::create(dest)?;
    w.write_all(bytes).map_err(|e| Error::io(dest, e))?;
    w.commit()?;
    Ok(())
}

/// An I/O error about `dest` with a message that says which part of the path is wrong.
fn dest_error(dest: &Path, e: std::io::Error) -> Error {
    let dir = parent_dir(dest);
    let msg = match e.kind() {
        std::io::ErrorKind::NotFound if !dir.is_dir() => {
            format!("cannot write: folder {} does not exist", dir.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "cannot write: permission denied in folder {}",
                dir.display()
            )
        }
        _ if dest.is_dir() => "cannot write: this is a folder, not a file".into(),
        _ => format!("cannot write: {e}"),
    };
    Error::io(dest, std::io::Error::new(e.kind(), msg))
}

/// Checks that `dest` can be created or replaced as a file: not a folder, its folder exists.
fn check_dest(dest: &Path) -> Result<()> {
    let io = |kind, msg: String| Error::io(dest, std::io::Error::new(kind, msg));
    if dest.as_os_str().is_empty() {
        return Err(io(std::io::ErrorKind::InvalidInput, "empty path".into()));
    }
    if dest.is_dir() {
        return Err(io(
            std::io::ErrorKind::IsADirectory,
            "is a folder; give a file path".into(),
        ));
    }
    let dir = parent_dir(dest);
    if !dir.is_dir() {
        return Err(io(
            std::io::ErrorKind::NotFound,
            format!("cannot write: folder {} does not exist", dir.display()),
        ));
    }
    Ok(())
}

/// True when `a` and `b` name the same existing file (same device and inode, so symlinks and
/// hard links count).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The input files of a run, by identity (device, inode), to refuse outputs that would
/// replace one of them.
#[derive(Debug, Default)]
pub struct InputSet {
    ids: std::collections::HashMap<(u64, u64), PathBuf>,
}

impl InputSet {
    /// The identities of the existing files among `paths` (one `stat` each).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> InputSet {
        let mut ids = std::collections::HashMap::new();
        for p in paths {
            if let Ok(m) = std::fs::metadata(p) {
                ids.entry((m.dev(), m.ino())).or_insert_with(|| p.clone());
            }
        }
        InputSet { ids }
    }

    /// The input that `p` is the same file as, if any.
    pub fn find(&self, p: &Path) -> Option<&Path> {
        let m = std::fs::metadata(p).ok()?;
        self.ids.get(&(m.dev(), m.ino())).map(PathBuf::as_path)
    }
}

/// Pre-flight check of an output file given as `flag` (e.g. `--jsonl`): it must not be a
/// folder, its folder must exist and be writable (probed by creating and removing a temp file
/// there), and it must not be the same file as any of `inputs`.
///
/// Errors: [`Error::InvalidInput`] / [`Error::Io`] naming `flag` and the path as given.
pub fn check_output(flag: &str, dest: &Path, inputs: &InputSet) -> Result<()> {
    if let Some(i) = inputs.find(dest) {
        return Err(Error::InvalidInput(format!(
            "{flag} {}: this is the input {}; refusing to overwrite an input",
            dest.display(),
            i.display()
        )));
    }
    check_dest(dest).map_err(|e| prefix(flag, e))?;
    // the same probe the real write does, so an unwritable folder fails now, not after the work
    drop(AtomicWriter::create(dest).map_err(|e| prefix(flag, e))?);
    Ok(())
}

fn prefix(flag: &str, e: Error) -> Error {
    match e {
        // printed as "--jsonl PATH: problem"
        Error::Io { path, err } => Error::io(format!("{flag} {}", path.display()), err),
        other => other,
    }
}

/// SIGINT / SIGTERM / SIGHUP handling shared by all commands.
///
/// After [`install`], a signal makes a process that has not called [`set_cooperative`] remove
/// its live temp files and exit with status 130 at once. A cooperative command (a batch that
/// polls [`interrupted`] between images) gets the first signal as a flag, finishes or drops the
/// current item, writes what is done and exits 130 itself; a second signal stops it at once.
pub mod interrupt {
    use super::LIVE_TEMPS;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static COOPERATIVE: AtomicBool = AtomicBool::new(false);

    /// Exit status of an interrupted run (128 + SIGINT, as shells report it).
    pub const EXIT_CODE: u8 = 130;

    /// Installs the handler (once per process; later calls do nothing).
    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if let Err(e) = ctrlc::set_handler(on_signal) {
                tracing::warn!("cannot install the interrupt handler: {e}");
            }
        });
    }

    /// Declares that the running command polls [`interrupted`] (true) or not (false).
    pub fn set_cooperative(on: bool) {
        COOPERATIVE.store(on, Ordering::SeqCst);
    }

    /// True once SIGINT / SIGTERM / SIGHUP arrived.
    pub fn interrupted() -> bool {
        COUNT.load(Ordering::SeqCst) > 0
    }

    fn on_signal() {
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 && COOPERATIVE.load(Ordering::SeqCst) {
            eprintln!(
                "anchorkit: interrupted; finishing the current image and writing the results \
                 done so far (interrupt again to stop at once)"
            );
            return;
        }
        // hold the lock until exit so no new temp file appears after the cleanup
        let temps = LIVE_TEMPS.lock();
        if let Ok(t) = &temps {
            for p in t.iter() {
                let _ = std::fs::remove_file(p);
            }
        }
        eprintln!("anchorkit: interrupted; stopped without writing partial outputs");
        std::process::exit(EXIT_CODE as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umask() -> u32 {
        // the mode a plain new file gets is 0666 & !umask
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("probe");
        File::create(&p).unwrap();
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_files_get_the_umask_mode_and_existing_files_keep_theirs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.jsonl");
        write_atomic(&p, b"a").unwrap();
        assert_eq!(mode(&p), umask());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"b").unwrap();
        assert_eq!(mode(&p), 0o640);
        assert_eq!(std::fs::read(&p).unwrap(), b"b");
        assert_eq!(names(d.path()), ["out.jsonl"]);
    }

    #[test]
    fn drop_without_commit_leaves_the_old_file_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.csv");
        std::fs::write(&p, "old").unwrap();
        {
            let mut w = AtomicWriter::create(&p).unwrap();
            w.write_all(b"partial").unwrap();
            assert_eq!(names(d.path()).len(), 2);
            assert_eq!(
                LIVE_TEMPS
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|t| t.starts_with(d.path()))
                    .count(),
                1
            );
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(names(d.path()), ["x.csv"]);
        assert!(
            !LIVE_TEMPS
                .lock()
                .unwrap()
                .iter()
                .any(|t| t.starts_with(d.path()))
        );
    }

    #[test]
    fn concurrent_writers_last_wins_and_the_loser_of_the_race_is_told() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.jsonl");
        let mut a = AtomicWriter::create(&p).unwrap();
        let mut b = AtomicWriter::create(&p).unwrap();
        a.write_all(b"run a\n").unwrap();
        b.write_all(b"run b\n").unwrap();
        assert!(!b.commit().unwrap().raced);
        // `a` started before `b` created the file: it replaces it, and says so
        assert!(a.commit().unwrap().raced);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "run a\n");
        assert_eq!(names(d.path()), ["r.jsonl"]);
    }

    #[test]
    fn errors_name_the_users_path_not_the_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope/out.jsonl");
        let e = AtomicWriter::create(&missing).err().unwrap().to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        assert!(
            e.contains("does not exist") && !e.contains(".out.jsonl."),
            "{e}"
        );
        let e = AtomicWriter::create(d.path()).err().unwrap().to_string();
        assert!(e.contains("is a folder"), "{e}");
        let e = check_output("--jsonl", d.path(), &InputSet::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--jsonl") && e.contains("is a folder"), "{e}");
    }

    #[test]
    fn an_input_is_never_an_output() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.jpg");
        std::fs::write(&img, b"jpeg").unwrap();
        let link = d.path().join("b.jpg");
        std::fs::hard_link(&img, &link).unwrap();
        let inputs = InputSet::new([&img]);
        for out in [&img, &link, &d.path().join("./a.jpg")] {
            let e = check_output("--csv", out, &inputs).unwrap_err().to_string();
            assert!(e.contains("refusing to overwrite an input"), "{e}");
        }
        check_output("--csv", &d.path().join("c.csv"), &inputs).unwrap();
        assert_eq!(std::fs::read(&img).unwrap(), b"jpeg");
        assert_eq!(names(d.path()), ["a.jpg", "b.jpg"]);
    }
}
