//! `FsStateStore`: the state contract on a local directory (the embedded default).
//!
//! Layout: key `a/b/c.json` is the file `<root>/a/b/c.json`, so the state dir mirrors the blob
//! container. Beside each document live two kinds of helper files whose names contain `~`, a
//! character `validate_key` never accepts, so they can never collide with a key and `list` skips
//! them:
//! - `<name>~lock`: the per-document lock file. It is never deleted: unlinking a lock file while
//!   another process waits on it would let two writers hold "the" lock at once.
//! - `<name>~lease`: the document's lease record (JSON, see `lease.rs`), read and written only
//!   under the document lock. Wall-clock timed.
//! - `<name>~tmp~<uuid>`: a write in progress. Only a lock holder creates one, so any temp file
//!   found while holding the lock (or at start-up, with the lock free) is a crashed write's
//!   leftover and is deleted.
//!
//! ETag: content-derived, `sha256-<hex of the bytes>`. Chosen over a version counter because it
//! needs no second file or header (a document stays plain JSON and is replaced by one atomic
//! rename). Consequence: writing identical bytes yields the same ETag. That is still safe for
//! optimistic concurrency — a stale writer can only win when the document holds exactly the bytes
//! it based its change on, which is the state it read.
//!
//! Atomicity: `create` and `replace` check and write while holding an exclusive
//! `std::fs::File::lock` on the document's lock file. Those are `flock`-style locks owned by the
//! open file description, so they exclude other tasks of this process (each operation opens its
//! own handle) and other processes (the local runtime and its `serve` child) alike. Reads take no
//! lock: a rename atomically swaps the whole file, so a reader sees the old or the new document.
//!
//! Crash safety: write temp file in the same directory, fsync it, rename over the document, fsync
//! the directory. New directories are fsynced into their parents too.

use super::lease::{self, LeaseAcquired, LeaseId, LeaseRecord};
use super::{validate_key, ETag, StateError, StateStore};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const LOCK_SUFFIX: &str = "~lock";
const LEASE_SUFFIX: &str = "~lease";
const TEMP_INFIX: &str = "~tmp~";

/// State store on a local directory. Cheap to clone; clones share the root.
#[derive(Debug, Clone)]
pub struct FsStateStore {
    root: Arc<PathBuf>,
}

enum Precondition {
    Absent,
    Matches(ETag),
    Leased(LeaseId),
}

/// A lease operation, applied to the lease record under the document lock.
enum LeaseOp {
    Acquire { duration_ms: i64, proposed: LeaseId },
    Renew(LeaseId),
    Release(LeaseId),
}

