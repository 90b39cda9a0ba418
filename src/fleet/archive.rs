//! Packing the parts of a tenant's Chromium profile that hold its WhatsApp login, and putting
//! them back: the profile's `Default/Local Storage` and `Default/IndexedDB` (what
//! whatsapp-web.js RemoteAuth keeps), so that a tenant moved to another node keeps its login.
//!
//! Owns the cheap change check (`fingerprint`: names, sizes and modification times, no
//! contents), the snapshot format (`pack`) and the restore (`restore`), which replaces those
//! two directories through a staging directory inside the profile and removes Chromium's
//! `Singleton*` locks. It does not decide when to snapshot or restore (the daemon does), and
//! it does not store snapshots (`store::session_snapshots` does).
//!
//! The format is a gzip stream of this plain sequence (integers big-endian):
//!
//! ```text
//! magic    "flowhq-profile-snapshot\x01"  (24 bytes)
//! entry*   kind u8 ('d' directory | 'f' file), path length u16, path (bytes, '/'-separated,
//!          relative to the profile), and for a file: length u64 then its bytes
//! end      'e'
//! ```
//!
//! A directory comes before anything inside it. The SHA-256 of the compressed bytes is the
//! snapshot's digest, checked before a restore reads anything. `pack` runs while Chromium may
//! be writing: a file or directory that vanishes during the walk is left out, LevelDB `LOCK`
//! files are left out, and symbolic links (and anything but plain files and directories) are
//! never followed nor packed. A copy taken while Chromium writes may end with a torn LevelDB
//! log record, which LevelDB drops when it opens the database.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// The profile's directories that hold the login, relative to the profile.
pub const LOGIN_PARTS: [&str; 2] = ["Default/Local Storage", "Default/IndexedDB"];

/// The directory of the login parts, which a restore creates or requires to be a directory.
const PARTS_PARENT: &str = "Default";

/// Chromium's lock files at the top of a profile; a restored profile must not keep them.
const SINGLETONS: [&str; 3] = ["SingletonLock", "SingletonSocket", "SingletonCookie"];

/// The directory inside the profile where a restore builds the new parts before moving them.
const STAGING: &str = ".flowhq-restore";

const MAGIC: &[u8; 24] = b"flowhq-profile-snapshot\x01";
const DIR: u8 = b'd';
const FILE: u8 = b'f';
const END: u8 = b'e';

/// Why packing or restoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file system operation on `path` failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done (`read`, `create directory`, ...).
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The snapshot's bytes do not have the digest recorded with them.
    #[error("snapshot digest is {actual}, expected {expected}: the snapshot is corrupt")]
    Digest {
        /// The digest recorded when the snapshot was taken.
        expected: String,
        /// The digest of the bytes given.
        actual: String,
    },
    /// The snapshot cannot be read (not gzip, truncated, not this format).
    #[error("read snapshot: {what}")]
    Format {
        /// What is wrong.
        what: String,
        /// The cause, when reading failed.
        #[source]
        source: Option<io::Error>,
    },
    /// An entry would be written outside the login parts of the profile.
    #[error("snapshot entry `{entry}` refused: {why}")]
    UnsafeEntry {
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A path in the profile is too long for the format (over 65,535 bytes).
    #[error("path `{}` is too long for a snapshot", path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
}

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// A packed snapshot of a profile's login parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The compressed snapshot.
    pub data: Vec<u8>,
    /// The total size of the files packed, uncompressed.
    pub raw_bytes: u64,
    /// How many files were packed.
    pub files: u32,
    /// The SHA-256 of `data`, lower-case hex.
    pub sha256: String,
    /// The fingerprint of the files as packed (see [`fingerprint`]); empty when none was.
    pub fingerprint: String,
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// How many files were written.
    pub files: u32,
    /// Their total size.
    pub raw_bytes: u64,
}