impl FsStateStore {
    /// Opens (creating if needed) the state directory at `root` and deletes leftovers of crashed
    /// writes whose document is not being written right now.
    pub fn new(root: PathBuf) -> Result<Self, StateError> {
        fs::create_dir_all(&root).map_err(|e| io_err("create state directory", &root, e))?;
        let meta = fs::metadata(&root).map_err(|e| io_err("inspect state directory", &root, e))?;
        if !meta.is_dir() {
            return Err(StateError::Unavailable(format!(
                "state root {} is not a directory",
                root.display()
            )));
        }
        sweep_leftover_temps(&root)?;
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn doc_path(&self, key: &str) -> PathBuf {
        // validate_key has ruled out absolute paths, `..`, `.`, empty segments and separators
        // other than `/`, so joining segments cannot leave the root.
        let mut path = self.root.as_ref().clone();
        for seg in key.split('/') {
            path.push(seg);
        }
        path
    }

    async fn write(&self, key: &str, body: &[u8], pre: Precondition) -> Result<ETag, StateError> {
        validate_key(key)?;
        let root = Arc::clone(&self.root);
        let path = self.doc_path(key);
        let key = key.to_string();
        let body = body.to_vec();
        blocking(move || write_locked(&root, &key, &path, &body, pre)).await
    }

    async fn lease_op(&self, key: &str, op: LeaseOp) -> Result<Option<LeaseAcquired>, StateError> {
        validate_key(key)?;
        let root = Arc::clone(&self.root);
        let path = self.doc_path(key);
        let key = key.to_string();
        blocking(move || lease_locked(&root, &key, &path, op)).await
    }
}

#[async_trait]
impl StateStore for FsStateStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        validate_key(key)?;
        let path = self.doc_path(key);
        blocking(move || read_doc(&path)).await
    }

    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        self.write(key, body, Precondition::Absent).await
    }

    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        self.write(key, body, Precondition::Matches(etag.clone()))
            .await
    }

    async fn acquire_lease(
        &self,
        key: &str,
        duration: std::time::Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        let duration_ms = lease::check_duration(key, duration)?;
        let op = LeaseOp::Acquire {
            duration_ms,
            proposed: proposed.clone(),
        };
        self.lease_op(key, op).await?.ok_or_else(|| {
            StateError::Unavailable(format!("lease acquire on {key} returned no lease"))
        })
    }

    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.lease_op(key, LeaseOp::Renew(lease.clone()))
            .await
            .map(drop)
    }

    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.lease_op(key, LeaseOp::Release(lease.clone()))
            .await
            .map(drop)
    }

    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        self.write(key, body, Precondition::Leased(lease.clone()))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        validate_prefix(prefix)?;
        let root = Arc::clone(&self.root);
        let prefix = prefix.to_string();
        blocking(move || {
            let (dir_key, base) = match prefix.rfind('/') {
                Some(i) => (prefix[..i].to_string(), {
                    let mut p = root.as_ref().clone();
                    p.extend(prefix[..i].split('/'));
                    p
                }),
                None => (String::new(), root.as_ref().clone()),
            };
            let mut keys = Vec::new();
            walk(&base, &dir_key, &prefix, &mut keys)?;
            keys.sort();
            Ok(keys)
        })
        .await
    }
}

/// Checks a `list` prefix: empty (everything), or a valid key optionally followed by one `/`.
/// Shared with the blob, memory and S3 stores so all reject the same prefixes.
pub fn validate_prefix(prefix: &str) -> Result<(), StateError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let stem = prefix.strip_suffix('/').unwrap_or(prefix);
    validate_key(stem).map_err(|_| StateError::InvalidKey {
        key: prefix.to_string(),
        rule: "a list prefix must be empty or a valid key, optionally ending in one '/'",
    })
}

pub(crate) fn etag_of(body: &[u8]) -> ETag {
    ETag(format!("sha256-{}", hex::encode(Sha256::digest(body))))
}

async fn blocking<T, F>(f: F) -> Result<T, StateError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StateError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateError::Unavailable(format!("state file task failed: {e}")))?
}

fn io_err(op: &str, path: &Path, e: io::Error) -> StateError {
    StateError::Unavailable(format!("{op} {}: {e}", path.display()))
}

fn read_doc(path: &Path) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
    match fs::read(path) {
        Ok(bytes) => {
            let etag = etag_of(&bytes);
            Ok(Some((bytes, etag)))
        }
        // A folder of other documents, or a parent that is a document: no document at this key,
        // exactly as blob storage answers 404 for such names.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_err("read state document", path, e)),
    }
}

fn file_name(path: &Path) -> Result<&str, StateError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StateError::Unavailable(format!("bad state path {}", path.display())))
}

/// Creates the document's folder and takes its exclusive lock; returns the lock (held until
/// dropped), the folder and the document's file name.
fn lock_document<'p>(
    root: &Path,
    key: &str,
    path: &'p Path,
) -> Result<(File, &'p Path, &'p str), StateError> {
    let dir = path
        .parent()
        .ok_or_else(|| StateError::Unavailable(format!("bad state path {}", path.display())))?;
    let name = file_name(path)?;
    create_dirs_durably(root, dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => StateError::InvalidKey {
            key: key.to_string(),
            rule: "a parent folder of the key is already a document (file store limitation)",
        },
        _ => io_err("create state folder", dir, e),
    })?;

    let lock_path = dir.join(format!("{name}{LOCK_SUFFIX}"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err("open lock file", &lock_path, e))?;
    lock.lock()
        .map_err(|e| io_err("lock state document", &lock_path, e))?;
    if path.is_dir() {
        return Err(StateError::InvalidKey {
            key: key.to_string(),
            rule: "the key is already a folder of other documents (file store limitation)",
        });
    }
    Ok((lock, dir, name))
}