/// A cheap fingerprint of the login parts of `profile`: a digest of each file's relative path,
/// size and modification time, without reading any contents. `None` when the parts hold no
/// file. It changes when Chromium writes to the parts; the daemon snapshots periodically only
/// when it did.
pub fn fingerprint(profile: &Path) -> Result<Option<String>> {
    let mut print = Fingerprint::default();
    walk(profile, &mut |item| {
        if let Item::File { rel, meta, .. } = item {
            print.add(rel, meta);
        }
        Ok(())
    })?;
    Ok(print.finish())
}

/// Packs the login parts of `profile` (relative paths kept) into a compressed snapshot.
pub fn pack(profile: &Path) -> Result<Packed> {
    let mut out = Writer {
        z: GzEncoder::new(Vec::new(), Compression::fast()),
        raw_bytes: 0,
        files: 0,
    };
    let mut print = Fingerprint::default();
    let snapshot = Path::new("snapshot");
    out.write(MAGIC).map_err(io_err("write", snapshot))?;
    walk(profile, &mut |item| pack_item(&mut out, &mut print, item))?;
    out.z.write_all(&[END]).map_err(io_err("write", snapshot))?;
    let data = out.z.finish().map_err(io_err("compress", snapshot))?;
    let sha256 = hex::encode(Sha256::digest(&data));
    Ok(Packed {
        data,
        raw_bytes: out.raw_bytes,
        files: out.files,
        sha256,
        fingerprint: print.finish().unwrap_or_default(),
    })
}

/// Replaces the login parts of `profile` with the snapshot `data`, after checking that its
/// digest is `sha256`. The profile (created when missing) keeps mode 0700; its other files stay,
/// except Chromium's `Singleton*` locks, which are removed. Directories are written with mode
/// 0700 and files with 0600. The parts are built in a staging directory first and moved into
/// place only when the whole snapshot was read, so a failed restore leaves the profile as it
/// was.
pub fn restore(profile: &Path, data: &[u8], sha256: &str) -> Result<Restored> {
    let actual = hex::encode(Sha256::digest(data));
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(ArchiveError::Digest {
            expected: sha256.to_owned(),
            actual,
        });
    }
    make_dir(profile)?;
    // Checked before anything changes: a `Default` that is not a directory (a link, a file)
    // fails the restore here and leaves the profile as it was.
    make_dirs(profile, &profile.join(PARTS_PARENT))?;
    let staging = profile.join(STAGING);
    remove_any(&staging)?;
    make_dir(&staging)?;
    let unpacked = unpack(data, &staging);
    let restored = match unpacked {
        Ok(r) => r,
        Err(e) => {
            // The failure is the error worth reporting; a staging directory left behind is
            // removed by the next restore.
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    for part in LOGIN_PARTS {
        let target = profile.join(part);
        remove_any(&target)?;
        let staged = staging.join(part);
        if staged.symlink_metadata().is_ok() {
            if let Some(parent) = target.parent() {
                make_dirs(profile, parent)?;
            }
            fs::rename(&staged, &target).map_err(io_err("move into place", &target))?;
        }
    }
    remove_any(&staging)?;
    for name in SINGLETONS {
        remove_any(&profile.join(name))?;
    }
    Ok(restored)
}

/// Packs one item of the walk; a file that vanished since it was listed is left out.
fn pack_item(out: &mut Writer, print: &mut Fingerprint, item: Item<'_>) -> Result<()> {
    match item {
        Item::Dir { rel } => out.dir(rel),
        Item::File { path, rel, meta } => {
            // Opened after its metadata was read: a file written in between has a newer
            // modification time than the one fingerprinted, so the next check sees a change.
            let file = match File::open(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => other.map_err(io_err("open", path))?,
            };
            out.file(rel, path, file)?;
            print.add(rel, meta);
            Ok(())
        }
    }
}

/// One thing found in the login parts.
enum Item<'a> {
    Dir {
        rel: &'a Path,
    },
    File {
        path: &'a Path,
        rel: &'a Path,
        meta: &'a fs::Metadata,
    },
}

/// Calls `visit` for every directory (before its contents) and plain file of the login parts,
/// in name order. Vanished entries, `LOCK` files, symbolic links and special files are skipped.
fn walk(profile: &Path, visit: &mut dyn FnMut(Item<'_>) -> Result<()>) -> Result<()> {
    // The parts' parent is never followed either: a `Default` that is a link holds no parts.
    let default = profile.join(PARTS_PARENT);
    match default.symlink_metadata() {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", &default)(e)),
    }
    for part in LOGIN_PARTS {
        let path = profile.join(part);
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => walk_dir(profile, &path, visit)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
    }
    Ok(())
}

fn walk_dir(
    profile: &Path,
    dir: &Path,
    visit: &mut dyn FnMut(Item<'_>) -> Result<()>,
) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io_err("list", dir))?,
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("list", dir)(e)),
        }
    }
    names.sort();
    visit(Item::Dir {
        rel: relative(profile, dir),
    })?;
    for name in names {
        if name == OsStr::new("LOCK") {
            continue;
        }
        let path = dir.join(&name);
        let meta = match path.symlink_metadata() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other.map_err(io_err("inspect", &path))?,
        };
        if meta.is_dir() {
            walk_dir(profile, &path, visit)?;
        } else if meta.is_file() {
            visit(Item::File {
                path: &path,
                rel: relative(profile, &path),
                meta: &meta,
            })?;
        }
    }
    Ok(())
}

fn relative<'a>(profile: &Path, path: &'a Path) -> &'a Path {
    // INVARIANT: every walked path was built by joining onto `profile`.
    path.strip_prefix(profile).unwrap_or(path)
}

/// A running digest of (path, size, modification time) triples.
#[derive(Default)]
struct Fingerprint {
    hash: Sha256,
    files: u64,
}

impl Fingerprint {
    fn add(&mut self, rel: &Path, meta: &fs::Metadata) {
        let bytes = rel.as_os_str().as_bytes();
        self.hash.update((bytes.len() as u64).to_be_bytes());
        self.hash.update(bytes);
        self.hash.update(meta.len().to_be_bytes());
        self.hash.update(meta.mtime().to_be_bytes());
        self.hash.update(meta.mtime_nsec().to_be_bytes());
        self.files += 1;
    }

    fn finish(self) -> Option<String> {
        (self.files > 0).then(|| hex::encode(self.hash.finalize()))
    }
}

/// The compressing writer of `pack`, counting what it packed.
struct Writer {
    z: GzEncoder<Vec<u8>>,
    raw_bytes: u64,
    files: u32,
}

impl Writer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.z.write_all(bytes)
    }

    fn header(&mut self, kind: u8, rel: &Path) -> Result<()> {
        let bytes = rel.as_os_str().as_bytes();
        let len = u16::try_from(bytes.len()).map_err(|_| ArchiveError::PathTooLong {
            path: rel.to_owned(),
        })?;
        self.write(&[kind])
            .and_then(|()| self.write(&len.to_be_bytes()))
            .and_then(|()| self.write(bytes))
            .map_err(io_err("write", Path::new("snapshot")))
    }

    fn dir(&mut self, rel: &Path) -> Result<()> {
        self.header(DIR, rel)
    }

    /// Packs the open `file`. Its contents are read first, so that a file that shrinks or
    /// grows while read is packed as read, with its length right.
    fn file(&mut self, rel: &Path, path: &Path, mut file: File) -> Result<()> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
        self.header(FILE, rel)?;
        self.write(&(bytes.len() as u64).to_be_bytes())
            .and_then(|()| self.write(&bytes))
            .map_err(io_err("write", Path::new("snapshot")))?;
        self.raw_bytes += bytes.len() as u64;
        self.files = self.files.saturating_add(1);
        Ok(())
    }
}