fn lease_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{LEASE_SUFFIX}"))
}

/// The lease record of a document; call with the document lock held.
fn read_lease(dir: &Path, name: &str) -> Result<Option<LeaseRecord>, StateError> {
    let path = lease_path(dir, name);
    match fs::read(&path) {
        // An unreadable record is treated as no lease rather than blocking the document forever.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read lease record", &path, e)),
    }
}

/// Writes a lease record (temp + rename); call with the document lock held.
fn write_lease(dir: &Path, name: &str, rec: &LeaseRecord) -> Result<(), StateError> {
    let path = lease_path(dir, name);
    let bytes = serde_json::to_vec(rec).map_err(|e| {
        StateError::Unavailable(format!("encode lease record {}: {e}", path.display()))
    })?;
    let temp_path = dir.join(format!(
        "{name}{TEMP_INFIX}lease-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let written = write_temp(&temp_path, &bytes).and_then(|()| fs::rename(&temp_path, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp_path);
        return Err(io_err("write lease record", &path, e));
    }
    Ok(())
}

fn lease_locked(
    root: &Path,
    key: &str,
    path: &Path,
    op: LeaseOp,
) -> Result<Option<LeaseAcquired>, StateError> {
    let (lock, dir, name) = lock_document(root, key, path)?;
    if read_doc(path)?.is_none() {
        return Err(StateError::Missing {
            key: key.to_string(),
        });
    }
    let current = read_lease(dir, name)?;
    let now = lease::now_ms();
    let (next, acquired) = match op {
        LeaseOp::Acquire {
            duration_ms,
            proposed,
        } => {
            let (rec, got) = lease::acquire(key, current.as_ref(), duration_ms, &proposed, now)?;
            (rec, Some(got))
        }
        LeaseOp::Renew(id) => (lease::renew(key, current.as_ref(), &id, now)?, None),
        LeaseOp::Release(id) => (lease::release(key, current.as_ref(), &id)?, None),
    };
    write_lease(dir, name, &next)?;
    drop(lock);
    Ok(acquired)
}

fn write_locked(
    root: &Path,
    key: &str,
    path: &Path,
    body: &[u8],
    pre: Precondition,
) -> Result<ETag, StateError> {
    let (lock, dir, name) = lock_document(root, key, path)?;

    // Holding the lock, any temp file of this document belongs to a writer that died.
    remove_temps_of(dir, name)?;

    let current = read_doc(path)?;
    let lease_rec = read_lease(dir, name)?;
    let now = lease::now_ms();
    if let Precondition::Leased(id) = &pre {
        lease::check_leased_write(key, lease_rec.as_ref(), id, now)?;
    } else if lease::blocks_plain_writes(lease_rec.as_ref(), now) {
        return Err(StateError::Conflict {
            key: key.to_string(),
        });
    }
    let allowed = match (&pre, &current) {
        (Precondition::Absent, None) => true,
        (Precondition::Matches(want), Some((_, have))) => want == have,
        (Precondition::Leased(_), Some(_)) => true,
        _ => false,
    };
    if !allowed {
        return Err(StateError::Conflict {
            key: key.to_string(),
        });
    }

    let temp_path = dir.join(format!(
        "{name}{TEMP_INFIX}{}",
        uuid::Uuid::new_v4().simple()
    ));
    let written = write_temp(&temp_path, body)
        .and_then(|()| fs::rename(&temp_path, path))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        // Best effort: if this fails too, the next writer or start-up sweep removes it.
        let _ = fs::remove_file(&temp_path);
        return Err(io_err("write state document", path, e));
    }
    drop(lock);
    Ok(etag_of(body))
}