/// Reads the snapshot `data` into the empty directory `staging`.
fn unpack(data: &[u8], staging: &Path) -> Result<Restored> {
    let mut r = BufReader::new(GzDecoder::new(data));
    let mut magic = [0u8; MAGIC.len()];
    read_exact(&mut r, &mut magic, "header")?;
    if &magic != MAGIC {
        return Err(format_err("not a profile snapshot (unknown header)"));
    }
    let mut restored = Restored {
        files: 0,
        raw_bytes: 0,
    };
    loop {
        let mut kind = [0u8; 1];
        read_exact(&mut r, &mut kind, "entry kind")?;
        match kind[0] {
            END => return Ok(restored),
            DIR => {
                let rel = read_path(&mut r)?;
                make_dirs(staging, &staging.join(rel))?;
            }
            FILE => {
                let rel = read_path(&mut r)?;
                let mut len = [0u8; 8];
                read_exact(&mut r, &mut len, "file length")?;
                let len = u64::from_be_bytes(len);
                write_file(&mut r, staging, &rel, len)?;
                restored.files = restored.files.saturating_add(1);
                restored.raw_bytes += len;
            }
            other => return Err(format_err(&format!("unknown entry kind {other:#04x}"))),
        }
    }
}

/// Reads an entry's path and checks that it lies inside one of the login parts.
fn read_path(r: &mut impl Read) -> Result<PathBuf> {
    let mut len = [0u8; 2];
    read_exact(r, &mut len, "path length")?;
    let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_exact(r, &mut bytes, "path")?;
    let rel = PathBuf::from(OsStr::from_bytes(&bytes));
    check_entry(&rel)?;
    Ok(rel)
}

/// Refuses a path that is absolute, has `..` (or `.`) in it, or is not inside a login part.
fn check_entry(rel: &Path) -> Result<()> {
    let refuse = |why| ArchiveError::UnsafeEntry {
        entry: String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned(),
        why,
    };
    if rel.is_absolute() {
        return Err(refuse("absolute path"));
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_)))
        || rel
            .as_os_str()
            .as_bytes()
            .split(|b| *b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err(refuse("`..`, `.` or an empty component"));
    }
    if !LOGIN_PARTS.iter().any(|part| rel.starts_with(part)) {
        return Err(refuse("outside the login parts of the profile"));
    }
    Ok(())
}

/// Writes one file of `len` bytes from `r` at `staging/rel`, mode 0600, never through an
/// existing file or link.
fn write_file(r: &mut impl Read, staging: &Path, rel: &Path, len: u64) -> Result<()> {
    if LOGIN_PARTS.iter().any(|part| rel == Path::new(part)) {
        return Err(ArchiveError::UnsafeEntry {
            entry: rel.display().to_string(),
            why: "a login part must be a directory",
        });
    }
    let path = staging.join(rel);
    if let Some(parent) = path.parent() {
        make_dirs(staging, parent)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("create", &path))?;
    let copied = io::copy(&mut r.take(len), &mut file).map_err(|e| ArchiveError::Format {
        what: format!("file `{}`", rel.display()),
        source: Some(e),
    })?;
    if copied != len {
        return Err(format_err(&format!(
            "file `{}` is cut short",
            rel.display()
        )));
    }
    Ok(())
}

/// Creates `dir` and its missing parents below `base` (which exists), each with mode 0700.
fn make_dirs(base: &Path, dir: &Path) -> Result<()> {
    let mut at = base.to_path_buf();
    for c in relative(base, dir).components() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(io_err("create directory", &at)(io::Error::from(
                    io::ErrorKind::AlreadyExists,
                )));
            }
            Err(_) => DirBuilder::new()
                .mode(0o700)
                .create(&at)
                .map_err(io_err("create directory", &at))?,
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents) when missing and sets its mode to 0700.
fn make_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("set mode of", dir))
}

/// Removes whatever is at `path` (a directory tree, a file or a link); nothing there is fine.
fn remove_any(path: &Path) -> Result<()> {
    let res = match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| ArchiveError::Format {
        what: format!("{what} (truncated or not gzip)"),
        source: Some(e),
    })
}

fn format_err(what: &str) -> ArchiveError {
    ArchiveError::Format {
        what: what.to_owned(),
        source: None,
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