fn write_temp(temp_path: &Path, body: &[u8]) -> io::Result<()> {
    let mut f = File::create_new(temp_path)?;
    f.write_all(body)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all` that also fsyncs each parent of a directory it creates, so a document renamed
/// into a new folder survives a power loss together with the folder entry.
fn create_dirs_durably(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.is_dir() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) if p.starts_with(root) => cur = p,
            _ => break,
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Another writer created it concurrently.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn remove_temps_of(dir: &Path, name: &str) -> Result<(), StateError> {
    let prefix = format!("{name}{TEMP_INFIX}");
    let entries = fs::read_dir(dir).map_err(|e| io_err("scan state folder", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("scan state folder", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let p = entry.path();
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove leftover temp file", &p, e)),
            }
        }
    }
    Ok(())
}

/// Start-up sweep: removes temp files whose document lock is free (so no live writer owns them).
fn sweep_leftover_temps(dir: &Path) -> Result<(), StateError> {
    let entries = fs::read_dir(dir).map_err(|e| io_err("scan state folder", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("scan state folder", dir, e))?;
        let ft = entry
            .file_type()
            .map_err(|e| io_err("scan state folder", &entry.path(), e))?;
        if ft.is_dir() {
            sweep_leftover_temps(&entry.path())?;
            continue;
        }
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        let Some((doc, _)) = n.split_once(TEMP_INFIX) else {
            continue;
        };
        let lock_path = dir.join(format!("{doc}{LOCK_SUFFIX}"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("open lock file", &lock_path, e))?;
        // A held lock means a writer is live and its temp file is not a leftover.
        if lock.try_lock().is_ok() {
            let p = entry.path();
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove leftover temp file", &p, e)),
            }
        }
    }
    Ok(())
}

/// Collects document keys under `dir` (whose key path is `dir_key`) that start with `prefix`.
fn walk(dir: &Path, dir_key: &str, prefix: &str, out: &mut Vec<String>) -> Result<(), StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(io_err("list state folder", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list state folder", dir, e))?;
        let file_name = entry.file_name();
        // Lock and temp files (`~`) and anything else that is not a valid key segment are not
        // documents.
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if validate_key(n).is_err() {
            continue;
        }
        let key = if dir_key.is_empty() {
            n.to_string()
        } else {
            format!("{dir_key}/{n}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| io_err("list state folder", &entry.path(), e))?;
        if ft.is_dir() {
            let folder = format!("{key}/");
            if folder.starts_with(prefix) || prefix.starts_with(&folder) {
                walk(&entry.path(), &key, prefix, out)?;
            }
        } else if ft.is_file() && key.starts_with(prefix) {
            out.push(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FsStateStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStateStore::new(dir.path().to_path_buf()).expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn documents_are_plain_files_mirroring_the_key() {
        let (dir, s) = store();
        s.create("vms/sub/rg/vm.json", b"{}").await.expect("create");
        let on_disk = fs::read(dir.path().join("vms/sub/rg/vm.json")).expect("read file");
        assert_eq!(on_disk, b"{}");
        assert!(dir.path().join("vms/sub/rg/vm.json~lock").exists());
    }

    #[tokio::test]
    async fn etag_is_content_derived() {
        let (_dir, s) = store();
        let e1 = s.create("a.json", b"one").await.expect("create");
        assert_eq!(e1, etag_of(b"one"));
        let e2 = s.replace("a.json", b"two", &e1).await.expect("replace");
        assert_eq!(e2, etag_of(b"two"));
        assert_ne!(e1, e2);
    }

    #[tokio::test]
    async fn key_and_folder_cannot_share_a_name() {
        let (_dir, s) = store();
        s.create("a/b.json", b"1").await.expect("create");
        let err = s.create("a", b"1").await.expect_err("a is a folder");
        assert!(matches!(err, StateError::InvalidKey { .. }), "{err:?}");
        assert!(s.get("a").await.expect("get").is_none());
        let err = s
            .create("a/b.json/c", b"1")
            .await
            .expect_err("parent is a doc");
        assert!(matches!(err, StateError::InvalidKey { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn replace_of_missing_document_is_conflict() {
        let (_dir, s) = store();
        let err = s
            .replace("x.json", b"1", &etag_of(b"0"))
            .await
            .expect_err("missing");
        assert!(matches!(err, StateError::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn prefixes() {
        for ok in ["", "runs/", "runs/sw", "runs/sweep/current.json"] {
            assert!(validate_prefix(ok).is_ok(), "{ok:?}");
        }
        for bad in ["/", "runs//", "../", "a/../", "a~"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_must_be_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        let err = FsStateStore::new(file).expect_err("file root");
        assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    }
}
